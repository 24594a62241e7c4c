"""F05-F08 judges (register v2) on constructed evidence, on both sides of every bar.

Each condition is pushed just across its bar while the others stay comfortably met,
so the verdict and the sign of that condition's margin must follow it exactly.
"""
from __future__ import annotations

import copy
import math

import pytest

from threatlab.report import findings
from threatlab.report.findings import INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED

DB = math.log(10) / 10  # margin per dB


def judge(fid, ev):
    return findings.get(fid).judge_evidence(ev)


# ----------------------------------------------------------------------------- F05

F05 = {"gap": [0.0, 0.1, 0.2, 0.3, 0.4], "auc": [0.5, 0.55, 0.6, 0.7, 0.8], "n_train": [5, 4, 3, 2, 1]}


def test_f05_rho_on_both_sides_of_0_8():
    v = judge("F05", F05)
    assert v.status == SUPPORTED and v.margin == pytest.approx(0.2)
    # One swap of adjacent AUCs: rho = 1 - 6 * 2 / (5 * 24) = 0.9 > 0.8.
    v = judge("F05", {**F05, "auc": [0.5, 0.6, 0.55, 0.7, 0.8]})
    assert v.status == SUPPORTED and v.margin == pytest.approx(0.1)
    # Two swaps: rho = 1 - 6 * 4 / 120 = 0.8 exactly: the bar is >=, the margin 0 is
    # not > 0, so the claim needs rho strictly above it to count as shown.
    v = judge("F05", {**F05, "auc": [0.55, 0.5, 0.6, 0.8, 0.7]})
    assert v.margin == pytest.approx(0.0, abs=1e-12) and v.numbers["spearman rho"] == pytest.approx(0.8)
    # Ranks 3, 1, 2, 5, 4: sum d^2 = 8, rho = 1 - 48 / 120 = 0.6.
    v = judge("F05", {**F05, "auc": [0.6, 0.5, 0.55, 0.8, 0.7]})
    assert v.status == NOT_SUPPORTED and v.margin == pytest.approx(-0.2)


def test_f05_fewer_than_five_targets_is_inconclusive():
    v = judge("F05", {"gap": [0.0, 0.1, 0.2, 0.3], "auc": [0.5, 0.6, 0.7, 0.8]})
    assert v.status == INCONCLUSIVE and "targets" in v.note


# ----------------------------------------------------------------------------- F06

F06 = {"auc": {"loss": 0.60, "confidence": 0.58, "entropy": 0.57, "class_loss": 0.62, "shadow": 0.63,
               "lira": 0.66, "lira_offline": 0.64, "label_only": 0.55},
       "tpr_at_0.1%": {"loss": 0.002, "confidence": 0.001, "entropy": 0.001, "class_loss": 0.004, "shadow": 0.003,
                       "lira": 0.02, "lira_offline": 0.012, "label_only": 0.0},
       "tpr_at_1%": {}, "shadow_free": ["loss", "confidence", "entropy", "class_loss"], "n_reference": 16,
       "members": 4000, "candidates": 8000, "shadow_disjoint": True}


def test_f06_auc_condition_both_sides():
    v = judge("F06", F06)
    assert v.status == SUPPORTED
    assert v.margins["AUC(best shadow-free) - (AUC(shadow) - 0.03)"] == pytest.approx(0.62 - 0.63 + 0.03)
    assert v.numbers["best shadow-free"] == "class_loss"
    ev = copy.deepcopy(F06)
    ev["auc"]["shadow"] = 0.655                                   # best free 0.62 < 0.655 - 0.03 = 0.625
    v = judge("F06", ev)
    assert v.status == NOT_SUPPORTED and v.margin == pytest.approx(-0.005)
    ev["auc"]["shadow"] = 0.645                                   # 0.62 >= 0.615
    assert judge("F06", ev).status == SUPPORTED


def test_f06_lira_ratio_both_sides_and_offline_is_not_an_other():
    key = "log(TPR@0.1%(LiRA) / best other) - log 2"
    v = judge("F06", F06)
    assert v.margins[key] == pytest.approx(math.log(0.02 / 0.004 / 2))
    assert v.numbers["best other"] == "class_loss"                # lira_offline (0.012) is not counted
    ev = copy.deepcopy(F06)
    ev["tpr_at_0.1%"]["lira"] = 0.0079                            # < 2 x 0.004
    v = judge("F06", ev)
    assert v.status == NOT_SUPPORTED and v.margins[key] == pytest.approx(math.log(0.0079 / 0.008))
    ev["tpr_at_0.1%"]["lira"] = 0.0081
    assert judge("F06", ev).status == SUPPORTED


def test_f06_zero_tpr_stands_in_as_one_member():
    ev = copy.deepcopy(F06)
    ev["tpr_at_0.1%"].update({k: 0.0 for k in ("loss", "confidence", "entropy", "class_loss", "shadow")})
    ev["tpr_at_0.1%"]["lira"] = 3 / 4000                          # 3 members vs the 1-member floor
    v = judge("F06", ev)
    assert v.status == SUPPORTED and v.margins["log(TPR@0.1%(LiRA) / best other) - log 2"] == pytest.approx(
        math.log(3 / 2))
    ev["tpr_at_0.1%"]["lira"] = 0.0                               # nothing either side: ratio 1 < 2
    v = judge("F06", ev)
    assert v.status == NOT_SUPPORTED and math.isfinite(v.margin)


