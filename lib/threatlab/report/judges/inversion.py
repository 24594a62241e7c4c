"""Judges of findings F05-F08: model inversion and membership inference (notebook 02).

Register v2 (FINDINGS.md), each condition's margin scaled so that 0 is its bar:
point differences for AUCs, accuracies and correlations (`diff_margin`), log-ratios for
"k x" bars (`log_ratio_margin`). PSNR bars are in dB, which is already a log scale:
a difference of d dB is the MSE ratio 10^(d/10), so a dB bar's margin is
log_ratio_margin(10^(value/10), 10^(bar/10)) = d * ln(10) / 10, commensurate with the
other log-ratio margins.

Evidence keys (what notebook 02 records with `rec.evidence`):

* F05: gap [per target], auc [per target], n_train [per target].
* F06: auc {attack: AUC}, tpr_at_0.1% {attack: TPR}, tpr_at_1% {attack: TPR},
  shadow_free [attack names], n_reference (online LiRA reference models per target),
  members, candidates (pooled over targets), shadow_disjoint (bool: the shadow data and
  the candidates share no row).
* F07: accuracy {"<mode>/<target>": evaluator accuracy}, prototype_match {same keys},
  classes, restarts, evaluator_test_acc.
* F08: rows {"sigmoid_lenet": {psnr_vs_batch, psnr_vs_noise, label_acc_batch1},
  "relu_mlp": {...}}, batch_sizes, noise, baseline_psnr {"black", "mean_image"}.
  Row "sigmoid_lenet" (the network DLG attacks) is judged; "relu_mlp" is shown.
"""
from __future__ import annotations

from ..findings import Finding, diff_margin, judged, log_ratio_margin, num, power_check


def _f05(e):
    from ...metrics import spearman

    gap, auc = [num(v) for v in e["gap"]], [num(v) for v in e["auc"]]
    if len(gap) != len(auc):
        raise ValueError(f"gap has {len(gap)} entries, auc {len(auc)}")
    rho = spearman(gap, auc)
    return judged({"rho - 0.8": diff_margin(rho, 0.8)},
                  {"targets": len(gap), "spearman rho": rho, "gap range": [min(gap), max(gap)],
                   "AUC range": [min(auc), max(auc)]},
                  checks=[power_check("targets >= 5", len(gap), len(gap) >= 5)])


def _f06(e):
    auc, tpr = e["auc"], e["tpr_at_0.1%"]
    free = list(e["shadow_free"])
    if not free:
        raise ValueError("shadow_free names no attack")
    best_free = max(free, key=lambda k: num(auc[k]))
    auc_free, auc_shadow = num(auc[best_free]), num(auc["shadow"])
    # "Best other attack": every attack that is not LiRA (online or offline, both are
    # per-example calibration). A TPR of 0 at 0.1 % FPR is below what the run can
    # resolve; one member (1 / members) stands in for it so the ratio stays finite.
    floor = 1.0 / num(e["members"])
    others = {k: num(v) for k, v in tpr.items() if not k.startswith("lira")}
    best_other = max(others, key=others.get)
    lira = num(tpr["lira"])
    margins = {"AUC(best shadow-free) - (AUC(shadow) - 0.03)": diff_margin(auc_free - auc_shadow, -0.03),
               "log(TPR@0.1%(LiRA) / best other) - log 2":
                   log_ratio_margin(max(lira, floor) / max(others[best_other], floor), 2.0)}
    numbers = {"best shadow-free": best_free, "AUC best shadow-free": auc_free, "AUC shadow": auc_shadow,
               "TPR@0.1% LiRA": lira, "TPR@0.1% LiRA offline": tpr.get("lira_offline"),
               "best other": best_other, "TPR@0.1% best other": others[best_other],
               "TPR@0.1% label-only": tpr.get("label_only"), "TPR floor (1 member)": floor}
    checks = [power_check("reference models >= 16", e["n_reference"], num(e["n_reference"]) >= 16),
              power_check("shadow data disjoint from candidates", e["shadow_disjoint"], e["shadow_disjoint"] is True)]
    return judged(margins, numbers, checks=checks)


