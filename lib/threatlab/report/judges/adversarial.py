"""Judges of findings F13-F18: adversarial examples (notebook 04), on the machinery of
`report.verdicts` (the findings' testable rules, applied to the evidence notebook 04 records).

Each judge is a pure function of the evidence notebook 04 records with
`rec.evidence("F1x", {...})`. Every condition is in its own unit and declares its reach
(G0). Where the rules fix eps per data set (G2: 0.3 on MNIST, 0.1 on Fashion-MNIST) and the
evidence holds a grid, the judge reads the grid at that eps (F14, F16); it needs the
data set, which the sweep adds from the point when the notebook did not record it.
G1's accuracy check is applied where the evidence records the model's architecture
("architecture") and clean accuracy, as notebook 04 does.
"""
from __future__ import annotations

import math
from typing import Any

from ..verdicts import (RATE, Condition, Finding, Verdict, identity_check, judged, minus_reach, multiple_reach, num,
                        power_check, victim_checks)

#: G2: "the" L-inf eps per data set.
EPS = {"mnist": 0.3, "fashion_mnist": 0.1}
F13_LINF_GAIN = 2.0
F13_L0_RATIO = 1.0
F14_GAP = 0.20
F15_RATIO = 5.0
F15_DECISION_BUDGET = 10_000
F16_SUCCESS = 0.30
F16_NOISE_RATIO = 3.0
F16_TARGETED_SHARE = 0.5
F17_GAP = 0.20
F17_CLEAN_SLACK = 0.03
F18_ROBUST_GAIN = {"mnist": 0.50, "fashion_mnist": 0.30}
F18_CLEAN_SHARE = 0.85
F18_MASKING_GAP = 0.30
#: F18: model passes per training step of a method relative to standard training, fixed
#: by the method (FGSM-RS: one attack step + the update = 2; PGD-7: 7 + 1 = 8). Checked,
#: never judged.
F18_PASS_RATIO = {"fgsm_rs": 2.0, "pgd": 8.0}


def _positive(name: str, value: Any) -> float:
    v = num(value)
    if v <= 0:
        raise ValueError(f"{name}={v} must be a positive finite number (a median of a successful attack)")
    return v


def _eps(e: dict[str, Any]) -> float:
    ds = e.get("dataset")
    if ds not in EPS:
        raise ValueError(f"dataset={ds!r}: the judge reads G2's eps per data set, one of {sorted(EPS)}")
    return EPS[ds]


def _at(grid, values, eps: float) -> float:
    g = [num(x) for x in grid]
    hit = [i for i, x in enumerate(g) if abs(x - eps) < 1e-9]
    if not hit:
        raise ValueError(f"eps {eps} is not on the evidence's grid {g}")
    return num(values[hit[0]])


def _f13(e: dict[str, Any]) -> Verdict:
    """Two models, the standard target and the adversarially trained one, on the same
    examples: median minimal L-inf(AT) / median minimal L-inf(standard)
    >= 2, and median minimal L0(AT) / median minimal L0(standard) <= 1. Failures count
    as infinite; an infinite median is read as the statistic's bound (L-inf: the
    bisection's eps_max; L0: the pixel count), which the minimal perturbation would
    exceed. Reach (G0): a median L-inf lies in (0, eps_max] and a median L0 in
    [1, pixels], so the L-inf ratio is at most eps_max / standard's and the L0 ratio
    lies in [1 / standard's, pixels / standard's]."""
    top_linf, pixels = _positive("eps_max", e.get("eps_max", 1.0)), _positive("n_pixels", e["n_pixels"])

    def med(key, who, top):
        v = e[key][who]
        return top if v is None else min(_positive(f"{key}[{who}]", v), top)

    linf = {w: med("median_linf", w, top_linf) for w in ("standard", "adversarial")}
    l0 = {w: med("median_l0", w, pixels) for w in ("standard", "adversarial")}
    conds = [Condition("median minimal L-inf AT / standard", linf["adversarial"] / linf["standard"], F13_LINF_GAIN,
                       unit="ratio", scale="log", reach=(0.0, top_linf / linf["standard"]),
                       why=f"minimal L-inf <= {top_linf:g}", baseline=f"standard {linf['standard']:.3g}"),
             Condition("median minimal L0 AT / standard", l0["adversarial"] / l0["standard"], F13_L0_RATIO, op="<=",
                       unit="ratio", scale="log", reach=(1.0 / l0["standard"], pixels / l0["standard"]),
                       why=f"1 <= minimal L0 <= {pixels:g} pixels", baseline=f"standard {l0['standard']:.3g}")]
    numbers = {"median minimal L-inf": linf, "median minimal L0": l0, "failures": e.get("failures"),
               "pointwise smaller than JSMA": e.get("pointwise_smaller"), "examples": e.get("n")}
    return judged(conds, numbers, checks=victim_checks(e, "victim_accuracy"),
                  note="failures counted as infinite, medians over all examples")


