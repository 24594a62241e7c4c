"""Judges of findings F01-F04: Model extraction (notebook 01).

Transitional: these are register v1's rules, returning supported / not supported
without a margin; issue #17 replaces them with register v2's judges (margins,
power checks, baselines).
"""
from __future__ import annotations

from ..findings import Finding, v1_judge, num as _num


def _f01(e):
    lr_ok = _num(e["lr_agreement"]) >= 0.999 and _num(e["lr_queries"]) <= _num(e["lr_d"]) + 1
    gap = _num(e["mlp_substitute_agreement"]) - _num(e["mlp_solver_agreement"])
    return lr_ok and gap >= 0.10, {"LR agreement": e["lr_agreement"], "LR queries": e["lr_queries"],
                                   "d+1": _num(e["lr_d"]) + 1, "MLP substitute - solver": round(gap, 4)}


def _f02(e):
    p, l = _num(e["agreement"]["probs"][-1]), _num(e["agreement"]["label"][-1])
    return p > l, {"budget": e["budgets"][-1], "agreement probs": p, "agreement label": l,
                   "agreement rounded": e["agreement"].get("rounded", [None])[-1]}


def _f03(e):
    q = e["queries_to_target"]
    noise = q.get("noise")
    informed = {k: v for k, v in q.items() if k != "noise" and v is not None}
    if not informed:
        return False, {"queries to target": q}
    best_name = min(informed, key=informed.get)
    best = _num(informed[best_name])
    ok = noise is None or best <= 0.5 * _num(noise)
    return ok, {"best strategy": best_name, "its queries": best, "noise queries": noise}


def _f04(e):
    best, noise = max(_num(v) for v in e["transfer_success"]), _num(e["noise_success"])
    return best >= 3 * noise and best >= 0.30, {"best transfer success": best, "noise success": noise}


FINDINGS: tuple[Finding, ...] = (
    Finding("F01", "extraction",
       "Solving equations from confidence scores copies a model exactly when it is linear in its logits, and fails once a hidden non-linear layer is added.",
       "LR agreement >= 99.9% with <= d+1 queries; MLP: solver at least 10 points below a substitute trained on as many queries",
       "01_equation_solving", v1_judge(_f01)),
    Finding("F02", "extraction",
       "The more an API reveals per answer, the fewer queries a copy needs: probabilities beat labels at equal budget.",
       "at the largest common budget, agreement(probs) > agreement(label)", "01_agreement_vs_queries", v1_judge(_f02)),
    Finding("F03", "extraction",
       "Choosing queries well (Jacobian augmentation, natural out-of-distribution images, active selection) beats asking more random ones.",
       "best informed strategy reaches 80% agreement with <= 1/2 the queries of noise (or noise never does)",
       "01_query_strategies", v1_judge(_f03)),
    Finding("F04", "extraction",
       "A stolen copy is a stepping stone: adversarial examples made white-box on it transfer to the black-box victim.",
       "best transfer success >= 3 x the equal-norm noise baseline and >= 30%", "01_transfer_from_substitute", v1_judge(_f04)),
)
