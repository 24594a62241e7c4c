"""Judges of findings F13-F18: Adversarial examples (notebook 04).

Transitional: these are register v1's rules, returning supported / not supported
without a margin; issue #20 replaces them with register v2's judges (margins,
power checks, baselines).
"""
from __future__ import annotations

from ..findings import Finding, v1_judge, num as _num


def _f13(e):
    m, n = e["median"], _num(e["n_pixels"])
    l0_jsma, l0_pgd = _num(m["jsma"]["l0"]), _num(m["pgd_linf"]["l0"])
    li_pgd, li_jsma = _num(m["pgd_linf"]["linf"]), _num(m["jsma"]["linf"])
    ok = l0_jsma < 0.1 * n < l0_pgd and li_pgd < li_jsma
    return ok, {"L0 JSMA": l0_jsma, "10% of pixels": 0.1 * n, "L0 PGD": l0_pgd,
                "Linf PGD": li_pgd, "Linf JSMA": li_jsma}


def _f14(e):
    eps, pgd, fgsm = e["eps"], e["success"]["pgd_linf"], e["success"]["fgsm"]
    idx = [i for i, s in enumerate(pgd) if _num(s) >= 0.9]
    l2 = {k: _num(v) for k, v in e["median_l2"].items()}
    cw_smallest = l2["cw_l2"] <= min(l2.values())
    if not idx:
        return False, {"PGD never reaches 90% on the grid": max(pgd), "median L2": l2}
    i = idx[0]
    gap = _num(pgd[i]) - _num(fgsm[i])
    return gap >= 0.20 and cw_smallest, {"eps": eps[i], "PGD success": pgd[i], "FGSM success": fgsm[i],
                                         "median L2": l2}


def _f15(e):
    score, decision = e["median_queries"]["score"], e["median_queries"]["decision"]
    s = min(_num(v) for v in score.values())
    d = min(_num(v) for v in decision.values())
    return s <= d / 5, {"best score-based median queries": s, "best decision-based": d, "ratio": round(d / s, 2)}


def _f16(e):
    u, t = _num(e["untargeted_at_0.3"]), _num(e["targeted_at_0.3"])
    return u >= 0.30 and u > t, {"untargeted transfer @0.3": u, "targeted transfer @0.3": t}


def _f17(e):
    eot, plain = _num(e["success_eot"]), _num(e["success_plain"])
    return eot >= plain + 0.30, {"EOT success": eot, "plain PGD success": plain}


def _f18(e):
    at, und = _num(e["robust_at"]), _num(e["robust_undefended"])
    plain, adapt = _num(e["masked_plain_robust"]), _num(e["masked_adaptive_robust"])
    ok = at >= 0.60 and at >= und + 0.50 and plain - adapt >= 0.30
    return ok, {"robust acc AT": at, "robust acc undefended": und,
                "masked: plain PGD": plain, "masked: adaptive": adapt}


FINDINGS: tuple[Finding, ...] = (
    Finding("F13", "adversarial",
       "What counts as a small perturbation depends on the distance: L-inf attacks change every pixel a little, L0 attacks a few pixels a lot.",
       "median L0(JSMA) < 10% of pixels < median L0(PGD), and median L-inf(PGD) < median L-inf(JSMA)",
       "04_norms", v1_judge(_f13)),
    Finding("F14", "adversarial",
       "Iterating buys success at a fixed budget (PGD over FGSM), and optimisation (C&W) finds the smallest L2 perturbations.",
       "at the smallest eps where PGD succeeds on >= 90%, FGSM succeeds on >= 20 points less; median L2(C&W) smallest of the L2 attacks",
       "04_success_vs_eps", v1_judge(_f14)),
    Finding("F15", "adversarial",
       "Black-box attacks pay in queries, and label-only (decision-based) attacks pay far more than score-based ones.",
       "best score-based median queries <= 1/5 of the best decision-based at matched success", "04_queries", v1_judge(_f15)),
    Finding("F16", "adversarial",
       "Adversarial examples transfer between architectures; targeted ones much less.",
       "untargeted transfer >= 30% at eps 0.3 and above targeted transfer", "04_transfer", v1_judge(_f16)),
    Finding("F17", "adversarial",
       "Surviving physical transformations needs optimising over them (expectation over transformation).",
       "success(EOT) >= success(plain PGD) + 30 points under sampled transformations", "04_eot", v1_judge(_f17)),
    Finding("F18", "adversarial",
       "Real robustness (adversarial training) costs accuracy and compute; gradient masking only looks robust.",
       "robust(AT) >= 60% and >= undefended + 50 points; masked defense: plain PGD robust accuracy >= adaptive + 30 points",
       "04_defenses", v1_judge(_f18)),
)
