"""Judges of findings F05-F08: Model inversion and membership inference (notebook 02).

Transitional: these are register v1's rules, returning supported / not supported
without a margin; issue #18 replaces them with register v2's judges (margins,
power checks, baselines).
"""
from __future__ import annotations

from ..findings import Finding, v1_judge, num as _num


def _f05(e):
    from ...metrics import spearman

    gap, auc = e["gap"], e["auc"]
    if len(gap) < 5:
        raise ValueError(f"needs >= 5 targets, got {len(gap)}")
    rho = spearman(gap, auc)
    return rho >= 0.8, {"targets": len(gap), "spearman rho": round(rho, 4)}


def _f06(e):
    auc, tpr = e["auc"], e["tpr_at_0.1%"]
    d = abs(_num(auc["loss"]) - _num(auc["shadow"]))
    others = max(_num(v) for k, v in tpr.items() if k != "lira")
    lira = _num(tpr["lira"])
    return d <= 0.03 and lira > 0 and lira >= 2 * others, {
        "|AUC loss - shadow|": round(d, 4), "TPR@0.1% LiRA": lira, "best other TPR@0.1%": others}


def _f07(e):
    a = e["accuracy"]
    conf, label = _num(a["confidences/shallow"]), _num(a["label/shallow"])
    return conf >= 0.8 and conf > label, {"acc confidences shallow": conf, "acc label shallow": label,
                                          "acc confidences deep": a.get("confidences/deep")}


def _f08(e):
    b1, curve = _num(e["psnr_batch1"]), [_num(v) for v in e["psnr_vs_noise"]]
    decreasing = all(b <= a for a, b in zip(curve, curve[1:])) and curve[-1] < curve[0]
    return b1 >= 25 and decreasing, {"PSNR batch 1 (dB)": b1, "PSNR vs noise": curve}


FINDINGS: tuple[Finding, ...] = (
    Finding("F05", "inversion",
       "Membership leaks through overfitting: inference AUC rises with the train-test accuracy gap.",
       "Spearman rho(gap, AUC) >= 0.8 over >= 5 targets", "02_auc_vs_gap", v1_judge(_f05)),
    Finding("F06", "inversion",
       "Shadow models are not needed for average-case membership inference, but per-example calibration (LiRA) is needed to be confident at low false-positive rates.",
       "|AUC(loss) - AUC(shadow)| <= 0.03 and TPR@0.1%FPR(LiRA) >= 2 x the best other", "02_roc_loglog", v1_judge(_f06)),
    Finding("F07", "inversion",
       "Gradient descent on the input against confidence outputs recovers recognisable class prototypes; label-only answers recover less.",
       "evaluation-classifier accuracy (confidences, shallow target) >= 80% and above label-only",
       "02_inversion_grid", v1_judge(_f07)),
    Finding("F08", "inversion",
       "Shared gradients leak training inputs nearly exactly; noise on the gradients degrades the leak.",
       "PSNR(batch 1, no noise) >= 25 dB and PSNR decreasing in the noise multiplier", "02_gradient_leakage", v1_judge(_f08)),
)
