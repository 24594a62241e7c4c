"""The survey's 18 findings as testable claims, each with a judge.

The survey (He et al., arXiv 1911.12562) states its findings in prose; the full text is
not available offline here, so each claim below is restated in this project's own
words as a measurable statement (see ../shared/FINDINGS.md in the design notes). A
judge reads the evidence a family notebook recorded (`results.Recorder.evidence`) and
returns a `Verdict`: "supported", "not supported" (the numbers contradict the claim;
reported as is, never tuned away) or "not run" (no results yet for that notebook).
Thresholds are the claims' quantitative form, fixed before any run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

SUPPORTED, NOT_SUPPORTED, NOT_RUN = "supported", "not supported", "not run"


@dataclass(frozen=True)
class Verdict:
    status: str
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Finding:
    id: str
    family: str
    notebook: str
    claim: str
    rule: str           # the judge rule in words
    figure: str         # figure stem the evidence is drawn in
    check: Callable[[dict[str, Any]], tuple[bool, dict[str, Any]]]

    def judge(self, results: dict[str, dict[str, Any]]) -> Verdict:
        """Verdict from all results files (by notebook name)."""
        doc = results.get(self.notebook)
        if doc is None:
            return Verdict(NOT_RUN, note=f"no results from {self.notebook} yet")
        ev = doc.get("evidence", {}).get(self.id)
        if ev is None:
            return Verdict(NOT_RUN, note=f"{self.notebook} recorded no evidence for {self.id}")
        try:
            ok, numbers = self.check(ev)
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as e:
            return Verdict(NOT_RUN, note=f"evidence for {self.id} incomplete: {type(e).__name__}: {e}")
        return Verdict(SUPPORTED if ok else NOT_SUPPORTED, numbers)


def _num(x: Any) -> float:
    if x is None:
        raise ValueError("a needed number is missing (None)")
    return float(x)


# --- judges: each returns (claim holds, the numbers that decided it) -------------------

def _f01(e):
    lr_ok = _num(e["lr_agreement"]) >= 0.999 and _num(e["lr_queries"]) <= _num(e["lr_d"]) + 1
    gap = _num(e["mlp_substitute_agreement"]) - _num(e["mlp_solver_agreement"])
    return lr_ok and gap >= 0.10, {"LR agreement": e["lr_agreement"], "LR queries": e["lr_queries"],
                                   "d+1": _num(e["lr_d"]) + 1, "MLP substitute - solver": round(gap, 4)}


def _f02(e):
    p, l = _num(e["agreement"]["probs"][-1]), _num(e["agreement"]["label"][-1])
    return p > l, {"budget": e["budgets"][-1], "agreement probs": p, "agreement label": l,
                   "agreement rounded": e["agreement"].get("rounded", [None])[-1]}


def _f03(e):
    q = e["queries_to_target"]
    noise = q.get("noise")
    informed = {k: v for k, v in q.items() if k != "noise" and v is not None}
    if not informed:
        return False, {"queries to target": q}
    best_name = min(informed, key=informed.get)
    best = _num(informed[best_name])
    ok = noise is None or best <= 0.5 * _num(noise)
    return ok, {"best strategy": best_name, "its queries": best, "noise queries": noise}


def _f04(e):
    best, noise = max(_num(v) for v in e["transfer_success"]), _num(e["noise_success"])
    return best >= 3 * noise and best >= 0.30, {"best transfer success": best, "noise success": noise}


def _f05(e):
    from ..metrics import spearman

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


def _f13(e):
    m, n = e["median"], _num(e["n_pixels"])
    l0_jsma, l0_pgd = _num(m["jsma"]["l0"]), _num(m["pgd_linf"]["l0"])
    li_pgd, li_jsma = _num(m["pgd_linf"]["linf"]), _num(m["jsma"]["linf"])
    ok = l0_jsma < 0.1 * n < l0_pgd and li_pgd < li_jsma
    return ok, {"L0 JSMA": l0_jsma, "10% of pixels": 0.1 * n, "L0 PGD": l0_pgd,
                "Linf PGD": li_pgd, "Linf JSMA": li_jsma}


def _f14(e):
    eps, pgd, fgsm = e["eps"], e["success"]["pgd_linf"], e["success"]["fgsm"]
    idx = [i for i, s in enumerate(pgd) if _num(s) >= 0.9]
    l2 = {k: _num(v) for k, v in e["median_l2"].items()}
    cw_smallest = l2["cw_l2"] <= min(l2.values())
    if not idx:
        return False, {"PGD never reaches 90% on the grid": max(pgd), "median L2": l2}
    i = idx[0]
    gap = _num(pgd[i]) - _num(fgsm[i])
    return gap >= 0.20 and cw_smallest, {"eps": eps[i], "PGD success": pgd[i], "FGSM success": fgsm[i],
                                         "median L2": l2}


def _f15(e):
    score, decision = e["median_queries"]["score"], e["median_queries"]["decision"]
    s = min(_num(v) for v in score.values())
    d = min(_num(v) for v in decision.values())
    return s <= d / 5, {"best score-based median queries": s, "best decision-based": d, "ratio": round(d / s, 2)}


def _f16(e):
    u, t = _num(e["untargeted_at_0.3"]), _num(e["targeted_at_0.3"])
    return u >= 0.30 and u > t, {"untargeted transfer @0.3": u, "targeted transfer @0.3": t}


def _f17(e):
    eot, plain = _num(e["success_eot"]), _num(e["success_plain"])
    return eot >= plain + 0.30, {"EOT success": eot, "plain PGD success": plain}


def _f18(e):
    at, und = _num(e["robust_at"]), _num(e["robust_undefended"])
    plain, adapt = _num(e["masked_plain_robust"]), _num(e["masked_adaptive_robust"])
    ok = at >= 0.60 and at >= und + 0.50 and plain - adapt >= 0.30
    return ok, {"robust acc AT": at, "robust acc undefended": und,
                "masked: plain PGD": plain, "masked: adaptive": adapt}


_NB = {"extraction": "01_model_extraction", "inversion": "02_model_inversion",
       "poisoning": "03_poisoning", "adversarial": "04_adversarial"}


def _f(id_, family, claim, rule, figure, check):
    return Finding(id_, family, _NB[family], claim, rule, figure, check)


FINDINGS: tuple[Finding, ...] = (
    _f("F01", "extraction",
       "Solving equations from confidence scores copies a model exactly when it is linear in its logits, and fails once a hidden non-linear layer is added.",
       "LR agreement >= 99.9% with <= d+1 queries; MLP: solver at least 10 points below a substitute trained on as many queries",
       "01_equation_solving", _f01),
    _f("F02", "extraction",
       "The more an API reveals per answer, the fewer queries a copy needs: probabilities beat labels at equal budget.",
       "at the largest common budget, agreement(probs) > agreement(label)", "01_agreement_vs_queries", _f02),
    _f("F03", "extraction",
       "Choosing queries well (Jacobian augmentation, natural out-of-distribution images, active selection) beats asking more random ones.",
       "best informed strategy reaches 80% agreement with <= 1/2 the queries of noise (or noise never does)",
       "01_query_strategies", _f03),
    _f("F04", "extraction",
       "A stolen copy is a stepping stone: adversarial examples made white-box on it transfer to the black-box victim.",
       "best transfer success >= 3 x the equal-norm noise baseline and >= 30%", "01_transfer_from_substitute", _f04),
    _f("F05", "inversion",
       "Membership leaks through overfitting: inference AUC rises with the train-test accuracy gap.",
       "Spearman rho(gap, AUC) >= 0.8 over >= 5 targets", "02_auc_vs_gap", _f05),
    _f("F06", "inversion",
       "Shadow models are not needed for average-case membership inference, but per-example calibration (LiRA) is needed to be confident at low false-positive rates.",
       "|AUC(loss) - AUC(shadow)| <= 0.03 and TPR@0.1%FPR(LiRA) >= 2 x the best other", "02_roc_loglog", _f06),
    _f("F07", "inversion",
       "Gradient descent on the input against confidence outputs recovers recognisable class prototypes; label-only answers recover less.",
       "evaluation-classifier accuracy (confidences, shallow target) >= 80% and above label-only",
       "02_inversion_grid", _f07),
    _f("F08", "inversion",
       "Shared gradients leak training inputs nearly exactly; noise on the gradients degrades the leak.",
       "PSNR(batch 1, no noise) >= 25 dB and PSNR decreasing in the noise multiplier", "02_gradient_leakage", _f08),
    _f("F09", "poisoning",
       "Randomly flipped labels barely hurt a deep network; flipping one class into another at the same rate hurts that class more.",
       "20% random flips cost <= 5 points; targeted flips leave the target class less accurate than random flips",
       "03_label_flipping", _f09),
    _f("F10", "poisoning",
       "Backdoors are cheap and stealthy: a small trigger on at most 1% of the training set is enough, and clean accuracy hardly moves.",
       "some rate <= 1% gives success >= 90% with clean accuracy within 1 point", "03_badnets", _f10),
    _f("F11", "poisoning",
       "Clean-label feature-collision poisons work when only the last layer is retrained, much less under end-to-end training.",
       "success(transfer, best count) >= 2 x success(end-to-end, same count)", "03_feature_collision", _f11),
    _f("F12", "poisoning",
       "Poisons leave a trace in the learned representation: spectral signatures find them, and retraining without them removes the backdoor.",
       "recall >= 80% when removing 1.5x the poison count, attack success after < 20%", "03_spectral_signatures", _f12),
    _f("F13", "adversarial",
       "What counts as a small perturbation depends on the distance: L-inf attacks change every pixel a little, L0 attacks a few pixels a lot.",
       "median L0(JSMA) < 10% of pixels < median L0(PGD), and median L-inf(PGD) < median L-inf(JSMA)",
       "04_norms", _f13),
    _f("F14", "adversarial",
       "Iterating buys success at a fixed budget (PGD over FGSM), and optimisation (C&W) finds the smallest L2 perturbations.",
       "at the smallest eps where PGD succeeds on >= 90%, FGSM succeeds on >= 20 points less; median L2(C&W) smallest of the L2 attacks",
       "04_success_vs_eps", _f14),
    _f("F15", "adversarial",
       "Black-box attacks pay in queries, and label-only (decision-based) attacks pay far more than score-based ones.",
       "best score-based median queries <= 1/5 of the best decision-based at matched success", "04_queries", _f15),
    _f("F16", "adversarial",
       "Adversarial examples transfer between architectures; targeted ones much less.",
       "untargeted transfer >= 30% at eps 0.3 and above targeted transfer", "04_transfer", _f16),
    _f("F17", "adversarial",
       "Surviving physical transformations needs optimising over them (expectation over transformation).",
       "success(EOT) >= success(plain PGD) + 30 points under sampled transformations", "04_eot", _f17),
    _f("F18", "adversarial",
       "Real robustness (adversarial training) costs accuracy and compute; gradient masking only looks robust.",
       "robust(AT) >= 60% and >= undefended + 50 points; masked defense: plain PGD robust accuracy >= adaptive + 30 points",
       "04_defenses", _f18),
)

BY_ID = {f.id: f for f in FINDINGS}


def get(finding_id: str) -> Finding:
    """The finding with this id (F01..F18)."""
    if finding_id not in BY_ID:
        raise ConfigError(f"finding={finding_id!r} is unknown; choose one of {list(BY_ID)}")
    return BY_ID[finding_id]


def judge_all(results: dict[str, dict[str, Any]]) -> list[tuple[Finding, Verdict]]:
    """Every finding with its verdict, in order."""
    return [(f, f.judge(results)) for f in FINDINGS]


def _fmt(numbers: dict[str, Any]) -> str:
    def one(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {one(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(one(x) for x in v) + "]"
        return str(v)

    return "; ".join(f"{k} = {one(v)}" for k, v in numbers.items())


def table_rows(results: dict[str, dict[str, Any]], figure_prefix: str = "") -> list[dict[str, str]]:
    """Rows (id, family, claim, verdict, key numbers, figure) for findings.md and the README."""
    rows = []
    for f, v in judge_all(results):
        fig = f"[{f.figure}]({figure_prefix}{f.figure}.png)" if v.status != NOT_RUN else ""
        rows.append({"id": f.id, "family": f.family, "claim": f.claim, "verdict": v.status,
                     "key numbers": _fmt(v.numbers) if v.numbers else v.note, "figure": fig})
    return rows
