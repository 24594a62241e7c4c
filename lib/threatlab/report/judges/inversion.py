"""Judges of findings F05-F08: model inversion and membership inference (notebook 02),
on the machinery of `report.verdicts` (the findings' testable rules, applied to the evidence
notebook 02 records).

Every condition is in its own unit (AUC and accuracy differences as fractions, "k x"
bars as ratios, PSNR in dB, correlations as rho) and declares its reach (G0).
Evidence keys (what notebook 02 records with `rec.evidence`):

* F05: gap [per target], auc [per target], n_train [per target].
* F06: sides {"shadow_free": [names], "shadow_based": [names]}; half {"best": {side:
  attack chosen on the selection half}, "auc": {side: its AUC on the reporting half},
  "selection_auc": {side: {attack: AUC}}, "report_auc": {attack: AUC}} (the output of
  `protocols.inversion.best_on_half`); auc {attack: AUC on all rows} (shown);
  tpr_at_0.1% {attack: TPR on all rows}, tpr_at_1% {attack: TPR}; n_reference (online
  LiRA reference models per target), members, candidates (pooled over targets),
  shadow_disjoint (bool).
* F07: accuracy {"<mode>/<target>": evaluator accuracy}, prototype_match {same keys},
  classes, restarts, evaluator_test_acc, evaluator_architecture.
* F08: rows {"sigmoid_lenet": {psnr_vs_batch, psnr_vs_noise, label_acc_batch1},
  "relu_mlp": {...}}, batch_sizes, noise, baseline_psnr {"black", "mean_image"}.
  Row "sigmoid_lenet" (the network DLG attacks) is judged; "relu_mlp" is shown.

G1's accuracy check is applied where the evidence records the model's data set,
architecture and clean accuracy: F07's evaluation classifier ("evaluator_architecture",
"evaluator_test_acc"). F05's overfit targets and F06's reference and shadow models keep
their fixed training on purpose (G1's exception); F08's sigmoid LeNet and F07's softmax
regression have no accuracy bar in G1 and are trained with early stopping, their
accuracies shown.
"""
from __future__ import annotations

import math

from ..verdicts import (CORRELATION, Condition, Finding, half, judged, minus_reach, multiple_reach, num,
                        power_check, victim_checks)

F05_RHO = 0.8
F06_AUC_SLACK = 0.03
F06_TPR_RATIO = 2.0
#: F06 files the class thresholds fitted on shadow outputs as shadow-based (F06's rule).
F06_SHADOW_BASED = ("shadow", "class_loss")
F07_ACCURACY = 0.80
F08_PSNR = 25.0
F08_ABOVE_BASELINE = 10.0
F08_BATCH_DROP = 10.0
F08_NOISE_SLACK = 3.0
F08_BATCH = 4


def _f05(e):
    """Spearman rho(gap, AUC) >= 0.8 over >= 5 targets (a power check)."""
    from ...metrics import spearman

    gap, auc = [num(v) for v in e["gap"]], [num(v) for v in e["auc"]]
    if len(gap) != len(auc):
        raise ValueError(f"gap has {len(gap)} entries, auc {len(auc)}")
    rho = spearman(gap, auc)
    return judged([Condition("Spearman rho(gap, AUC)", rho, F05_RHO, unit="rho", reach=CORRELATION,
                             why="a rank correlation")],
                  {"targets": len(gap), "spearman rho": rho, "gap range": [min(gap), max(gap)],
                   "AUC": auc, "gap": gap},
                  checks=[power_check("targets >= 5", len(gap), len(gap) >= 5), *victim_checks(e, "victim_accuracy")])


