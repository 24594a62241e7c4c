"""Synthetic evidence for the 18 judges, shaped exactly like what notebooks 01-04 record
(figures/sweep/points.jsonl), with plausible magnitudes: for each finding one case that
clearly holds, one that clearly fails and one whose bar the design puts out of reach."""
import copy

from threatlab.report import findings
from threatlab.report.findings import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED


def _with(base, **changes):
    e = copy.deepcopy(base)
    for path, value in changes.items():
        cur = e
        keys = path.split("__")
        for k in keys[:-1]:
            cur = cur[k]
        cur[keys[-1]] = value
    return e


F01 = {"lr_agreement": 1.0, "lr_d": 784, "lr_max_abs_weight": 0.49, "lr_max_param_error": 2e-7, "lr_queries": 785,
       "mlp_queries": 785, "mlp_solver_agreement": 0.15, "mlp_substitute_agreement": 0.93,
       "mlp_substitute_queries": 785, "mlp_distinct_queries": 785, "mlp_shared_queries": True,
       "mlp_noise_solver_agreement": 0.12, "n_eval": 2000, "architecture": "mlp", "victim_accuracy": 0.975}
F02 = {"agreement": {"label": [0.61, 0.72, 0.80, 0.85, 0.88, 0.90], "probs": [0.74, 0.81, 0.86, 0.89, 0.91, 0.92],
                     "rounded": [0.73, 0.80, 0.85, 0.88, 0.90, 0.91]},
       "budgets": [100, 200, 400, 800, 1600, 3200], "levels": [0.8, 0.85]}
F03_GRID = [25, 50, 100, 200, 400, 800, 1600, 3200]
F03 = {"agreement": {"active": [0.62, 0.72, 0.80, 0.85, 0.89, 0.91, 0.92, 0.93],
                     "jacobian": [0.40, 0.50, 0.60, 0.66, 0.70, 0.73, 0.75, 0.76],
                     "knockoff": [0.30, 0.38, 0.45, 0.50, 0.55, 0.58, 0.60, 0.61],
                     "noise": [0.10, 0.11, 0.12, 0.13, 0.15, 0.18, 0.20, 0.21],
                     "pool": [0.45, 0.55, 0.65, 0.72, 0.80, 0.85, 0.88, 0.90]},
       "baseline": "pool", "budgets": F03_GRID, "level": 0.8}
F04 = {"eps": 0.3, "n_examples": 500, "noise_linf_max": 0.3, "noise_linf_min": 0.3, "noise_success": 0.08,
       "transfer_linf_max": [0.3] * 3, "transfer_success": [0.62, 0.71, 0.76], "victim_queries": 3500}
F05 = {"auc": [0.53, 0.55, 0.58, 0.62, 0.68], "gap": [0.02, 0.05, 0.09, 0.14, 0.2], "n_train": [4000, 2000, 1000, 500, 250]}
F06 = {"auc": {"class_loss": 0.66, "class_threshold": 0.645, "confidence": 0.64, "entropy": 0.63,
               "label_only": 0.6, "lira": 0.74, "lira_offline": 0.7, "loss": 0.655, "shadow": 0.665},
       "candidates": 4000, "members": 2000, "n_reference": 16, "shadow_disjoint": True,
       "sides": {"shadow_free": ["loss", "confidence", "entropy", "class_threshold"],
                 "shadow_based": ["shadow", "class_loss"]},
       "half": {"best": {"shadow_free": "loss", "shadow_based": "shadow"},
                "auc": {"shadow_free": 0.652, "shadow_based": 0.668},
                "selection_auc": {"shadow_free": {"loss": 0.658, "confidence": 0.64, "entropy": 0.63,
                                                  "class_threshold": 0.645},
                                  "shadow_based": {"shadow": 0.662, "class_loss": 0.66}}},
       "tpr_at_0.1%": {"class_loss": 0.002, "class_threshold": 0.001, "confidence": 0.0, "entropy": 0.0005,
                       "label_only": 0.0, "lira": 0.06, "lira_offline": 0.03, "loss": 0.001, "shadow": 0.003},
       "tpr_at_1%": {"class_loss": 0.02, "class_threshold": 0.012, "confidence": 0.011, "entropy": 0.011,
                     "label_only": 0.0, "lira": 0.15, "lira_offline": 0.07, "loss": 0.011, "shadow": 0.02}}
