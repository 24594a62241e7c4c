"""Register v2 judges F09-F12 on constructed evidence, on both sides of every bar, and
F11's condition pooled over seeds (Fisher's exact test)."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from threatlab.report import findings
from threatlab.report.judges import poisoning as j

SUP, NOT, INC = findings.SUPPORTED, findings.NOT_SUPPORTED, findings.INCONCLUSIVE

F09 = {"rates": [0.1, 0.2, 0.4], "acc_clean": 0.98, "acc_random": [0.975, 0.96, 0.9],
       "acc_targeted": [0.975, 0.97, 0.95], "confusion_random": [0.005, 0.01, 0.03],
       "confusion_targeted": [0.05, 0.2, 0.5], "confusion_clean": 0.004, "n_test": 10000, "n_source_test": 1000}
F10 = {"rates": [0.001, 0.01, 0.1], "success": [0.5, 0.95, 1.0], "clean_acc": [0.98, 0.975, 0.96],
       "clean_acc_unpoisoned": 0.98, "success_unpoisoned": 0.01, "n_test": 10000, "n_success_test": 9000}
F11 = {"n_targets": 50, "n_poisons": 5, "hits_transfer": 20, "hits_end2end": 4, "rel_dist_median": 0.05,
       "collided_fraction": 0.9}
F12 = {"recall": 0.9, "precision": 0.3, "n_poison": 100, "removal_multiple": 1.5, "success_before": 0.99,
       "success_after": 0.05, "clean_acc_after": 0.98}


@pytest.mark.parametrize("change, status", [
    ({}, SUP),
    ({"acc_random": [0.975, 0.93, 0.9]}, SUP),                 # cost exactly 5 points passes
    ({"acc_random": [0.975, 0.9299, 0.9]}, NOT),               # one test image more does not
    ({"confusion_targeted": [0.05, 0.06, 0.5]}, SUP),          # exactly 5 points above random
    ({"confusion_targeted": [0.05, 0.059, 0.5]}, NOT),         # one source image short
    ({"confusion_random": [0.005, 0.3, 0.03]}, NOT),           # random flips confuse the pair more
])
def test_f09_both_sides(change, status):
    v = j._f09({**F09, **change})
    assert v.status == status and (v.margin > 0) == (status == SUP)
    assert set(v.margins) == {"random-flip cost <= 5 points", "targeted confusion - random confusion >= 5 points"}


def test_f09_margins_and_rate():
    v = j._f09(F09)
    assert v.margins["random-flip cost <= 5 points"] == pytest.approx(0.96 - 0.98 + 0.05 + 0.5 / 10000)
    assert v.margins["targeted confusion - random confusion >= 5 points"] == pytest.approx(0.19 - 0.05 + 0.5 / 1000)
    assert v.numbers["confusion random"] == 0.01 and v.numbers["confusion unpoisoned"] == 0.004
    with pytest.raises(ValueError, match="rate 0.2"):
        j._f09({**F09, "rates": [0.1, 0.3, 0.4]})


@pytest.mark.parametrize("change, status", [
    ({}, SUP),
    ({"success": [0.5, 0.9, 1.0]}, SUP),                       # exactly 90 %
    ({"success": [0.5, 0.8999, 1.0]}, NOT),
    ({"clean_acc": [0.98, 0.97, 0.96]}, SUP),                   # drop exactly 1 point
    ({"clean_acc": [0.98, 0.9699, 0.96]}, NOT),
    ({"rates": [0.001, 0.02, 0.1]}, NOT),                       # the working rate is above 1 %
])
def test_f10_both_sides(change, status):
    v = j._f10({**F10, **change})
    assert v.status == status and (v.margin > 0) == (status == SUP)


def test_f10_picks_the_best_cheap_rate():
    v = j._f10(F10)
    assert v.numbers["rate"] == 0.01 and v.numbers["success"] == 0.95
    assert v.margin == pytest.approx(min(0.05 + 0.5 / 9000, 0.005 + 0.5 / 10000))
    assert "trigger success, unpoisoned victim" in findings.get("F10").baselines
    with pytest.raises(ValueError, match="<= 0.01"):
        j._f10({**F10, "rates": [0.05, 0.1, 0.2]})


@pytest.mark.parametrize("hits, status", [
    ((20, 4), SUP),
    ((9, 4), SUP),          # 9.5 / 4.5 = 2.11 x
    ((8, 4), NOT),          # 8.5 / 4.5 = 1.89 x
    ((1, 0), SUP),          # 1.5 / 0.5 = 3 x
    ((0, 0), INC),          # no target flips in either regime: the run cannot judge
    ((3, 3), NOT),
])
def test_f11_both_sides(hits, status):
    v = j._f11({**F11, "hits_transfer": hits[0], "hits_end2end": hits[1]})
    assert v.status == status
    if status != INC:
        assert (v.margin > 0) == (status == SUP)
    assert v.checks[0]["name"] == "targets flipped in either regime"


def test_f11_margin_is_corrected_log_ratio():
    v = j._f11(F11)
    assert v.margin == pytest.approx(math.log((20.5 / 4.5) / 2))
    assert v.numbers["success transfer"] == 0.4 and v.numbers["success end-to-end"] == 0.08
    with pytest.raises(ValueError, match="out of range"):
        j._f11({**F11, "hits_transfer": 51})


def test_f11_pooled_fisher_over_seeds():
    runs = [{**F11, "hits_transfer": t, "hits_end2end": e} for t, e in [(6, 1), (5, 2), (7, 0), (4, 1), (6, 2)]]
    out = j._f11_pooled(runs)
    p = stats.fisher_exact([[28, 222], [6, 244]]).pvalue
    assert out["numbers"]["Fisher p (pooled)"] == pytest.approx(p)
    assert out["numbers"]["successes transfer"] == 28 and out["numbers"]["targets per regime"] == 250
    assert out["margin"] == pytest.approx(math.log(0.05 / p)) and out["margin"] > 0
    same = j._f11_pooled([{**F11, "hits_transfer": 3, "hits_end2end": 3}] * 5)
    assert same["numbers"]["Fisher p (pooled)"] == pytest.approx(1.0) and same["margin"] < 0


def test_f11_aggregate_needs_the_pooled_test():
    f = findings.get("F11")
    assert f.pooled is j._f11_pooled
    # Every seed 2 / 50 vs 0 / 50: each run's corrected ratio is 5 x, but pooled 10 vs 0 of 250 ...
    runs = [{**F11, "hits_transfer": 2, "hits_end2end": 0} for _ in range(5)]
    agg = findings.aggregate(f, "mnist", runs)
    assert agg.pooled["numbers"]["Fisher p (pooled)"] < 0.05 and agg.status == SUP
    # ... while 1 / 50 vs 0 / 50 per seed (5 vs 0 pooled, p = 0.06) fails the pooled condition.
    runs = [{**F11, "hits_transfer": 1, "hits_end2end": 0} for _ in range(5)]
    agg = findings.aggregate(f, "mnist", runs)
    assert agg.pooled["margin"] < 0 and agg.status == NOT


@pytest.mark.parametrize("change, status", [
    ({}, SUP),
    ({"recall": 0.8}, SUP),                  # exactly 80 of 100 poisons
    ({"recall": 0.79}, NOT),
    ({"success_after": 0.2}, NOT),           # "< 20 %" is strict
    ({"success_after": 0.1999}, SUP),
])
def test_f12_both_sides(change, status):
    v = j._f12({**F12, **change})
    assert v.status == status and (v.margin > 0) == (status == SUP)
    with pytest.raises(ValueError, match="1.5 x"):
        j._f12({**F12, "removal_multiple": 2.0})


def test_missing_evidence_is_not_run():
    for fid, ev in (("F09", F09), ("F10", F10), ("F11", F11), ("F12", F12)):
        broken = dict(ev)
        broken.pop(next(iter(ev)))
        assert findings.get(fid).judge_evidence(broken).status == findings.NOT_RUN