def _f06(e):
    """AUC(best shadow-free) >= AUC(best shadow-based) - 0.03, each side's best chosen on
    one random half of the candidate rows and its AUC read on the other half
    (`protocols.inversion.best_on_half`); and TPR at 0.1 % FPR of online LiRA >= 2 x the
    best non-LiRA attack's, on all rows (a TPR of 0 counts as one member). The class
    thresholds fitted on shadow outputs ("class_loss") and Shokri's attack model
    ("shadow") must sit on the shadow-based side."""
    sides, half_ = e["sides"], e["half"]
    free, based = list(sides["shadow_free"]), list(sides["shadow_based"])
    if set(free) & set(F06_SHADOW_BASED) or not set(F06_SHADOW_BASED) <= set(based):
        raise ValueError(f"shadow-free {free} / shadow-based {based}: {list(F06_SHADOW_BASED)} are shadow-based")
    best_free, best_shadow = half_["best"]["shadow_free"], half_["best"]["shadow_based"]
    if best_free not in free or best_shadow not in based:
        raise ValueError(f"best attacks {best_free!r}, {best_shadow!r} are not on their sides")
    auc_free, auc_shadow = num(half_["auc"]["shadow_free"]), num(half_["auc"]["shadow_based"])
    tpr = e["tpr_at_0.1%"]
    floor = 1.0 / num(e["members"])
    others = {k: num(v) for k, v in tpr.items() if not k.startswith("lira")}
    best_other = max(others, key=others.get)
    lira = num(tpr["lira"])
    other = max(others[best_other], floor)
    conds = [Condition("AUC best shadow-free - best shadow-based", auc_free - auc_shadow, -F06_AUC_SLACK,
                       reach=minus_reach(auc_shadow), why="AUC <= 1", baseline=f"{best_shadow} AUC {auc_shadow:.3g}"),
             Condition("TPR@0.1% LiRA / best other", max(lira, floor) / other, F06_TPR_RATIO, unit="ratio",
                       scale="log", reach=multiple_reach(other), why="TPR <= 1",
                       baseline=f"{best_other} TPR {others[best_other]:.3g}")]
    numbers = {"best shadow-free": best_free, "AUC best shadow-free": auc_free, "best shadow-based": best_shadow,
               "AUC best shadow-based": auc_shadow, "AUC reporting half": dict(half_.get("report_auc", {})),
               "TPR@0.1% LiRA": lira, "TPR@0.1% LiRA offline": tpr.get("lira_offline"), "best other": best_other,
               "TPR@0.1% best other": others[best_other], "TPR@0.1% label-only": tpr.get("label_only"),
               "TPR floor (1 member)": floor}
    checks = [power_check("reference models >= 16", e["n_reference"], num(e["n_reference"]) >= 16),
              power_check("shadow data disjoint from candidates", e["shadow_disjoint"], e["shadow_disjoint"] is True),
              *victim_checks(e, "victim_accuracy")]
    return judged(conds, numbers, checks=checks)


def _f07(e):
    """Evaluator accuracy on the confidences-mode reconstructions of the shallow target
    >= 80 % with the half-count (k + 0.5)/n over n = classes x restarts reconstructions
    (G3.2: 24 of 30 passes), and above the label-only mode's."""
    a = e["accuracy"]
    n = num(e["classes"]) * num(e["restarts"])
    conf, label = num(a["confidences/shallow"]), num(a["label/shallow"])
    pm = e.get("prototype_match", {})
    conds = [Condition("accuracy confidences shallow", conf, F07_ACCURACY, half=half(n), reach=(0.0, 1.0),
                       why="an accuracy over classes x restarts reconstructions"),
             Condition("accuracy confidences - label-only shallow", conf - label, 0.0, op=">",
                       reach=minus_reach(label), why="accuracy <= 1", baseline=f"label-only {label:.3g}")]
    return judged(conds, {"acc confidences shallow": conf, "acc label shallow": label,
                          "acc confidences deep": a.get("confidences/deep"), "acc label deep": a.get("label/deep"),
                          "prototype match confidences shallow": pm.get("confidences/shallow"),
                          "prototype match label shallow": pm.get("label/shallow"),
                          "reconstructions": int(n), "chance": 1.0 / num(e["classes"]),
                          "evaluator test accuracy": e.get("evaluator_test_acc"),
                          "shallow target test accuracy": e.get("target_test_acc", {}).get("shallow")},
                  checks=[*victim_checks(e, "victim_accuracy"),
                          *victim_checks(e, "evaluator_test_acc", architecture_key="evaluator_architecture",
                                         who="evaluation classifier")])