def _f07(e):
    a = e["accuracy"]
    conf, label = num(a["confidences/shallow"]), num(a["label/shallow"])
    pm = e.get("prototype_match", {})
    return judged({"acc(conf, shallow) - 0.80": diff_margin(conf, 0.80),
                   "acc(conf, shallow) - acc(label, shallow)": diff_margin(conf - label, 0.0)},
                  {"acc confidences shallow": conf, "acc label shallow": label,
                   "acc confidences deep": a.get("confidences/deep"), "acc label deep": a.get("label/deep"),
                   "prototype match confidences shallow": pm.get("confidences/shallow"),
                   "prototype match label shallow": pm.get("label/shallow"),
                   "chance": 1.0 / num(e["classes"])})


_DB = 10.0  # dB per decade of MSE


def _db_margin(value_db: float, bar_db: float) -> float:
    # "value >= bar" in dB as the log-ratio of the two MSEs (see the module doc).
    return log_ratio_margin(10 ** (value_db / _DB), 10 ** (bar_db / _DB))


def _f08(e):
    row = e["rows"]["sigmoid_lenet"]
    sizes, noise = list(e["batch_sizes"]), [num(v) for v in e["noise"]]
    if 1 not in sizes:
        raise ValueError(f"batch_sizes={sizes} has no batch 1")
    b1 = num(row["psnr_vs_batch"][sizes.index(1)])
    base = e["baseline_psnr"]
    black, mean_img = num(base["black"]), num(base["mean_image"])
    better = max(black, mean_img)
    end = num(row["psnr_vs_noise"][-1])
    off = abs(end - better)
    relu = e["rows"].get("relu_mlp", {})
    margins = {"PSNR(b1) - 25 dB": _db_margin(b1, 25.0),
               "PSNR(b1) - (better baseline + 10 dB)": _db_margin(b1, better + 10.0),
               "3 dB - |PSNR(max noise) - better baseline|": _db_margin(3.0, off)}
    numbers = {"PSNR batch 1 (dB)": b1, "PSNR at max noise (dB)": end, "max noise multiplier": noise[-1],
               "PSNR black (dB)": black, "PSNR mean image (dB)": mean_img,
               "PSNR max noise - better baseline (dB)": end - better,
               "PSNR vs batch": [num(v) for v in row["psnr_vs_batch"]],
               "ReLU MLP PSNR batch 1 (dB)": (relu.get("psnr_vs_batch") or [None])[sizes.index(1)]}
    checks = [power_check("noise grid starts at 0 and ends above it", noise,
                          len(noise) >= 2 and noise[0] == 0 and noise[-1] > 0)]
    return judged(margins, numbers, checks=checks)


FINDINGS: tuple[Finding, ...] = (
    Finding("F05", "inversion",
            "Membership leaks through overfitting: inference AUC rises with the train-test accuracy gap across "
            "targets trained to different degrees.",
            "Spearman rho(gap, AUC) >= 0.8 over >= 5 targets (margin rho - 0.8)", "02_auc_vs_gap", _f05),
    Finding("F06", "inversion",
            "Shadow models are optional on average, necessary at the tail: a shadow-free threshold attack is not "
            "meaningfully worse in AUC than Shokri et al.'s shadow-model attack (shadow data disjoint from the "
            "candidates), while per-example calibration (LiRA, >= 16 reference models) has a much higher TPR at "
            "0.1 % FPR.",
            "AUC(best shadow-free threshold: loss, confidence, entropy, class-conditional loss) >= AUC(shadow) - "
            "0.03, and TPR@0.1%FPR(LiRA online) >= 2 x the best non-LiRA attack's (TPR 0 counts as 1 member)",
            "02_roc_loglog", _f06),
    Finding("F07", "inversion",
            "Inversion recovers class prototypes from confidences (Fredrikson et al. 2015); label-only answers "
            "recover less.",
            "evaluation-classifier accuracy (confidences, shallow target) >= 80 % and above label-only "
            "(class-mean correlation reported beside it)",
            "02_inversion_grid", _f07, baselines=("chance",)),
    Finding("F08", "inversion",
            "Shared gradients leak inputs (Zhu et al. 2019, deep leakage from gradients); larger batches and "
            "gradient noise degrade the leak.",
            "sigmoid LeNet target: PSNR(batch 1, no noise) >= 25 dB and >= 10 dB above the better of the black and "
            "mean-image baselines; at the largest noise multiplier the PSNR is within 3 dB of the better baseline "
            "(endpoints, dB margins as log MSE ratios)",
            "02_gradient_leakage", _f08, baselines=("PSNR black (dB)", "PSNR mean image (dB)")),
)
