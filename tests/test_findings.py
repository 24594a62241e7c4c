"""The judges decide from numbers: each gets evidence that meets and misses its bar."""
import pytest

from threatlab.report import findings
from threatlab.errors import ConfigError
from threatlab.report.findings import NOT_RUN, NOT_SUPPORTED, SUPPORTED

GOOD = {
    "F01": {"lr_agreement": 1.0, "lr_queries": 785, "lr_d": 784, "n_eval": 2000, "mlp_solver_agreement": 0.5,
            "mlp_substitute_agreement": 0.9, "mlp_queries": 785, "mlp_substitute_queries": 785},
    "F02": {"budgets": [100, 200, 400, 800], "levels": [0.8, 0.85],
            "agreement": {"probs": [0.8, 0.85, 0.9, 0.92], "rounded": [0.75, 0.8, 0.88, 0.9], "label": [0.6, 0.7, 0.8, 0.85]}},
    "F03": {"budgets": [100, 200, 400, 800], "level": 0.8,
            "agreement": {"noise": [0.1] * 4, "pool": [0.6, 0.7, 0.8, 0.85], "jacobian": [0.8, 0.85, 0.9, 0.9],
                          "knockoff": [0.5, 0.6, 0.7, 0.8], "active": [0.7, 0.75, 0.85, 0.9]}},
    "F04": {"transfer_success": [0.2, 0.6], "noise_success": 0.05, "n_examples": 500, "eps": 0.3, "noise_linf_max": 0.3},
    "F05": {"gap": [0.0, 0.1, 0.2, 0.3, 0.4], "auc": [0.5, 0.55, 0.6, 0.7, 0.8]},
    "F06": {"auc": {"loss": 0.60, "class_loss": 0.61, "shadow": 0.61, "lira": 0.65},
            "tpr_at_0.1%": {"loss": 0.002, "class_loss": 0.002, "shadow": 0.003, "lira": 0.02},
            "shadow_free": ["loss", "class_loss"], "n_reference": 16, "members": 1000, "shadow_disjoint": True},
    "F07": {"accuracy": {"confidences/shallow": 0.9, "label/shallow": 0.3, "confidences/deep": 0.5}, "classes": 10},
    "F08": {"rows": {"sigmoid_lenet": {"psnr_vs_batch": [40.0], "psnr_vs_noise": [40, 20, 12]}}, "batch_sizes": [1],
            "noise": [0.0, 0.1, 1.0], "baseline_psnr": {"black": 10.0, "mean_image": 11.0}},
    "F09": {"rates": [0.2], "acc_clean": 0.98, "acc_random": [0.96], "acc_targeted": [0.97], "confusion_random": [0.01],
            "confusion_targeted": [0.2], "confusion_clean": 0.004, "n_test": 10000, "n_source_test": 1000},
    "F10": {"rates": [0.001, 0.01, 0.1], "success": [0.5, 0.95, 1.0], "clean_acc": [0.98, 0.975, 0.96], "clean_acc_unpoisoned": 0.98,
            "success_unpoisoned": 0.01, "n_test": 10000, "n_success_test": 9000},
    "F11": {"n_targets": 50, "n_poisons": 5, "hits_transfer": 20, "hits_end2end": 4, "rel_dist_median": 0.05,
            "collided_fraction": 0.9},
    "F12": {"recall": 0.9, "precision": 0.3, "n_poison": 100, "removal_multiple": 1.5, "success_before": 0.99,
            "success_after": 0.05, "clean_acc_after": 0.98},
    "F13": {"median": {"jsma": {"l0": 20, "l2": 3.0, "linf": 1.0}, "cw_l2": {"l0": 300, "l2": 1.2, "linf": 0.4},
                       "deepfool": {"l0": 400, "l2": 1.4, "linf": 0.35}, "min_linf": {"l0": 600, "l2": 2.5, "linf": 0.12}}},
    "F14": {"eps": [0.1, 0.2, 0.3], "success": {"pgd_linf": [0.5, 0.95, 1.0], "fgsm": [0.3, 0.6, 0.8]},
            "median_l2": {"cw_l2": 1.2, "deepfool": 1.4}, "passes_per_example": {"cw_l2": 1000.0, "deepfool": 40.0}},
    "F15": {"levels": [0.1, 0.25, 0.5], "best": {"score": [20, 60, 200], "decision": [500, 1500, 4000]},
            "budget": {"score": 10000, "decision": 10000}},
    "F16": {"untargeted_at_0.3": 0.6, "targeted_at_0.3": 0.1},
    "F17": {"fooled_in_90pct": {"clean": 0.0, "plain": 0.1, "eot": 0.5}, "clean_accuracy_under_transform": 0.97},
    "F18": {"robust_at": 0.8, "robust_undefended": 0.0, "clean_at": 0.97, "clean_undefended": 0.99,
            "train_passes_at": 40000, "train_passes_standard": 10000, "masked_plain_robust": 0.9,
            "masked_adaptive_robust": 0.1},
}