F07 = {"accuracy": {"confidences/deep": 0.9, "confidences/shallow": 0.966667, "label/deep": 0.2, "label/shallow": 0.2},
       "classes": 10, "evaluator_test_acc": 0.98,
       "prototype_match": {"confidences/deep": 1.0, "confidences/shallow": 1.0, "label/deep": 0.4, "label/shallow": 0.3},
       "restarts": 3, "evaluator_architecture": "lenet5"}
F08 = {"baseline_psnr": {"black": 10.5, "mean_image": 11.9}, "batch_sizes": [1, 2, 4],
       "noise": [0.0, 1e-4, 1e-3, 1e-2, 1e-1],
       "rows": {"relu_mlp": {"label_acc_batch1": 1.0, "psnr_vs_batch": [12.6, 9.0, 9.2],
                             "psnr_vs_noise": [11.1, 10.0, 6.5, 4.1, 3.9]},
                "sigmoid_lenet": {"label_acc_batch1": 1.0, "psnr_vs_batch": [45.0, 28.0, 16.0],
                                  "psnr_vs_noise": [54.0, 40.0, 3.8, 2.9, 2.9]}}}
F09 = {"acc_clean": 0.955, "acc_random": [0.95, 0.945, 0.92], "rates": [0.1, 0.2, 0.4],
       "budgets": [0.02, 0.05, 0.1], "confusion_random_budget": [0.006, 0.008, 0.012],
       "confusion_targeted_budget": [0.1, 0.45, 0.85], "spent_targeted": [200, 500, 1000],
       "confusion_clean": 0.005, "n_source_test": 1000, "n_test": 10000, "source": 4, "target": 9,
       "architecture": "mlp", "victim_accuracy": 0.955}
F10 = {"clean_acc": [0.985, 0.984, 0.984, 0.983, 0.98, 0.975], "clean_acc_unpoisoned": 0.985, "n_success_test": 9000,
       "n_test": 10000, "rates": [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1], "architecture": "lenet5",
       "success": [0.05, 0.2, 0.9, 0.975, 0.996, 0.999], "success_unpoisoned": 0.003}
F11 = {"collided_fraction": 0.96, "hits_end2end": 3, "hits_transfer": 30, "hits_control_transfer": 1,
       "hits_control_end2end": 0, "n_poisons": 1, "n_targets": 50, "rel_dist_median": 0.01,
       "architecture": "mlp", "victim_accuracy": 0.955}
_F12_RUN = {"clean_acc_after": 0.98, "n_poison": 50, "precision": 0.45, "recall": 0.97, "success_after": 0.01,
            "success_before": 0.99, "poisons_left": 1}
F12 = {"removal_multiple": 1.5, "runs": [_F12_RUN, _F12_RUN], "architecture": "cnn", "victim_accuracy": 0.985}
F13 = {"architecture": "lenet5", "dataset": "mnist", "eps_max": 1.0,
       "failures": {"adversarial": {"l0": 0, "linf": 0}, "standard": {"l0": 0, "linf": 0}},
       "median_l0": {"adversarial": 9.0, "standard": 14.0}, "median_linf": {"adversarial": 0.33, "standard": 0.11},
       "n": 60, "n_pixels": 784, "pointwise_smaller": {"adversarial": 51, "standard": 12}, "victim_accuracy": 0.985}
F14 = {"eps": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3], "eps_at_90": 0.15, "median_l2": {"cw_l2": 1.3, "deepfool": 1.45},
       "passes_per_example": {"cw_l2": 1001.0, "deepfool": 80.7},
       "success": {"fgsm": [0.05, 0.15, 0.35, 0.55, 0.7, 0.8], "pgd_linf": [0.08, 0.35, 0.8, 0.98, 1.0, 1.0]}}
F15 = {"best": {"decision": [300.0, 900.0, 2400.0], "score": [10.0, 40.0, 190.0]},
       "budget": {"decision": 10000, "score": 10000}, "eps_l2": 3.0, "examples": 60, "levels": [0.1, 0.25, 0.5],
       "queries": {"decision": {"boundary": [1571.0, 3601.0, 5891.0], "hopskipjump": [300.0, 900.0, 2400.0]},
                   "score": {"nes_l2": [409.0, 817.0, 970.0], "simba": [160.0, 290.0, 503.0],
                             "square_l2": [10.0, 40.0, 190.0]}}}
