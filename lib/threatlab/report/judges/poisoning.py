"""Judges of findings F09-F12: Poisoning (notebook 03).

Transitional: these are register v1's rules, returning supported / not supported
without a margin; issue #19 replaces them with register v2's judges (margins,
power checks, baselines).
"""
from __future__ import annotations

from ..findings import Finding, v1_judge, num as _num


def _f09(e):
    cost = _num(e["acc_clean"]) - _num(e["acc_random_20"])
    t, r = _num(e["target_class_acc_targeted"]), _num(e["target_class_acc_random"])
    return cost <= 0.05 and t < r, {"cost of 20% random flips": round(cost, 4),
                                    "target-class acc (targeted)": t, "target-class acc (random)": r}


def _f10(e):
    base = _num(e["clean_acc_unpoisoned"])
    hits = [r for r, s, c in zip(e["rates"], e["success"], e["clean_acc"])
            if _num(r) <= 0.01 and _num(s) >= 0.9 and _num(c) >= base - 0.01]
    best = max(zip(e["rates"], e["success"]), key=lambda t: (_num(t[0]) <= 0.01, _num(t[1])))
    return bool(hits), {"lowest rate meeting the bar": min(hits) if hits else None,
                        "unpoisoned clean acc": base, "best rate <= 1%: success": best[1]}


def _f11(e):
    tr, ee = [_num(v) for v in e["success_transfer"]], [_num(v) for v in e["success_end2end"]]
    i = max(range(len(tr)), key=tr.__getitem__)
    return tr[i] > 0 and tr[i] >= 2 * ee[i], {"poisons": e["counts"][i], "success transfer": tr[i],
                                              "success end-to-end": ee[i]}


def _f12(e):
    rec, before, after = _num(e["recall"]), _num(e["success_before"]), _num(e["success_after"])
    return rec >= 0.8 and after < 0.2, {"recall": rec, "success before": before, "success after": after}


FINDINGS: tuple[Finding, ...] = (
    Finding("F09", "poisoning",
       "Randomly flipped labels barely hurt a deep network; flipping one class into another at the same rate hurts that class more.",
       "20% random flips cost <= 5 points; targeted flips leave the target class less accurate than random flips",
       "03_label_flipping", v1_judge(_f09)),
    Finding("F10", "poisoning",
       "Backdoors are cheap and stealthy: a small trigger on at most 1% of the training set is enough, and clean accuracy hardly moves.",
       "some rate <= 1% gives success >= 90% with clean accuracy within 1 point", "03_badnets", v1_judge(_f10)),
    Finding("F11", "poisoning",
       "Clean-label feature-collision poisons work when only the last layer is retrained, much less under end-to-end training.",
       "success(transfer, best count) >= 2 x success(end-to-end, same count)", "03_feature_collision", v1_judge(_f11)),
    Finding("F12", "poisoning",
       "Poisons leave a trace in the learned representation: spectral signatures find them, and retraining without them removes the backdoor.",
       "recall >= 80% when removing 1.5x the poison count, attack success after < 20%", "03_spectral_signatures", v1_judge(_f12)),
)