#: Stand-in for a ratio of 0 (its inverse for infinity) when one attack fooled nothing.
_RATIO_FLOOR = 1e-6


def _l2_ratio(e: dict[str, Any]) -> float:
    """median L2 DeepFool / median L2 C&W. An attack that fooled none of the examples has
    an infinite median (failures count as infinite, as in F13), so the ratio is 0 (C&W
    fooled none) or infinite (DeepFool fooled none); `_RATIO_FLOOR` and its inverse stand
    in so that the log-margin stays finite with the comparison's sign. The medians over
    the matched examples are read otherwise."""
    rate = {k: (e.get("success_minimal") or {}).get(k) for k in ("cw_l2", "deepfool")}
    none = {k: r is not None and float(r) == 0 for k, r in rate.items()}
    if none["cw_l2"] and none["deepfool"]:
        raise ValueError("neither C&W nor DeepFool fooled an example: no L2 to compare")
    if none["cw_l2"] or none["deepfool"]:
        return _RATIO_FLOOR if none["cw_l2"] else 1 / _RATIO_FLOOR
    l2 = {k: _positive(f"median L2 of {k}", e["median_l2"][k]) for k in ("cw_l2", "deepfool")}
    return l2["deepfool"] / l2["cw_l2"]


def _f14(e: dict[str, Any]) -> Verdict:
    """The largest PGD - FGSM success gap over the eps grid up to G2's eps >= 20 points,
    and median L2(C&W) < median L2(DeepFool). Model passes per example are shown, not
    judged (F14's rule)."""
    eps, pgd, fgsm = e["eps"], e["success"]["pgd_linf"], e["success"]["fgsm"]
    if not (len(eps) == len(pgd) == len(fgsm)) or not eps:
        raise ValueError("eps, success['pgd_linf'] and success['fgsm'] must be equally long and non-empty")
    top = _eps(e)
    grid = [i for i in range(len(eps)) if num(eps[i]) <= top + 1e-9]
    if not grid:
        raise ValueError(f"no eps of the grid {list(eps)} is <= {top}")
    gaps = {i: num(pgd[i]) - num(fgsm[i]) for i in grid}
    i = max(grid, key=gaps.get)
    ratio = _l2_ratio(e)
    l2 = e["median_l2"]
    conds = [Condition("largest PGD - FGSM success gap", gaps[i], F14_GAP,
                       reach=(max(-num(fgsm[j]) for j in grid), max(1 - num(fgsm[j]) for j in grid)),
                       why="PGD success <= 1", baseline=f"FGSM {num(fgsm[i]):.3g} at eps {num(eps[i]):g}"),
             Condition("median L2 DeepFool / C&W", ratio, 1.0, op=">", unit="ratio", scale="log")]
    numbers = {"eps of largest gap": num(eps[i]), "PGD success": num(pgd[i]), "FGSM success": num(fgsm[i]),
               "median L2": l2, "model passes per example": e.get("passes_per_example")}
    return judged(conds, numbers, checks=victim_checks(e, "victim_accuracy"))


def _f15(e: dict[str, Any]) -> Verdict:
    """At each success level (10 / 25 / 50 % within the L2 ball), queries(best
    decision-based) >= 5 x queries(best score-based); a level one side never reaches
    counts that side's budget x 2 (so a score-only level supports, a decision-only one
    counts against); a level neither reaches is skipped. Power check: decision budget
    >= 10^4. Reach: a measured count lies in [1, budget], a stand-in is budget x 2."""
    levels = e["levels"]
    best_s, best_d = e["best"]["score"], e["best"]["decision"]
    if not (len(levels) == len(best_s) == len(best_d)) or not levels:
        raise ValueError("levels, best['score'] and best['decision'] must be equally long and non-empty")
    b_s, b_d = _positive("score budget", e["budget"]["score"]), _positive("decision budget", e["budget"]["decision"])
    conds, outcome = [], {}
    for p, qs, qd in zip(levels, best_s, best_d):
        key = f"{round(100 * num(p))}%"
        if qs is None and qd is None:
            outcome[key] = "neither reached"
            continue
        if qs is not None:
            s = _positive("queries", qs)
            d = _positive("queries", qd) if qd is not None else 2 * b_d
            reach = (1.0 / s, 2 * b_d / s)
        else:
            d, s = _positive("queries", qd), 2 * b_s
            reach = (d / s, d)
        outcome[key] = ("both reached" if qs is not None and qd is not None
                        else "score-based only" if qd is None else "decision-based only")
        conds.append(Condition(f"decision / score queries at {key}", d / s, F15_RATIO, unit="ratio", scale="log",
                               reach=reach, why="query budgets", baseline=f"score-based {s:.0f} queries"))
    numbers = {"best score-based queries": list(best_s), "best decision-based queries": list(best_d),
               "per level": outcome, "budgets": {"score": b_s, "decision": b_d}}
    for kind, iv in (e.get("intervals") or {}).items():  # 95 % bootstrap over examples, per level
        numbers[f"{kind}-based queries 95% interval"] = {"low": iv.get("low"), "high": iv.get("high")}
    checks = [power_check("decision-based budget >= 10^4 queries", b_d, b_d >= F15_DECISION_BUDGET),
              *victim_checks(e, "victim_accuracy")]
    if not conds:
        return Verdict("inconclusive", (), numbers, tuple(checks), note="no success level reached by either side")
    return judged(conds, numbers, checks=checks)