F16 = {"eps": [0.1, 0.2, 0.3], "noise": [0.01, 0.03, 0.08], "targeted": [0.05, 0.2, 0.3], "targeted_at_0.3": 0.3,
       "untargeted": [0.4, 0.65, 0.82], "untargeted_at_0.3": 0.82}
F17 = {"clean_accuracy": 0.985, "clean_accuracy_under_transform": 0.975, "confidence": 0.0, "draws": 20, "eps": 0.1,
       "fooled_in_90pct": {"clean": 0.0, "eot": 0.8, "plain": 0.45}, "loss": "margin",
       "mean_over_draws": {"clean": 0.06, "eot": 0.9, "plain": 0.7}, "transform": "RandomTransform(...)"}
F18 = {"clean_at": 0.983, "clean_undefended": 0.986, "eps": 0.3, "masked_adaptive_robust": 0.0,
       "masked_plain_robust": 0.99, "method": "pgd", "optimizer_steps": 5008, "robust_at": 0.8,
       "robust_undefended": 0.0, "train_passes_at": 8.0, "train_passes_standard": 1.0, "worst_case_at": 0.72,
       "worst_case_undefended": 0.0}
MNIST, FASHION = "mnist", "fashion_mnist"

#: (finding, case, evidence, data set, expected status, a word the note must hold)
CASES = [
    ("F01", "holds", F01, MNIST, SUPPORTED, ""),
    ("F01", "fails", _with(F01, mlp_solver_agreement=0.88), MNIST, NOT_SUPPORTED, ""),
    ("F01", "identity broken", _with(F01, lr_agreement=0.93), MNIST, INCONCLUSIVE, "check failed"),
    ("F01", "by design", _with(F01, mlp_solver_agreement=0.95, mlp_substitute_agreement=0.97), MNIST,
     INCONCLUSIVE, "decided by design"),
    # Stored as log10 (results round to 6 decimals): 2e-7 / 0.49 passes, 1.4e-4 relative fails the check.
    ("F01", "identity within 1e-6, log10 form", _with(F01, lr_log10_rel_error=-6.39), MNIST, SUPPORTED, ""),
    ("F01", "float32 answers miss 1e-6", _with(F01, lr_log10_rel_error=-3.85), MNIST, INCONCLUSIVE, "check failed"),
    ("F01", "MLP victim under-trained", _with(F01, victim_accuracy=0.93), MNIST, INCONCLUSIVE, "victim under-trained"),
    ("F02", "holds", F02, MNIST, SUPPORTED, ""),
    ("F02", "fails", _with(F02, agreement__label=[0.74, 0.81, 0.86, 0.89, 0.91, 0.92]), MNIST, NOT_SUPPORTED, ""),
    # Probabilities never reach 0.85: both sides count 3200 x 2, so the ratio is at most 1.
    ("F02", "by design", _with(F02, agreement__probs=[0.70, 0.76, 0.80, 0.82, 0.83, 0.84]), MNIST, INCONCLUSIVE,
     "decided by design"),
    ("F03", "holds", F03, MNIST, SUPPORTED, ""),
    ("F03", "fails", _with(F03, agreement__active=[0.45, 0.55, 0.65, 0.72, 0.80, 0.85, 0.88, 0.90]), MNIST,
     NOT_SUPPORTED, ""),
    ("F03", "by design", _with(F03, budgets=[100, 200, 400, 800, 1600, 3200, 6400, 12800]), MNIST, INCONCLUSIVE,
     "decided by design"),
    ("F04", "holds", F04, MNIST, SUPPORTED, ""),
    ("F04", "fails", _with(F04, transfer_success=[0.12, 0.15, 0.2]), MNIST, NOT_SUPPORTED, ""),
    ("F04", "by design", _with(F04, noise_success=0.35, transfer_success=[0.84, 0.9, 0.95]), FASHION,
     INCONCLUSIVE, "decided by design"),
    ("F05", "holds", F05, MNIST, SUPPORTED, ""),
    ("F05", "fails", _with(F05, auc=[0.55, 0.53, 0.62, 0.58, 0.56]), MNIST, NOT_SUPPORTED, ""),
    ("F05", "too few targets", _with(F05, auc=[0.55, 0.6, 0.7], gap=[0.1, 0.2, 0.3]), MNIST, INCONCLUSIVE,
     "power check failed"),
    ("F06", "holds", F06, MNIST, SUPPORTED, ""),
    ("F06", "fails", _with(F06, half__auc__shadow_based=0.71), MNIST, NOT_SUPPORTED, ""),
    # The full-row AUCs are shown only: a shadow attack far ahead on all rows decides nothing.
    ("F06", "holds on the reporting half", _with(F06, auc__shadow=0.71), MNIST, SUPPORTED, ""),
    ("F06", "by design", _with(F06, **{"tpr_at_0.1%__shadow": 0.6}), MNIST, INCONCLUSIVE, "decided by design"),
    ("F07", "holds", F07, MNIST, SUPPORTED, ""),
    ("F07", "fails", _with(F07, accuracy={"confidences/deep": 0.5, "confidences/shallow": 0.6, "label/deep": 0.2,
                          "label/shallow": 0.2}), MNIST, NOT_SUPPORTED, ""),
    ("F07", "by design", _with(F07, accuracy={"confidences/deep": 1.0, "confidences/shallow": 1.0, "label/deep": 1.0,
                                              "label/shallow": 1.0}), MNIST, INCONCLUSIVE, "decided by design"),
    ("F07", "evaluator under-trained", _with(F07, evaluator_test_acc=0.9), MNIST, INCONCLUSIVE,
     "victim under-trained"),
    ("F08", "holds", F08, MNIST, SUPPORTED, ""),
    ("F08", "fails", _with(F08, rows__sigmoid_lenet__psnr_vs_batch=[45.0, 42.0, 40.0]), MNIST, NOT_SUPPORTED, ""),
    ("F08", "by design", _with(F08, rows__sigmoid_lenet__psnr_vs_batch=[8.0, 7.0, 6.0],
                               rows__sigmoid_lenet__psnr_vs_noise=[8.0, 7.0, 6.0, 6.0, 6.0]), MNIST, INCONCLUSIVE,
     "decided by design"),     # PSNR(batch 1) of 8 dB cannot drop by 10 dB (PSNR >= 0)
    ("F08", "no batch 4", _with(F08, batch_sizes=[1, 2], rows__sigmoid_lenet__psnr_vs_batch=[45.0, 28.0]), MNIST,
     INCONCLUSIVE, "power check failed"),
    ("F09", "holds", F09, MNIST, SUPPORTED, ""),
    ("F09", "fails", _with(F09, confusion_targeted_budget=[0.02, 0.1, 0.3]), MNIST, NOT_SUPPORTED, ""),
    ("F09", "by design", _with(F09, confusion_random_budget=[0.8, 0.85, 0.9], confusion_targeted_budget=[0.9, 0.97, 0.99]),
     MNIST, INCONCLUSIVE, "decided by design"),   # random flips already confuse 85 %: +20 points is out of reach
    ("F09", "victim under-trained", _with(F09, acc_clean=0.9), MNIST, INCONCLUSIVE, "victim under-trained"),
    ("F10", "holds", F10, MNIST, SUPPORTED, ""),
    ("F10", "fails", _with(F10, success=[0.01, 0.05, 0.3, 0.6, 0.99, 1.0]), MNIST, NOT_SUPPORTED, ""),
    ("F10", "by design", _with(F10, clean_acc_unpoisoned=0.005, clean_acc=[0.004] * 6, architecture=None), MNIST,
     INCONCLUSIVE, "decided by design"),   # no accuracy check without the architecture: G0 decides
    ("F10", "victim under-trained", _with(F10, clean_acc_unpoisoned=0.95, clean_acc=[0.95] * 6), MNIST,
     INCONCLUSIVE, "victim under-trained"),
    ("F11", "holds", F11, MNIST, SUPPORTED, ""),
    ("F11", "fails", _with(F11, hits_transfer=5, hits_end2end=4), MNIST, NOT_SUPPORTED, ""),
    ("F11", "by design", _with(F11, hits_control_transfer=40, hits_transfer=45), MNIST, INCONCLUSIVE,
     "decided by design"),   # the control already flips 80 %: +30 points is out of reach
    ("F11", "poisons did not collide", _with(F11, collided_fraction=0.5), MNIST, INCONCLUSIVE, "power check failed"),
    ("F12", "holds", F12, MNIST, SUPPORTED, ""),
    ("F12", "fails", _with(F12, runs=[{**_F12_RUN, "recall": 0.5, "success_after": 0.6}] * 2), MNIST,
     NOT_SUPPORTED, ""),
    ("F12", "victim under-trained", _with(F12, victim_accuracy=0.9), MNIST, INCONCLUSIVE, "victim under-trained"),
    # F13 (v3): the standard target vs its adversarially trained copy.
    ("F13", "holds", F13, MNIST, SUPPORTED, ""),
    ("F13", "fails: L0 grows with AT", _with(F13, median_l0={"adversarial": 30.0, "standard": 14.0}), MNIST,
     NOT_SUPPORTED, ""),
    ("F13", "fails: L-inf does not double", _with(F13, median_linf={"adversarial": 0.15, "standard": 0.11}), MNIST,
     NOT_SUPPORTED, ""),
    ("F13", "by design: standard already past half the box", _with(F13, median_linf={"adversarial": 0.9,
                                                                                     "standard": 0.6}),
     MNIST, INCONCLUSIVE, "decided by design"),
    ("F13", "victim under-trained", _with(F13, victim_accuracy=0.95), MNIST, INCONCLUSIVE, "victim under-trained"),
    ("F14", "holds", F14, MNIST, SUPPORTED, ""),
    ("F14", "fails", _with(F14, success__fgsm=[0.07, 0.3, 0.75, 0.95, 1.0, 1.0]), MNIST, NOT_SUPPORTED, ""),
    # C&W fooled nothing at its budget: its median L2 counts as infinite, so it is not the smaller.
    ("F14", "fails: C&W fooled nothing", _with(F14, median_l2={"cw_l2": None, "deepfool": None},
                                              success_minimal={"cw_l2": 0.0, "deepfool": 1.0}), MNIST,
     NOT_SUPPORTED, ""),
    ("F14", "by design", _with(F14, success__fgsm=[0.9, 0.95, 0.97, 0.99, 1.0, 1.0]), MNIST, INCONCLUSIVE,
     "decided by design"),
    ("F15", "holds", F15, MNIST, SUPPORTED, ""),
    ("F15", "fails", _with(F15, best__decision=[30.0, 90.0, 400.0]), MNIST, NOT_SUPPORTED, ""),
    ("F15", "by design", _with(F15, budget={"decision": 10000, "score": 10000}, best__score=[10.0, 40.0, 4500.0],
                               best__decision=[300.0, 900.0, 9000.0]), MNIST, INCONCLUSIVE, "decided by design"),
    ("F16", "holds", F16, MNIST, SUPPORTED, ""),
    ("F16", "fails", _with(F16, targeted=[0.3, 0.55, 0.8]), MNIST, NOT_SUPPORTED, ""),
    ("F16", "by design", _with(F16, noise=[0.4, 0.5, 0.6]), MNIST, INCONCLUSIVE, "decided by design"),
    ("F16", "fails: no better than noise", _with(F16, noise=[0.1, 0.2, 0.3]), MNIST, NOT_SUPPORTED, ""),
    ("F17", "holds", F17, MNIST, SUPPORTED, ""),
    ("F17", "fails", _with(F17, fooled_in_90pct={"clean": 0.0, "eot": 0.5, "plain": 0.45}), MNIST, NOT_SUPPORTED, ""),
    ("F17", "by design", _with(F17, fooled_in_90pct={"clean": 0.0, "eot": 0.94, "plain": 0.88}), FASHION,
     INCONCLUSIVE, "decided by design"),
    ("F17", "augmentation does not hold", _with(F17, clean_accuracy_under_transform=0.93), MNIST, INCONCLUSIVE,
     "power check failed"),
    ("F18", "holds", F18, MNIST, SUPPORTED, ""),
    ("F18", "fails", _with(F18, worst_case_at=0.2), MNIST, NOT_SUPPORTED, ""),
    ("F18", "AT model too weak", _with(F18, clean_at=0.57, clean_undefended=0.89, worst_case_at=0.0), FASHION,
     INCONCLUSIVE, "power check failed"),
    ("F18", "cost identity broken", _with(F18, train_passes_at=6.0), MNIST, INCONCLUSIVE, "check failed"),
]


def judge(fid, evidence, dataset="mnist"):
    return findings.get(fid).judge_evidence(evidence, dataset)
