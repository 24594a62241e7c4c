"""Register v2 judges F01-F04 on constructed evidence, on both sides of every bar."""
from __future__ import annotations

import math

import pytest

from threatlab.report import findings
from threatlab.report.judges import extraction as j

SUP, NOT = findings.SUPPORTED, findings.NOT_SUPPORTED
B = [100, 200, 400, 800, 1600, 3200]

F01 = {"lr_agreement": 1.0, "lr_queries": 785, "lr_d": 784, "n_eval": 2000, "mlp_solver_agreement": 0.5,
       "mlp_substitute_agreement": 0.9, "mlp_queries": 785, "mlp_substitute_queries": 785}


@pytest.mark.parametrize("change, status", [
    ({}, SUP),
    ({"lr_agreement": 0.999}, SUP),                  # exactly at the bar (1998 / 2000) passes
    ({"lr_agreement": 0.9985}, NOT),                 # one image below it does not
    ({"lr_queries": 786}, NOT),                      # d + 2 queries
    ({"mlp_solver_agreement": 0.8}, SUP),            # gap exactly 10 points
    ({"mlp_solver_agreement": 0.8005}, NOT),         # one image short of 10 points
])
def test_f01_both_sides(change, status):
    v = j.f01({**F01, **change})
    assert v.status == status and set(v.margins) == {"LR agreement", "LR queries", "MLP substitute - solver"}
    assert (v.margin > 0) == (status == SUP)


def test_f01_margins_are_scaled_to_their_bars():
    v = j.f01(F01)
    assert v.margins["LR agreement"] == pytest.approx(1.0 + 0.5 / 2000 - 0.999)
    assert v.margins["LR queries"] == pytest.approx(math.log(786 / 785))
    assert v.margins["MLP substitute - solver"] == pytest.approx(0.4 + 0.5 / 2000 - 0.10)
    with pytest.raises(ValueError, match="same number of queries"):
        j.f01({**F01, "mlp_substitute_queries": 800})


def f02(probs, label, **kw):
    return {"budgets": B, "levels": [0.80, 0.85], "agreement": {"probs": probs, "label": label,
                                                                "rounded": probs}, **kw}


def test_f02_supported_when_labels_need_more_than_1_5x_at_both_levels():
    # probs: 0.80 at 100, 0.85 at 200; label: 0.80 at 400, 0.85 at 800 -> ratios 4 and 4.
    v = j.f02(f02([0.80, 0.85, 0.9, 0.92, 0.93, 0.94], [0.6, 0.7, 0.80, 0.85, 0.9, 0.92]))
    assert v.status == SUP and v.margin == pytest.approx(math.log(4 / 1.5))
    assert v.numbers["ratio 0.80"] == 4.0 and v.numbers["queries label 0.85"] == 800.0


def test_f02_interpolates_on_a_log_scale_around_the_bar():
    probs = [0.80, 0.86, 0.9, 0.92, 0.93, 0.94]           # 0.80 at 100, 0.85 between 100 and 200
    # label crosses 0.80 between 100 (0.70) and 200: at 0.84 the crossing is 100 * 2**(0.1/0.14) = 164
    # (ratio 1.64, above 1.5); at 0.90 it is 100 * 2**0.5 = 141 (ratio 1.41, below).
    above = j.f02(f02(probs, [0.70, 0.84, 0.95, 0.96, 0.97, 0.98]))
    below = j.f02(f02(probs, [0.70, 0.90, 0.95, 0.96, 0.97, 0.98]))
    assert above.margins["label/probs at 0.80"] == pytest.approx(math.log(2 ** (0.1 / 0.14) / 1.5))
    assert above.margins["label/probs at 0.80"] > 0 > below.margins["label/probs at 0.80"]
    assert below.status == NOT


def test_f02_never_reached_counts_as_twice_the_largest_budget():
    probs = [0.80, 0.85, 0.9, 0.92, 0.93, 0.94]
    v = j.f02(f02(probs, [0.6, 0.7, 0.80, 0.82, 0.83, 0.84]))        # label never reaches 0.85
    assert v.numbers["queries label 0.85"] == 6400.0 and v.numbers["reached probs/label 0.85"] == "True/False"
    assert v.margins["label/probs at 0.85"] == pytest.approx(math.log(6400 / 200 / 1.5))
    both = j.f02(f02([0.5] * 6, [0.4] * 6))                          # neither reaches anything
    assert both.status == NOT and both.margin == pytest.approx(math.log(1 / 1.5))
    assert all(math.isfinite(m) for m in both.margins.values())