def _f16(e: dict[str, Any]) -> Verdict:
    """At G2's eps: untargeted transfer >= 30 %, and targeted transfer <= 0.5 x untargeted
    (as targeted - 0.5 x untargeted <= 0). Where the evidence records sign noise of the
    same norm on the target ("noise", per eps), untargeted >= 3 x noise too (G0 as F04)."""
    eps = _eps(e)
    u, t = _at(e["eps"], e["untargeted"], eps), _at(e["eps"], e["targeted"], eps)
    conds = [Condition("untargeted transfer", u, F16_SUCCESS, reach=RATE, why="a rate"),
             Condition("targeted - 0.5 x untargeted transfer", t - F16_TARGETED_SHARE * u, 0.0, op="<=",
                       reach=(-F16_TARGETED_SHARE * u, 1 - F16_TARGETED_SHARE * u), why="targeted transfer in [0, 1]",
                       baseline=f"untargeted {u:.3g}")]
    numbers = {"eps": eps, "untargeted transfer": u, "targeted transfer": t,
               "untargeted per eps": list(e["untargeted"]), "targeted per eps": list(e["targeted"])}
    if "noise" in e:
        noise = _at(e["eps"], e["noise"], eps)
        floor = max(noise, 1e-3)
        conds.insert(0, Condition("untargeted / noise transfer", u / floor, F16_NOISE_RATIO, unit="ratio",
                                  scale="log", reach=multiple_reach(floor), why="success <= 1",
                                  baseline=f"noise {noise:.3g}"))
        numbers["noise success"] = noise
    return judged(conds, numbers, checks=victim_checks(e, "victim_accuracy"))


def _f17(e: dict[str, Any]) -> Verdict:
    """The fraction fooled in >= 90 % of fresh draws: EOT >= plain PGD + 20 points.
    G0: EOT's fraction is <= 1, so the gap lies in [-plain, 1 - plain]. Power check
   , applied where the evidence records the untransformed clean accuracy
    ("clean_accuracy"): clean accuracy under the draws >= it - 3 points."""
    f = e["fooled_in_90pct"]
    eot, plain, clean = num(f["eot"]), num(f["plain"]), num(f["clean"])
    acc = num(e["clean_accuracy_under_transform"])
    checks = victim_checks(e, "clean_accuracy")
    if e.get("clean_accuracy") is not None:
        c0 = num(e["clean_accuracy"])
        checks.append(power_check(f"clean accuracy under the draws >= untransformed - {F17_CLEAN_SLACK:g}", acc,
                                  acc >= c0 - F17_CLEAN_SLACK))
    cond = Condition("EOT - plain fooled in >= 90 % of draws", eot - plain, F17_GAP, reach=minus_reach(plain),
                     why="EOT's fraction <= 1", baseline=f"plain PGD {plain:.3g}")
    return judged([cond], {"EOT fooled in >= 90 % of draws": eot, "plain PGD fooled in >= 90 % of draws": plain,
                           "clean fooled in >= 90 % of draws": clean, "clean accuracy under transformations": acc,
                           "eps": e.get("eps")}, checks=checks)


