"""Judges of findings F09-F12: poisoning (notebook 03), on the machinery of
`report.verdicts` (the findings' testable rules, applied to the evidence notebook 03 records).

Rates measured on n examples use the half-count (k + 0.5)/n in the claim's favour
(G3.2): half a count up for ">=" bars, down for "<=" ones, so a value exactly at its bar
passes and one a count short does not. Binary outcomes (F11's per-target successes,
F12's per-run pass / fail) are decided on counts pooled over the seeds (G3.3): the
finding's `pooled` function recomputes them over the usable runs; a run's own verdict
uses the same rule on that run's counts alone. G1's accuracy check is applied where the
evidence records the data set and the victim's architecture ("architecture"), as notebook
03 does for every finding.
"""
from __future__ import annotations

from ..stats import ALPHA, clopper_pearson, direction, fisher_one_sided
from ..verdicts import (RATE, Condition, Exact, Finding, half, judged, minus_reach, num as _num, power_check,
                        victim_checks)

#: F09: random flips at this rate cost at most F09_COST of accuracy; at label budget
#: F09_BUDGET the targeted flip's confusion exceeds the random flips' by F09_CONFUSION_GAP.
F09_RATE = 0.2
F09_COST = 0.05
F09_BUDGET = 0.05
F09_CONFUSION_GAP = 0.20
#: F10: the largest poisoning rate that counts as "cheap"; its two bars.
F10_MAX_RATE = 0.01
F10_SUCCESS = 0.90
F10_DROP = 0.01
#: F11: success(transfer) >= 2 x success(end-to-end) on pooled half-counts, Fisher p < ALPHA.
F11_RATIO = 2.0
#: F11 (power): at least this fraction of poisons collided.
F11_COLLIDED = 0.80
#: F12: recall at 1.5 x the poison count removed; "success after < 20 %" in >= 9 of 10 runs.
F12_RECALL = 0.80
F12_REMOVAL = 1.5
F12_SUCCESS_AFTER = 0.20
F12_RUN_SHARE = 0.90


def _index(values, at, what):
    vals = [_num(r) for r in values]
    i = min(range(len(vals)), key=lambda j: abs(vals[j] - at))
    if abs(vals[i] - at) > 1e-9:
        raise ValueError(f"F09 needs {what} {at}; the evidence has {vals}")
    return i


def _f09(e):
    """F09's rule: random flips at 20 % of the training set cost <= 5 points of accuracy,
    and at label budget B = 5 % the targeted flip's source->target confusion (the pair the
    clean victim confused most on held-out images, min(B, n_source) labels spent) exceeds
    the random flips' at the same B by >= 20 points (half-counts over the test images)."""
    i = _index(e["rates"], F09_RATE, "random flips at rate")
    j = _index(e["budgets"], F09_BUDGET, "label budget")
    acc_clean, acc_random = _num(e["acc_clean"]), _num(e["acc_random"][i])
    conf_t, conf_r = _num(e["confusion_targeted_budget"][j]), _num(e["confusion_random_budget"][j])
    n_test, n_src = _num(e["n_test"]), _num(e["n_source_test"])
    cost = acc_clean - acc_random
    pair = f"{int(_num(e['source']))}->{int(_num(e['target']))}"
    conds = [Condition("random-flip cost at 20 %", cost, F09_COST, op="<=", half=half(n_test),
                       reach=(acc_clean - 1, acc_clean), why="accuracy in [0, 1]",
                       baseline=f"clean accuracy {acc_clean:.3g}"),
             Condition("targeted - random confusion at B = 5 %", conf_t - conf_r, F09_CONFUSION_GAP,
                       half=half(n_src), reach=minus_reach(conf_r), why="confusion <= 1",
                       baseline=f"random flips at the same budget {conf_r:.3g}")]
    return judged(conds, {"cost of 20% random flips": round(cost, 6), "pair": pair,
                          "confusion targeted at B": {f"{_num(b):g}": _num(c) for b, c in
                                                      zip(e["budgets"], e["confusion_targeted_budget"])},
                          "confusion random at B": {f"{_num(b):g}": _num(c) for b, c in
                                                    zip(e["budgets"], e["confusion_random_budget"])},
                          "confusion random": conf_r, "confusion unpoisoned": _num(e["confusion_clean"]),
                          "labels flipped (targeted) at B": _num(e["spent_targeted"][j]),
                          "clean accuracy": acc_clean},
                  checks=victim_checks(e, "acc_clean"))