BAD = {  # one number pushed across each bar
    "F01": {**GOOD["F01"], "lr_queries": 2000},
    "F02": {**GOOD["F02"], "agreement": {"probs": [0.6, 0.7, 0.8, 0.85], "label": [0.6, 0.7, 0.8, 0.85]}},
    "F03": {**GOOD["F03"], "agreement": {**GOOD["F03"]["agreement"], "jacobian": [0.6, 0.7, 0.8, 0.85],
                                         "active": [0.6, 0.7, 0.8, 0.85]}},
    "F04": {**GOOD["F04"], "transfer_success": [0.2, 0.25]},
    "F05": {"gap": [0.0, 0.1, 0.2, 0.3, 0.4], "auc": [0.8, 0.7, 0.6, 0.55, 0.5]},
    "F06": {**GOOD["F06"], "auc": {"loss": 0.6, "class_loss": 0.6, "shadow": 0.7}},
    "F07": {"accuracy": {"confidences/shallow": 0.7, "label/shallow": 0.3}, "classes": 10},
    "F08": {**GOOD["F08"], "rows": {"sigmoid_lenet": {"psnr_vs_batch": [40.0], "psnr_vs_noise": [40, 45, 20]}}},
    "F09": {**GOOD["F09"], "acc_random": [0.90]},
    "F10": {**GOOD["F10"], "clean_acc": [0.98, 0.95, 0.96]},
    "F11": {**GOOD["F11"], "hits_end2end": 15},
    "F12": {**GOOD["F12"], "success_after": 0.5},
    "F13": {"median": {**GOOD["F13"]["median"], "jsma": {"l0": 350, "l2": 3.0, "linf": 1.0}}},
    "F14": {**GOOD["F14"], "median_l2": {"cw_l2": 1.5, "deepfool": 1.4}},
    "F15": {**GOOD["F15"], "best": {"score": [20, 60, 900], "decision": [500, 1500, 2000]}},
    "F16": {"untargeted_at_0.3": 0.2, "targeted_at_0.3": 0.1},
    "F17": {**GOOD["F17"], "fooled_in_90pct": {"clean": 0.0, "plain": 0.3, "eot": 0.45}},
    "F18": {**GOOD["F18"], "robust_at": 0.4},
}


def results_with(evidence):
    docs = {}
    for fid, ev in evidence.items():
        nb = findings.get(fid).notebook
        docs.setdefault(nb, {"evidence": {}})["evidence"][fid] = ev
    return docs


def test_eighteen_findings_in_order():
    assert [f.id for f in findings.FINDINGS] == [f"F{i:02d}" for i in range(1, 19)]
    assert {f.family for f in findings.FINDINGS} == {"extraction", "inversion", "poisoning", "adversarial"}


@pytest.mark.parametrize("fid", sorted(GOOD))
def test_judge_supported_and_not_supported(fid):
    f = findings.get(fid)
    assert f.judge(results_with({fid: GOOD[fid]})).status == SUPPORTED
    assert f.judge(results_with({fid: BAD[fid]})).status == NOT_SUPPORTED


def test_not_run_without_results_or_evidence():
    assert findings.get("F13").judge({}).status == NOT_RUN
    v = findings.get("F13").judge({"04_adversarial": {"evidence": {}}})
    assert v.status == NOT_RUN and "no evidence" in v.note
    v = findings.get("F13").judge(results_with({"F13": {"n_common": 3}}))
    assert v.status == NOT_RUN and "incomplete" in v.note


def test_unknown_finding():
    with pytest.raises(ConfigError, match="F99"):
        findings.get("F99")


def test_table_rows_have_every_finding():
    rows = findings.table_rows(results_with(GOOD))
    assert len(rows) == 18 and all(r["verdict"] == SUPPORTED for r in rows)