def _f18(e: dict[str, Any]) -> Verdict:
    """Worst-case robust(AT) >= worst-case robust(undefended) + 50 points on MNIST, + 30
    on Fashion-MNIST; clean(AT) < clean(undefended); input quantization: plain-PGD
    robust accuracy >= BPDA robust accuracy + 30 points. Power check: clean(AT) >= 0.85
    x clean(undefended). The training cost is fixed by the method and checked, never
    judged (FGSM-RS: 2 model passes per standard one). Reach: robust accuracy <= clean
    accuracy."""
    ds = e.get("dataset")
    if ds not in F18_ROBUST_GAIN:
        raise ValueError(f"dataset={ds!r}: F18's bar is per data set, one of {sorted(F18_ROBUST_GAIN)}")
    w_at, w_und = num(e["worst_case_at"]), num(e["worst_case_undefended"])
    c_at, c_und = num(e["clean_at"]), num(e["clean_undefended"])
    plain, bpda = num(e["masked_plain_robust"]), num(e["masked_adaptive_robust"])
    ratio = _positive("AT training passes", e["train_passes_at"]) / _positive("standard passes",
                                                                              e["train_passes_standard"])
    checks = [power_check(f"clean(AT) >= {F18_CLEAN_SHARE} x clean(undefended)", c_at,
                          c_at >= F18_CLEAN_SHARE * c_und)]
    method = e.get("method")
    if method in F18_PASS_RATIO:
        checks.append(identity_check(f"{method} costs {F18_PASS_RATIO[method]:g} x standard passes", ratio,
                                     abs(ratio - F18_PASS_RATIO[method]) < 1e-9))
    checks += victim_checks(e, "clean_undefended")
    conds = [Condition("worst-case robust AT - undefended", w_at - w_und, F18_ROBUST_GAIN[ds],
                       reach=(-w_und, c_at - w_und), why="robust accuracy <= clean accuracy",
                       baseline=f"undefended {w_und:.3g}"),
             Condition("clean undefended - AT", c_und - c_at, 0.0, op=">", reach=(c_und - 1, c_und),
                       why="accuracy in [0, 1]"),
             Condition("quantized: plain PGD - BPDA robust", plain - bpda, F18_MASKING_GAP, reach=minus_reach(bpda),
                       why="robust accuracy <= 1", baseline=f"BPDA {bpda:.3g}")]
    numbers = {"worst-case AT (AutoAttack-style)": w_at, "worst-case undefended": w_und,
               "robust AT (PGD)": num(e["robust_at"]), "robust undefended (PGD)": num(e["robust_undefended"]),
               "clean AT": c_at, "clean undefended": c_und, "quantized: plain PGD": plain, "quantized: BPDA": bpda,
               "AT / standard training cost (model passes)": ratio, "optimiser steps": e.get("optimizer_steps"),
               "worst case after each attack": e.get("worst_case_after"),
               "method": method, "eps": e.get("eps")}
    return judged(conds, numbers, checks=checks)


FINDINGS: tuple[Finding, ...] = (
    Finding("F13", "adversarial",
            "The distance decides what 'small' means: robustness bought under one norm does not carry to another.",
            "standard target vs its PGD-adversarially trained copy, minimal attacks on the same examples (failures "
            "infinite): median minimal L-inf at least doubles with adversarial training, median minimal L0 (the "
            "smaller of JSMA's and the pointwise attack's) does not grow",
            "04_norms", _f13),
    Finding("F14", "adversarial",
            "Iteration buys success; optimisation finds the smallest L2.",
            "the largest PGD - FGSM success gap over the eps grid (up to 0.3 on MNIST, 0.1 on Fashion-MNIST) "
            ">= 20 points, and median L2(C&W) < median L2(DeepFool); cost shown, not judged",
            "04_success_vs_eps", _f14),
    Finding("F15", "adversarial",
            "Black-box attacks pay in queries, label-only ones far more.",
            "at 10/25/50 % success within the L2 ball, queries(best decision-based) >= 5 x queries(best "
            "score-based); a level one side never reaches counts its budget x 2; decision budgets >= 10^4",
            "04_queries", _f15),
    Finding("F16", "adversarial",
            "Adversarial examples transfer between architectures; targeted ones much less.",
            "at eps 0.3 on MNIST, 0.1 on Fashion-MNIST: untargeted transfer >= 3 x sign noise of the same norm "
            "and >= 30 %, and targeted transfer <= 0.5 x untargeted", "04_transfer", _f16,
            baselines=("noise success",)),
    Finding("F17", "adversarial",
            "Surviving transformations needs optimising over them (expectation over transformation).",
            "target trained with the transformations as augmentation; on examples stable under clean draws, the "
            "fraction fooled in >= 90 % of fresh draws: EOT >= plain PGD + 20 points (same margin loss, kappa 0, "
            "steps, eps by rule); decided by design when plain PGD already exceeds 80 %; power: clean accuracy "
            "under the draws >= untransformed - 3 points; baseline: clean images",
            "04_eot", _f17, baselines=("clean fooled in >= 90 % of draws",)),
    Finding("F18", "adversarial",
            "Robustness costs accuracy; masking is not robustness.",
            "worst-case robust(AT) >= worst-case robust(undefended) + 50 points on MNIST, + 30 on Fashion-MNIST; "
            "clean(AT) < clean(undefended); quantization: plain-PGD robust >= BPDA robust + 30 points; "
            "inconclusive when clean(AT) < 0.85 x clean(undefended); training cost checked, not judged",
            "04_defenses", _f18, baselines=("worst-case undefended",)),
)