def test_f02_one_level_failing_fails_the_claim():
    # Ratio 4 at 0.80 but 1 at 0.85: the smaller log-ratio decides.
    v = j.f02(f02([0.80, 0.82, 0.83, 0.85, 0.9, 0.9], [0.6, 0.7, 0.80, 0.85, 0.9, 0.9]))
    assert v.margins["label/probs at 0.80"] == pytest.approx(math.log(4 / 1.5))
    assert v.margins["label/probs at 0.85"] == pytest.approx(math.log(1 / 1.5)) and v.status == NOT
    v = j.f02(f02([0.80, 0.85, 0.9, 0.92, 0.93, 0.94], [0.6, 0.85, 0.9, 0.9, 0.9, 0.9]))
    assert v.margins["label/probs at 0.85"] == pytest.approx(math.log(1 / 1.5)) and v.status == NOT


def test_f02_refuses_other_levels_and_broken_curves():
    with pytest.raises(ValueError, match="register"):
        j.f02({**f02([0.8] * 6, [0.8] * 6), "levels": [0.8, 0.9]})
    with pytest.raises(ValueError, match="agreement values"):
        j.f02(f02([0.8] * 5, [0.8] * 6))
    f = findings.get("F02") if "F02" in findings.BY_ID else None
    if f is not None:
        assert f.judge_evidence({"budgets": B}).status == findings.NOT_RUN


def f03(**curves):
    base = {"jacobian": [0.5] * 6, "knockoff": [0.5] * 6, "active": [0.5] * 6, "pool": [0.5] * 6, "noise": [0.1] * 6}
    return {"budgets": B, "level": 0.8, "agreement": {**base, **curves}}


def test_f03_both_sides_of_half_the_pool_queries():
    pool = [0.6, 0.7, 0.80, 0.85, 0.9, 0.9]                           # 0.80 at 400
    # active at 100 (1/4 of pool): supported, margin log(4 / 2).
    v = j.f03(f03(pool=pool, active=[0.8, 0.85, 0.9, 0.9, 0.9, 0.9]))
    assert v.status == SUP and v.numbers["best strategy"] == "active"
    assert v.margin == pytest.approx(math.log(2.0))
    # knockoff at 400 (the same as pool): not supported.
    v = j.f03(f03(pool=pool, knockoff=[0.6, 0.7, 0.80, 0.85, 0.9, 0.9]))
    assert v.status == NOT and v.margin == pytest.approx(math.log(0.5))
    # Just under half (log interpolation): jacobian crosses 0.80 between 100 and 200 at
    # 100 * 2**(0.05/0.1) = 141 queries, pool at 400 -> ratio 2.83, supported; at 283
    # (between 200 and 400) the ratio is 1.41, not supported.
    assert j.f03(f03(pool=pool, jacobian=[0.75, 0.85, 0.9, 0.9, 0.9, 0.9])).status == SUP
    assert j.f03(f03(pool=pool, jacobian=[0.6, 0.75, 0.85, 0.9, 0.9, 0.9])).status == NOT


def test_f03_never_reached_and_the_noise_baseline_is_shown():
    # Pool never reaches 0.80 (counts 6400), jacobian reaches it at 3200: ratio 2 -> margin 0, not > 0.
    v = j.f03(f03(jacobian=[0.5, 0.5, 0.5, 0.5, 0.5, 0.8]))
    assert v.numbers["queries pool"] == 6400.0 and v.numbers["queries noise"] == 6400.0
    assert v.margin == pytest.approx(0.0) and v.status == NOT
    # No informed strategy reaches it either: ratio 1.
    assert j.f03(f03()).margin == pytest.approx(math.log(0.5))
    assert "queries pool" in findings.get("F03").baselines if "F03" in findings.BY_ID else True


F04 = {"transfer_success": [0.2, 0.45, 0.4], "noise_success": 0.15, "n_examples": 500, "eps": 0.3,
       "noise_linf_max": 0.3}


@pytest.mark.parametrize("change, status", [
    ({}, SUP),                                                  # 0.45 = 3 x 0.15 exactly, >= 30 %
    ({"transfer_success": [0.2, 0.448]}, NOT),                  # one example short of 3x
    ({"transfer_success": [0.30], "noise_success": 0.05}, SUP),  # exactly 30 %
    ({"transfer_success": [0.298], "noise_success": 0.05}, NOT),  # one example below 30 %
    ({"transfer_success": [0.31], "noise_success": 0.0}, SUP),   # no noise success: counts as 1/n
    ({"transfer_success": [0.004], "noise_success": 0.0}, NOT),
])
def test_f04_both_sides(change, status):
    v = j.f04({**F04, **change})
    assert v.status == status and all(math.isfinite(m) for m in v.margins.values())


def test_f04_checks_the_baseline_norm():
    with pytest.raises(ValueError, match="L-inf"):
        j.f04({**F04, "noise_linf_max": 0.35})


def test_findings_tuple_is_register_v2():
    assert [f.id for f in j.FINDINGS] == ["F01", "F02", "F03", "F04"]
    assert all(f.family == "extraction" for f in j.FINDINGS)
    assert "random pool" in j.FINDINGS[2].rule and "sign noise" in j.FINDINGS[3].rule
