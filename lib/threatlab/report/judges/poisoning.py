"""Judges of findings F09-F12: Poisoning (notebook 03), register v2.

Each judge reads the evidence notebook 03 records (``rec.evidence("F09", {...})``) and
returns margins scaled so that 0 is the register's bar: point differences on fractions
(`diff_margin`) and log-ratios for "k x" bars (`log_ratio_margin`). F11 adds a condition
over the seeds pooled: Fisher's exact test on the success counts summed over seeds.

Fractions measured on n examples move in steps of 1/n; a fraction exactly at a ">=" or
"<=" bar meets it, so those margins get half a step (0.5 / n) in the claim's favour and
a value one example short of the bar still falls below 0 (strict bars, "<", get none).
"""
from __future__ import annotations

import math

from ..findings import Finding, diff_margin, judged, log_ratio_margin, num as _num, power_check

#: F09: random flips are judged at this rate (a fraction of the training set).
F09_RATE = 0.2
#: F10: the largest poisoning rate that counts as "cheap".
F10_MAX_RATE = 0.01
#: F11: Fisher's exact test must reject equal success at this level (pooled over seeds).
F11_ALPHA = 0.05
#: F11: the "k x" of success(transfer) >= k x success(end-to-end).
F11_RATIO = 2.0
#: Continuity correction of F11's per-run ratio: +0.5 on both success counts
#: (Haldane-Anscombe), the usual stand-in that keeps a ratio finite when a count is 0.
F11_CORRECTION = 0.5


def _f09(e):
    rates = [_num(r) for r in e["rates"]]
    i = min(range(len(rates)), key=lambda j: abs(rates[j] - F09_RATE))
    if abs(rates[i] - F09_RATE) > 1e-9:
        raise ValueError(f"F09 needs random and targeted flips at rate {F09_RATE}; rates were {rates}")
    acc_clean = _num(e["acc_clean"])
    acc_random = _num(e["acc_random"][i])
    conf_t, conf_r = _num(e["confusion_targeted"][i]), _num(e["confusion_random"][i])
    half_test, half_src = 0.5 / _num(e["n_test"]), 0.5 / _num(e["n_source_test"])
    margins = {
        # cost <= 5 points  <=>  (acc_random - acc_clean) >= -0.05
        "random-flip cost <= 5 points": diff_margin(acc_random - acc_clean + half_test, -0.05),
        "targeted confusion - random confusion >= 5 points": diff_margin(conf_t - conf_r + half_src, 0.05),
    }
    return judged(margins, {"cost of 20% random flips": round(acc_clean - acc_random, 6),
                            "confusion targeted": conf_t, "confusion random": conf_r,
                            "confusion unpoisoned": _num(e["confusion_clean"])})


def _f10(e):
    base = _num(e["clean_acc_unpoisoned"])
    rows = [(_num(r), _num(s), _num(c)) for r, s, c in zip(e["rates"], e["success"], e["clean_acc"])]
    cheap = [row for row in rows if row[0] <= F10_MAX_RATE + 1e-12]
    if not cheap:
        raise ValueError(f"F10 needs a BadNets rate <= {F10_MAX_RATE}; rates were {[r for r, _, _ in rows]}")

    half_s, half_c = 0.5 / _num(e["n_success_test"]), 0.5 / _num(e["n_test"])

    def both(row):
        _, s, c = row
        return {"success >= 90%": diff_margin(s + half_s, 0.9),
                "clean-accuracy drop <= 1 point": diff_margin(c - base + half_c, -0.01)}

    # The claim holds if some cheap rate meets both bars: the best rate's weaker condition decides.
    best = max(cheap, key=lambda row: min(both(row).values()))
    return judged(both(best), {"rate": best[0], "success": best[1], "clean-accuracy drop": round(base - best[2], 6),
                               "trigger success, unpoisoned victim": _num(e["success_unpoisoned"])})