def _f10(e):
    """Some rate <= 1 % gives trigger success >= 90 % with clean accuracy within 1 point
    of the unpoisoned victim's (half-counts); the cheap rate whose weaker condition is
    strongest is judged."""
    base = _num(e["clean_acc_unpoisoned"])
    rows = [(_num(r), _num(s), _num(c)) for r, s, c in zip(e["rates"], e["success"], e["clean_acc"])]
    cheap = [row for row in rows if row[0] <= F10_MAX_RATE + 1e-12]
    if not cheap:
        raise ValueError(f"F10 needs a BadNets rate <= {F10_MAX_RATE}; rates were {[r for r, _, _ in rows]}")
    n_s, n_c = _num(e["n_success_test"]), _num(e["n_test"])

    def conds(row):
        _, s, c = row
        return [Condition("trigger success", s, F10_SUCCESS, half=half(n_s), reach=RATE,
                          why="a rate", baseline=f"unpoisoned victim {_num(e['success_unpoisoned']):.3g}"),
                Condition("clean-accuracy drop", base - c, F10_DROP, op="<=", half=half(n_c),
                          reach=(base - 1, base), why="accuracy in [0, 1]",
                          baseline=f"unpoisoned clean accuracy {base:.3g}")]

    best = max(cheap, key=lambda row: min(c.margin for c in conds(row)))
    return judged(conds(best), {"rate": best[0], "success": best[1], "clean-accuracy drop": round(base - best[2], 6),
                                "trigger success, unpoisoned victim": _num(e["success_unpoisoned"]),
                                "success per rate": {f"{r:g}": s for r, s, _ in rows}},
                  checks=victim_checks(e, "clean_acc_unpoisoned"))


def _f11_counts(e):
    n = int(_num(e["n_targets"]))
    k_t, k_e = int(_num(e["hits_transfer"])), int(_num(e["hits_end2end"]))
    if n <= 0 or not (0 <= k_t <= n and 0 <= k_e <= n):
        raise ValueError(f"F11 counts out of range: {k_t}, {k_e} of {n} targets")
    return n, k_t, k_e


def _f11_pooled(evidences):
    """On success counts summed over the runs: success(transfer) >= 2 x success(end-to-end)
    with half-counts ((k_t + 0.5) / (k_e + 0.5), a rule on counts: met -> +1, not -> -1),
    and Fisher's exact test of transfer > end-to-end (one-sided, p < 0.05 -> +1;
    significant the other way -> -1)."""
    n = k_t = k_e = 0
    for e in evidences:
        a, b, c = _f11_counts(e)
        n, k_t, k_e = n + a, k_t + b, k_e + c
    ratio = (k_t + 0.5) / (k_e + 0.5)
    p_gt, p_lt = fisher_one_sided(k_t, n, k_e, n)
    counts = f"{k_t} vs {k_e} of {n} targets"
    return (Exact("transfer / end-to-end successes (half-counts)", 1 if ratio >= F11_RATIO else -1, ratio,
                  detail=f"{counts}; bar {F11_RATIO:g}", unit="ratio"),
            Exact("Fisher transfer > end-to-end", direction(p_gt, p_lt, ALPHA), p_gt,
                  detail=f"{counts}; p(greater) = {p_gt:.3g}, p(less) = {p_lt:.3g}", unit="count"))


def _f11(e):
    """One run's F11 verdict: the pooled rule on that run's counts alone (see
    `_f11_pooled`), on the 1-poison row (the flat keys; "rows" holds every row, shown
    as numbers). Power check: >= 80 % of poisons within 5 % of their starting feature
    distance. Control condition: success(transfer) - success(transfer, no poisons)
    >= 30 points (half-count), when the evidence records the control."""
    n, k_t, k_e = _f11_counts(e)
    conds = []
    if "hits_control_transfer" in e:
        k_c = int(_num(e["hits_control_transfer"]))
        conds.append(Condition("transfer - control success", (k_t - k_c) / n, 0.30, half=half(n),
                               reach=minus_reach(k_c / n), why="success <= 1"))
    collided = _num(e["collided_fraction"])
    extra = {}
    for key in ("hits_control_transfer", "hits_control_end2end"):
        if key in e:
            extra[key.replace("hits_", "success ").replace("_", " ")] = _num(e[key]) / n
    for row, r in (e.get("rows") or {}).items():
        extra[f"row {row}"] = {k: _num(r[k]) / n for k in ("hits_transfer", "hits_end2end", "hits_control_transfer",
                                                            "hits_control_end2end") if k in r}
    return judged(conds, {**extra, "success transfer": k_t / n, "success end-to-end": k_e / n, "targets": n,
                          "poisons per target": int(_num(e["n_poisons"])),
                          "median relative feature distance after": _num(e["rel_dist_median"]),
                          "poisons collided": collided},
                  exact=_f11_pooled([e]),
                  checks=[power_check(f"poisons collided >= {F11_COLLIDED:.0%}", collided, collided >= F11_COLLIDED),
                          *victim_checks(e, "victim_accuracy")])


def _f12_runs(e):
    """The runs (poison draws) of one evidence: its "runs" list (two draws
    per seed), or the evidence itself as one run (the earlier shape)."""
    runs = e.get("runs")
    if runs is None:
        return [e]
    if not runs:
        raise ValueError("F12 evidence has an empty list of runs")
    return list(runs)