def test_f06_power_checks():
    assert judge("F06", {**F06, "n_reference": 8}).status == INCONCLUSIVE
    v = judge("F06", {**F06, "shadow_disjoint": False})
    assert v.status == INCONCLUSIVE and "disjoint" in v.note
    bad = copy.deepcopy(F06)
    del bad["auc"]["shadow"]
    assert findings.get("F06").judge_evidence(bad).status == NOT_RUN


# ----------------------------------------------------------------------------- F07

F07 = {"accuracy": {"confidences/shallow": 0.9, "label/shallow": 0.3, "confidences/deep": 0.5, "label/deep": 0.1},
       "prototype_match": {"confidences/shallow": 0.7, "label/shallow": 0.2}, "classes": 10, "restarts": 3,
       "evaluator_test_acc": 0.98}


def test_f07_both_bars_both_sides():
    v = judge("F07", F07)
    assert v.status == SUPPORTED and v.margin == pytest.approx(0.1)
    assert v.numbers["chance"] == pytest.approx(0.1) and v.numbers["prototype match confidences shallow"] == 0.7
    low = {**F07, "accuracy": {**F07["accuracy"], "confidences/shallow": 0.79}}
    v = judge("F07", low)
    assert v.status == NOT_SUPPORTED and v.margin == pytest.approx(-0.01)
    tie = {**F07, "accuracy": {**F07["accuracy"], "label/shallow": 0.9}}
    v = judge("F07", tie)                                          # label-only as good: not "above"
    assert v.status == NOT_SUPPORTED and v.margin == pytest.approx(0.0)
    above = {**F07, "accuracy": {**F07["accuracy"], "label/shallow": 0.89}}
    assert judge("F07", above).status == SUPPORTED
    assert findings.get("F07").baselines == ("chance",)


# ----------------------------------------------------------------------------- F08

F08 = {"rows": {"sigmoid_lenet": {"psnr_vs_batch": [40.0, 30.0, 20.0], "psnr_vs_noise": [38.0, 20.0, 12.5],
                                  "label_acc_batch1": 1.0},
                "relu_mlp": {"psnr_vs_batch": [12.0, 11.0, 10.0], "psnr_vs_noise": [11.0, 10.0, 9.0]}},
       "batch_sizes": [1, 2, 4], "noise": [0.0, 0.1, 1.0], "baseline_psnr": {"black": 10.5, "mean_image": 12.0}}


def _f08(b1=None, end=None, black=None, mean=None):
    ev = copy.deepcopy(F08)
    row = ev["rows"]["sigmoid_lenet"]
    if b1 is not None:
        row["psnr_vs_batch"][0] = b1
    if end is not None:
        row["psnr_vs_noise"][-1] = end
    if black is not None:
        ev["baseline_psnr"]["black"] = black
    if mean is not None:
        ev["baseline_psnr"]["mean_image"] = mean
    return judge("F08", ev)


def test_f08_margins_are_db_as_log_mse_ratios():
    v = _f08()
    assert v.status == SUPPORTED
    assert v.margins["PSNR(b1) - 25 dB"] == pytest.approx(15 * DB)
    assert v.margins["PSNR(b1) - (better baseline + 10 dB)"] == pytest.approx((40 - 22) * DB)
    assert v.margins["3 dB - |PSNR(max noise) - better baseline|"] == pytest.approx(2.5 * DB)
    assert v.numbers["PSNR mean image (dB)"] == 12.0 and v.numbers["ReLU MLP PSNR batch 1 (dB)"] == 12.0


def test_f08_25_db_bar_both_sides():
    # Baselines low enough that only the 25 dB bar is near.
    assert _f08(b1=24.9, black=5.0, mean=5.0, end=6.0).status == NOT_SUPPORTED
    assert _f08(b1=25.1, black=5.0, mean=5.0, end=6.0).status == SUPPORTED


def test_f08_baseline_bar_both_sides_uses_the_better_baseline():
    # Better baseline 20 dB (mean image): b1 needs > 30 dB.
    assert _f08(b1=29.9, black=10.0, mean=20.0, end=20.0).status == NOT_SUPPORTED
    assert _f08(b1=30.1, black=10.0, mean=20.0, end=20.0).status == SUPPORTED
    assert _f08(b1=29.9, black=20.0, mean=10.0, end=20.0).status == NOT_SUPPORTED


def test_f08_noise_endpoint_both_sides_and_not_monotonicity():
    # A bump in the middle of the noise curve does not matter: endpoints only.
    ev = copy.deepcopy(F08)
    ev["rows"]["sigmoid_lenet"]["psnr_vs_noise"] = [38.0, 40.0, 13.0]
    assert judge("F08", ev).status == SUPPORTED
    assert _f08(end=15.1).status == NOT_SUPPORTED                 # leak left: > 3 dB above
    assert _f08(end=14.9).status == SUPPORTED
    # "Within 3 dB" as written is two-sided: far below the baseline fails too.
    v = _f08(end=8.9)
    assert v.status == NOT_SUPPORTED and v.margin == pytest.approx(-0.1 * DB)
    assert _f08(end=9.1).status == SUPPORTED


def test_f08_checks_and_missing_batch_one():
    ev = copy.deepcopy(F08)
    ev["noise"] = [0.0]
    ev["rows"]["sigmoid_lenet"]["psnr_vs_noise"] = [38.0]
    assert judge("F08", ev).status == INCONCLUSIVE
    ev = copy.deepcopy(F08)
    ev["batch_sizes"] = [2, 4, 8]
    assert judge("F08", ev).status == NOT_RUN
    assert findings.get("F08").baselines == ("PSNR black (dB)", "PSNR mean image (dB)")
