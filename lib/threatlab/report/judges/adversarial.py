"""Judges of findings F13-F18: adversarial examples (notebook 04), register v2.

Each judge is a pure function of the evidence notebook 04 records with
`rec.evidence("F1x", {...})`; it returns a `Verdict` whose margin is > 0 exactly when
the claim holds in that run (the minimum over the claim's conditions, each scaled so
that 0 is its bar: `log_ratio_margin` for "k x" and "smaller than" bars,
`diff_margin` for point bars on fractions). The rules are register v2's
(FINDINGS.md), fixed before any run.
"""
from __future__ import annotations

import math
from typing import Any

from ..findings import INCONCLUSIVE, Finding, Verdict, diff_margin, judged, log_ratio_margin, num, power_check

# Stand-in margins of F15 for levels only one side reaches (see _f15).
_F15_FLOOR = 0.01


def _positive(name: str, value: Any) -> float:
    v = num(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={v} must be a positive finite number (a median of a successful attack)")
    return v


def _f13(e: dict[str, Any]) -> Verdict:
    """JSMA has the smallest median L0 and not the smallest median L-inf; the minimal
    L-inf attack has the smallest median L-inf and not the smallest median L0.

    "Smallest" margins are log(runner-up / it) (> 0: strictly smallest); "not the
    smallest" margins are log(it / the smallest of the others) (> 0: some other attack
    is strictly smaller).
    """
    med = e["median"]
    l0_name, linf_name = e.get("l0_attack", "jsma"), e.get("minimal_linf", "min_linf")
    if l0_name not in med or linf_name not in med or len(med) < 3:
        raise KeyError(f"median must hold {l0_name!r}, {linf_name!r} and at least one L2 attack")
    l0 = {k: _positive(f"median L0 of {k}", v["l0"]) for k, v in med.items()}
    linf = {k: _positive(f"median L-inf of {k}", v["linf"]) for k, v in med.items()}

    def others(d, name):
        return min(v for k, v in d.items() if k != name)

    margins = {
        f"{l0_name} smallest L0": log_ratio_margin(others(l0, l0_name), l0[l0_name]),
        f"{l0_name} not smallest L-inf": log_ratio_margin(linf[l0_name], others(linf, l0_name)),
        f"{linf_name} smallest L-inf": log_ratio_margin(others(linf, linf_name), linf[linf_name]),
        f"{linf_name} not smallest L0": log_ratio_margin(l0[linf_name], others(l0, linf_name)),
    }
    numbers = {"median L0": l0, "median L-inf": linf,
               "median L2": {k: num(v["l2"]) for k, v in med.items()},
               "matched examples": e.get("n_common"), "examples": e.get("n"),
               "JSMA hit pixel cap": e.get("jsma_hit_cap"), "JSMA cap (pixels)": e.get("jsma_cap")}
    return judged(margins, numbers, note="medians over the examples every minimal attack fooled")


def _f14(e: dict[str, Any]) -> Verdict:
    """At the smallest eps of the grid where PGD succeeds on >= 90 %, FGSM succeeds on
    >= 20 points less; median L2(C&W) < median L2(DeepFool) and C&W's time per example
    > DeepFool's. Power check: PGD reaches 90 % somewhere on the grid (otherwise the
    first condition has no eps to be read at).

    "Time" is measured as model passes per example (forward + backward rows,
    `protocols.evasion.PassCounter`): deterministic, so the results file is the same
    bytes run to run (DESIGN: determinism); wall seconds are kept beside it for show."""
    eps, pgd, fgsm = e["eps"], e["success"]["pgd_linf"], e["success"]["fgsm"]
    if not (len(eps) == len(pgd) == len(fgsm)) or not eps:
        raise ValueError("eps, success['pgd_linf'] and success['fgsm'] must be equally long and non-empty")
    order = sorted(range(len(eps)), key=lambda i: num(eps[i]))
    hit = [i for i in order if num(pgd[i]) >= 0.9]
    l2 = {k: _positive(f"median L2 of {k}", e["median_l2"][k]) for k in ("cw_l2", "deepfool")}
    cost = {k: _positive(f"model passes per example of {k}", e["passes_per_example"][k]) for k in ("cw_l2", "deepfool")}
    # Without an eps where PGD reaches 90 %, read the gap at the largest eps (where
    # PGD is strongest) and mark the run inconclusive.
    i = hit[0] if hit else order[-1]
    gap = num(pgd[i]) - num(fgsm[i])
    margins = {"PGD - FGSM >= 20 points": diff_margin(gap, 0.20),
               "L2 C&W < DeepFool": log_ratio_margin(l2["deepfool"], l2["cw_l2"]),
               "cost C&W > DeepFool": log_ratio_margin(cost["cw_l2"], cost["deepfool"])}
    numbers = {"eps": num(eps[i]), "PGD success": num(pgd[i]), "FGSM success": num(fgsm[i]),
               "median L2": l2, "model passes per example": cost}
    checks = [power_check("PGD reaches 90 % on the eps grid", max(num(p) for p in pgd), bool(hit))]
    return judged(margins, numbers, checks=checks)


def _f15(e: dict[str, Any]) -> Verdict:
    """At every success level both reach, queries(best decision-based) >= 5 x
    queries(best score-based): margin log(q_d / q_s / 5).

    A level only the score-based attacks reach counts as supporting, one only the
    decision-based attacks reach counts against, one neither reaches is skipped
    (inconclusive if all are). For a one-sided level the side that never got there is
    given the rule's stand-in, twice its budget, and the log-ratio margin is kept with
    its sign forced to what the register says (at least +0.01 for a score-only level,
    at most -0.01 for a decision-only one): the stand-in only says how far beyond the
    budget the answer lies at least.
    """
    levels = e["levels"]
    best_s, best_d = e["best"]["score"], e["best"]["decision"]
    if not (len(levels) == len(best_s) == len(best_d)) or not levels:
        raise ValueError("levels, best['score'] and best['decision'] must be equally long and non-empty")
    b_s, b_d = _positive("score budget", e["budget"]["score"]), _positive("decision budget", e["budget"]["decision"])
    margins: dict[str, float] = {}
    outcome = {}
    for p, qs, qd in zip(levels, best_s, best_d):
        key = f"{round(100 * num(p))}%"
        if qs is None and qd is None:
            outcome[key] = "neither reached"
            continue
        if qs is not None and qd is not None:
            margins[key] = log_ratio_margin(_positive("queries", qd) / _positive("queries", qs), 5.0)
            outcome[key] = f"decision/score = {num(qd) / num(qs):.3g}"
        elif qd is None:
            m = log_ratio_margin(2 * b_d / _positive("queries", qs), 5.0)
            margins[key] = max(m, _F15_FLOOR)
            outcome[key] = "score-based only (supports)"
        else:
            m = log_ratio_margin(_positive("queries", qd) / (2 * b_s), 5.0)
            margins[key] = min(m, -_F15_FLOOR)
            outcome[key] = "decision-based only (against)"
    numbers = {"levels": list(levels), "best score-based queries": list(best_s),
               "best decision-based queries": list(best_d), "per level": outcome,
               "budgets": {"score": b_s, "decision": b_d}}
    checks = [power_check("decision-based budget >= 10^4 queries", b_d, b_d >= 10_000),
              power_check("levels reached by either side", len(margins), bool(margins))]
    if not margins:  # every level skipped: no margin to report, the run is inconclusive
        return Verdict(INCONCLUSIVE, None, {}, numbers, tuple(checks), "no success level reached by either side")
    return judged(margins, numbers, checks=checks)


def _f16(e: dict[str, Any]) -> Verdict:
    """Untargeted transfer >= 30 % at eps 0.3 and above targeted transfer."""
    u, t = num(e["untargeted_at_0.3"]), num(e["targeted_at_0.3"])
    return judged({"untargeted >= 30 %": diff_margin(u, 0.30), "untargeted > targeted": diff_margin(u - t, 0.0)},
                  {"untargeted transfer @0.3": u, "targeted transfer @0.3": t})


def _f17(e: dict[str, Any]) -> Verdict:
    """The fraction of examples fooling the model in >= 90 % of fresh draws is, for
    EOT, >= plain PGD's + 20 points (same margin loss, steps and budget). Baseline: the
    same fraction for clean images. Power check: the model's clean accuracy under the
    transformation distribution is >= 95 % (register v2: a distribution it handles)."""
    f = e["fooled_in_90pct"]
    eot, plain, clean = num(f["eot"]), num(f["plain"]), num(f["clean"])
    acc = num(e["clean_accuracy_under_transform"])
    return judged({"EOT - plain >= 20 points": diff_margin(eot - plain, 0.20)},
                  {"EOT fooled in >= 90 % of draws": eot, "plain PGD fooled in >= 90 % of draws": plain,
                   "clean fooled in >= 90 % of draws": clean, "clean accuracy under transformations": acc},
                  checks=[power_check("clean accuracy under the transformations >= 95 %", acc, acc >= 0.95)])


def _f18(e: dict[str, Any]) -> Verdict:
    """robust(AT) >= robust(undefended) + 50 points at the training eps; clean(AT) <
    clean(undefended); AT training time >= 3 x standard training (same recipe);
    quantization: plain-PGD robust accuracy >= its BPDA robust accuracy + 30 points.
    Power check: clean(AT) >= 95 % (a weaker model is too weak to judge anything).
    Training time is measured in model passes (forward + backward rows of both the
    attack and the update), deterministic like every number the judges read."""
    r_at, r_und = num(e["robust_at"]), num(e["robust_undefended"])
    c_at, c_und = num(e["clean_at"]), num(e["clean_undefended"])
    t_at = _positive("AT training passes", e["train_passes_at"])
    t_std = _positive("standard training passes", e["train_passes_standard"])
    plain, bpda = num(e["masked_plain_robust"]), num(e["masked_adaptive_robust"])
    margins = {"robust AT - undefended >= 50 points": diff_margin(r_at - r_und, 0.50),
               "clean AT < undefended": diff_margin(c_und - c_at, 0.0),
               "AT time >= 3 x standard": log_ratio_margin(t_at / t_std, 3.0),
               "quantization: plain - BPDA >= 30 points": diff_margin(plain - bpda, 0.30)}
    numbers = {"robust AT (PGD)": r_at, "robust undefended (PGD)": r_und, "clean AT": c_at,
               "clean undefended": c_und, "AT / standard training cost (model passes)": t_at / t_std,
               "quantized: plain PGD": plain, "quantized: BPDA": bpda,
               "worst-case AT (AutoAttack-style)": e.get("worst_case_at"),
               "worst-case undefended": e.get("worst_case_undefended"),
               "optimiser steps": e.get("optimizer_steps"), "method": e.get("method")}
    return judged(margins, numbers, checks=[power_check("clean accuracy of the AT model >= 95 %", c_at, c_at >= 0.95)])


FINDINGS: tuple[Finding, ...] = (
    Finding("F13", "adversarial",
            "The distance decides what 'small' means: ranking attacks by one norm reverses under another.",
            "minimal-perturbation attacks only (JSMA, C&W-L2, DeepFool, minimal L-inf), medians over the examples "
            "all fooled: JSMA has the smallest median L0 and not the smallest median L-inf, and the minimal L-inf "
            "attack has the smallest median L-inf and not the smallest median L0",
            "04_norms", _f13),
    Finding("F14", "adversarial",
            "Iteration buys success; optimisation finds the smallest L2 at the highest cost.",
            "at the smallest eps where PGD succeeds on >= 90 %, FGSM succeeds on >= 20 points less; "
            "median L2(C&W) < median L2(DeepFool) and C&W's time per example > DeepFool's",
            "04_success_vs_eps", _f14),
    Finding("F15", "adversarial",
            "Black-box attacks pay in queries, label-only ones far more.",
            "at 10/25/50 % success within the L2 ball, queries(best decision-based) >= 5 x queries(best score-based) "
            "at every level both reach; score-only levels support, decision-only levels count against, "
            "neither: skipped; decision budgets >= 10^4",
            "04_queries", _f15),
    Finding("F16", "adversarial",
            "Adversarial examples transfer between architectures; targeted ones much less.",
            "untargeted transfer >= 30 % at eps 0.3 and above targeted transfer", "04_transfer", _f16),
    Finding("F17", "adversarial",
            "Surviving transformations needs optimising over them (expectation over transformation).",
            "fraction fooled in >= 90 % of fresh draws: EOT >= plain PGD + 20 points (same margin loss, steps, "
            "budget); clean accuracy under the distribution >= 95 % (else inconclusive); baseline: clean images",
            "04_eot", _f17, baselines=("clean fooled in >= 90 % of draws",)),
    Finding("F18", "adversarial",
            "Robustness costs accuracy and compute; masking is not robustness.",
            "robust(AT) >= robust(undefended) + 50 points at the training eps; clean(AT) < clean(undefended); "
            "AT training time >= 3 x standard; quantization: plain-PGD robust >= BPDA robust + 30 points; "
            "inconclusive when clean(AT) < 95 %",
            "04_defenses", _f18, baselines=("robust undefended (PGD)",)),
)