def _f12_pooled(evidences):
    """"Success after retraining < 20 %" in >= 9 of 10 runs (>= 90 % of the pooled runs),
    decided on the pooled pass count k of n: met (+1) iff (k + 0.5) / n >= 0.9, which at
    n = 10 is k >= 9; else -1. Shown with the pass rate's Clopper-Pearson interval and the
    exact binomial p-value of "pass rate > 90 %" (scipy.stats.binomtest), which no count of
    10 can make significant (10 / 10 gives p = 0.9^10 = 0.35): the bar is read as a count
    rule, as the finding's rule words it ("in >= 9 of 10 runs")."""
    from scipy.stats import binomtest

    runs = [r for e in evidences for r in _f12_runs(e)]
    k = sum(_num(r["success_after"]) < F12_SUCCESS_AFTER for r in runs)
    n = len(runs)
    rate, lo, hi = clopper_pearson(k, n)
    ok = (k + 0.5) / n >= F12_RUN_SHARE
    p = binomtest(k, n, F12_RUN_SHARE, alternative="greater").pvalue
    return (Exact("runs with success after < 20 %", 1 if ok else -1, rate, (lo, hi),
                  detail=f"{k} of {n} runs (Clopper-Pearson); binomial p(rate > 0.9) = {p:.3g}"),)


def _f12(e):
    """Recall >= 80 % when removing 1.5 x the poison count (recall pooled over the run's
    poison draws, half-count over their poisons; a t-interval over seeds), and attack
    success after retraining < 20 % in >= 9 of 10 runs (pooled, `_f12_pooled`). The
    poisons left after filtering are reported per run."""
    runs = _f12_runs(e)
    if abs(_num(e.get("removal_multiple", runs[0].get("removal_multiple"))) - F12_REMOVAL) > 1e-9:
        raise ValueError(f"F12 is judged at {F12_REMOVAL} x the poison count removed; "
                         f"evidence has {e.get('removal_multiple')}")
    n_p = sum(_num(r["n_poison"]) for r in runs)
    caught = sum(_num(r["recall"]) * _num(r["n_poison"]) for r in runs)
    rec = caught / n_p
    conds = [Condition("recall at 1.5 x poisons removed", rec, F12_RECALL, half=half(n_p), reach=RATE, why="a rate")]
    numbers = {"recall": rec, "recall per run": [_num(r["recall"]) for r in runs],
               "precision": sum(_num(r["precision"]) for r in runs) / len(runs),
               "success before": sum(_num(r["success_before"]) for r in runs) / len(runs),
               "success after per run": [_num(r["success_after"]) for r in runs],
               "clean accuracy after": sum(_num(r["clean_acc_after"]) for r in runs) / len(runs)}
    if all("poisons_left" in r for r in runs):
        numbers["poisons left per run"] = [_num(r["poisons_left"]) for r in runs]
    return judged(conds, numbers, exact=_f12_pooled([e]), checks=victim_checks(e, "victim_accuracy"))


FINDINGS: tuple[Finding, ...] = (
    Finding("F09", "poisoning",
       "Randomly flipped labels barely hurt a deep network; flipping one class into another with the same label budget does real damage to that pair.",
       "20% random flips cost <= 5 points of accuracy, and at a label budget of 5 % of the training set the targeted flip's source->target confusion (the pair the clean victim confuses most) exceeds the random flips' at the same budget by >= 20 points",
       "03_label_flipping", _f09, baselines=("confusion random", "confusion unpoisoned")),
    Finding("F10", "poisoning",
       "Backdoors are cheap and stealthy: a small trigger on at most 1% of the training set is enough, and clean accuracy hardly moves.",
       "some rate <= 1% gives attack success >= 90% with clean accuracy within 1 point of the unpoisoned victim's",
       "03_badnets", _f10, baselines=("trigger success, unpoisoned victim",)),
    Finding("F11", "poisoning",
       "Clean-label feature-collision poisons work when only the last layer is retrained, much less under end-to-end training.",
       "one poison per target: success(transfer) - success without poisons >= 30 points, and on success counts pooled over seeds success(transfer) >= 2 x success(end-to-end) (half-counts) with Fisher's exact test of transfer > end-to-end at p < 0.05; inconclusive where fewer than 80 % of poisons end within 5 % of their starting feature distance",
       "03_feature_collision", _f11, pooled=_f11_pooled, baselines=("success end-to-end",)),
    Finding("F12", "poisoning",
       "Poisons leave a trace in a convolutional network's representation: spectral signatures find them, and retraining without them removes the backdoor.",
       "recall >= 80% when removing 1.5 x the poison count, and attack success after retraining < 20% in >= 9 of 10 runs (two poison draws per seed, pooled count)",
       "03_spectral_signatures", _f12, pooled=_f12_pooled, baselines=("success before",)),
)