def _f08(e):
    """Sigmoid LeNet target, all bars one-sided (F08's rule): PSNR(batch 1, no
    noise) >= 25 dB and >= the better of the black and mean-image baselines + 10 dB;
    PSNR(batch 4) <= PSNR(batch 1) - 10 dB; PSNR at the largest noise multiplier <=
    better baseline + 3 dB. Reports the smallest noise multiplier at which the leak is
    gone (PSNR <= better baseline + 3 dB). PSNR of images in [0, 1] is >= 0 dB, which
    bounds every reach from below. A run without batch 4 cannot judge the batch bar: a
    power check fails (inconclusive) rather than the bar being left out."""
    row = e["rows"]["sigmoid_lenet"]
    sizes, noise = [int(num(s)) for s in e["batch_sizes"]], [num(v) for v in e["noise"]]
    if 1 not in sizes:
        raise ValueError(f"batch_sizes={sizes} has no batch 1")
    psnr_b = [num(v) for v in row["psnr_vs_batch"]]
    psnr_n = [num(v) for v in row["psnr_vs_noise"]]
    if len(psnr_b) != len(sizes) or len(psnr_n) != len(noise):
        raise ValueError("psnr_vs_batch / psnr_vs_noise do not match batch_sizes / noise")
    b1 = psnr_b[sizes.index(1)]
    base = e["baseline_psnr"]
    black, mean_img = num(base["black"]), num(base["mean_image"])
    better = max(black, mean_img)
    end = psnr_n[-1]
    above = "PSNR >= 0 dB"
    conds = [Condition("PSNR batch 1", b1, F08_PSNR, unit="dB", reach=(0.0, math.inf), why=above),
             Condition("PSNR batch 1 - better baseline", b1 - better, F08_ABOVE_BASELINE, unit="dB",
                       reach=(-better, math.inf), why=above, baseline=f"better baseline {better:.3g} dB")]
    has_b4 = F08_BATCH in sizes
    b4 = psnr_b[sizes.index(F08_BATCH)] if has_b4 else b1  # without batch 4 the power check below fails
    conds.append(Condition(f"PSNR batch {F08_BATCH} - batch 1", b4 - b1, -F08_BATCH_DROP, op="<=", unit="dB",
                           reach=(-b1, math.inf), why=above))
    conds.append(Condition("PSNR max noise - better baseline", end - better, F08_NOISE_SLACK, op="<=", unit="dB",
                           reach=(-better, math.inf), why=above, baseline=f"better baseline {better:.3g} dB"))
    gone = next((m for m, p in zip(noise, psnr_n) if p <= better + F08_NOISE_SLACK), None)
    relu = e["rows"].get("relu_mlp", {})
    numbers = {"PSNR batch 1 (dB)": b1, f"PSNR batch {F08_BATCH} (dB)": b4 if has_b4 else None,
               "PSNR at max noise (dB)": end, "max noise multiplier": noise[-1],
               "PSNR black (dB)": black, "PSNR mean image (dB)": mean_img,
               "smallest noise multiplier with the leak gone": gone,
               "PSNR vs batch": psnr_b, "PSNR vs noise": psnr_n,
               "sigmoid LeNet test accuracy": (e.get("test_acc") or {}).get("sigmoid_lenet"),
               "ReLU MLP PSNR batch 1 (dB)": (relu.get("psnr_vs_batch") or [None] * len(sizes))[sizes.index(1)]}
    checks = [power_check("noise grid starts at 0 and ends above it", noise,
                          len(noise) >= 2 and noise[0] == 0 and noise[-1] > 0),
              power_check(f"batch sizes include 1 and {F08_BATCH}", sizes, has_b4),
              *victim_checks(e, "victim_accuracy")]
    return judged(conds, numbers, checks=checks)


FINDINGS: tuple[Finding, ...] = (
    Finding("F05", "inversion",
            "Membership leaks through overfitting: inference AUC rises with the train-test accuracy gap across "
            "targets trained to different degrees.",
            "Spearman rho(gap, AUC) >= 0.8 over >= 5 targets", "02_auc_vs_gap", _f05),
    Finding("F06", "inversion",
            "Shadow models are optional on average, necessary at the tail: a shadow-free threshold attack is not "
            "meaningfully worse in AUC than the shadow-based attacks (shadow data disjoint from the candidates), "
            "while per-example calibration (LiRA, >= 16 reference models) has a much higher TPR at 0.1 % FPR.",
            "AUC(best shadow-free: loss, confidence, entropy, population-calibrated class threshold) >= "
            "AUC(best shadow-based: Shokri's attack model, class thresholds fitted on shadow outputs) - 0.03, each "
            "side's best chosen on a random half of the candidates and its AUC read on the other half; and "
            "TPR@0.1%FPR(LiRA online) >= 2 x the best non-LiRA attack's (TPR 0 counts as 1 member)",
            "02_roc_loglog", _f06),
    Finding("F07", "inversion",
            "Inversion recovers class prototypes from confidences (Fredrikson et al. 2015); label-only answers "
            "recover less.",
            "evaluation-classifier accuracy (confidences, shallow target) >= 80 % counting (k + 0.5) of n "
            "reconstructions, and above label-only (class-mean correlation reported beside it)",
            "02_inversion_grid", _f07, baselines=("chance",)),
    Finding("F08", "inversion",
            "Shared gradients leak inputs (Zhu et al. 2019, deep leakage from gradients); larger batches and "
            "gradient noise degrade the leak.",
            "sigmoid LeNet target: PSNR(batch 1, no noise) >= 25 dB and >= the better of the black and mean-image "
            "baselines + 10 dB; PSNR(batch 4) <= PSNR(batch 1) - 10 dB; PSNR at the largest noise multiplier "
            "<= better baseline + 3 dB",
            "02_gradient_leakage", _f08, baselines=("PSNR black (dB)", "PSNR mean image (dB)")),
)