def _f11(e):
    n = int(_num(e["n_targets"]))
    k_t, k_e = int(_num(e["hits_transfer"])), int(_num(e["hits_end2end"]))
    if n <= 0 or not (0 <= k_t <= n and 0 <= k_e <= n):
        raise ValueError(f"F11 counts out of range: {k_t}, {k_e} of {n} targets")
    c = F11_CORRECTION
    margins = {"success(transfer) >= 2 x success(end-to-end)": log_ratio_margin((k_t + c) / (k_e + c), F11_RATIO)}
    checks = [power_check("targets flipped in either regime", k_t + k_e, k_t + k_e > 0)]
    return judged(margins, {"success transfer": k_t / n, "success end-to-end": k_e / n, "targets": n,
                            "poisons per target": int(_num(e["n_poisons"])),
                            "median relative feature distance after": _num(e["rel_dist_median"]),
                            "poisons collided": _num(e["collided_fraction"])}, checks=checks)


def _f11_pooled(evidences):
    """Fisher's exact test (two-sided, scipy.stats.fisher_exact) on the 2 x 2 table of
    successes and failures per regime, counts summed over the seeds.
    margin = log(alpha / p): > 0 iff p < alpha."""
    from scipy import stats

    n = sum(int(_num(e["n_targets"])) for e in evidences)
    k_t = sum(int(_num(e["hits_transfer"])) for e in evidences)
    k_e = sum(int(_num(e["hits_end2end"])) for e in evidences)
    if n <= 0:
        raise ValueError("F11 pooled test needs at least one target")
    res = stats.fisher_exact([[k_t, n - k_t], [k_e, n - k_e]], alternative="two-sided")
    p = float(res.pvalue)
    margin = math.log(F11_ALPHA / max(p, 1e-300))
    return {"margin": margin, "numbers": {"Fisher p (pooled)": p, "successes transfer": k_t,
                                          "successes end-to-end": k_e, "targets per regime": n,
                                          "odds ratio": float(res.statistic)}}


def _f12(e):
    rec, after = _num(e["recall"]), _num(e["success_after"])
    if abs(_num(e["removal_multiple"]) - 1.5) > 1e-9:
        raise ValueError(f"F12 is judged at 1.5 x the poison count removed; evidence has {e['removal_multiple']}")
    margins = {"recall >= 80%": diff_margin(rec + 0.5 / _num(e["n_poison"]), 0.8),
               "success after retraining < 20%": diff_margin(0.2, after)}
    return judged(margins, {"recall": rec, "precision": _num(e["precision"]),
                            "success before": _num(e["success_before"]), "success after": after,
                            "clean accuracy after": _num(e["clean_acc_after"])})


FINDINGS: tuple[Finding, ...] = (
    Finding("F09", "poisoning",
       "Randomly flipped labels barely hurt a deep network; flipping one class into another at the same rate does real damage to that pair.",
       "20% random flips cost <= 5 points of accuracy, and the targeted flip's source->target confusion rate exceeds the random flips' at 20% by >= 5 points",
       "03_label_flipping", _f09, baselines=("confusion random", "confusion unpoisoned")),
    Finding("F10", "poisoning",
       "Backdoors are cheap and stealthy: a small trigger on at most 1% of the training set is enough, and clean accuracy hardly moves.",
       "some rate <= 1% gives attack success >= 90% with clean accuracy within 1 point of the unpoisoned victim's",
       "03_badnets", _f10, baselines=("trigger success, unpoisoned victim",)),
    Finding("F11", "poisoning",
       "Clean-label feature-collision poisons work when only the last layer is retrained, much less under end-to-end training.",
       "success(transfer) >= 2 x success(end-to-end) at the fixed poison count (counts +0.5 per run), and Fisher's exact test on the success counts pooled over seeds gives p < 0.05; inconclusive where no target flips in either regime",
       "03_feature_collision", _f11, pooled=_f11_pooled, baselines=("success end-to-end",)),
    Finding("F12", "poisoning",
       "Poisons leave a trace in a convolutional network's representation: spectral signatures find them, and retraining without them removes the backdoor.",
       "recall >= 80% when removing 1.5 x the poison count, and attack success after retraining < 20%",
       "03_spectral_signatures", _f12, baselines=("success before",)),
)
