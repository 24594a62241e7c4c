"""Audit section "evasion": clean accuracy and worst-case robust accuracy over an eps
grid per norm, with Clopper-Pearson intervals.

The worst case is notebook 04's (`protocols.robustness.worst_case`, AutoAttack's
cascade without the targeted FAB; Croce & Hein 2020, arXiv 2003.01690): an example is
robust at eps only if the model classifies it correctly and APGD-CE, APGD-DLR and
Square (L-inf or L2 variant) all fail inside the ball. Survey context: adversarial
examples, He et al. (arXiv 1911.12562), section on evasion attacks.

Along a grid the budgets are nested balls, so an example broken at a smaller eps is
broken at every larger one: each grid point attacks only the examples still robust at
the point before (cheaper, and the curve cannot rise with eps by attack noise).
"""
from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from ..protocols.robustness import worst_case
from ..report.stats import clopper_pearson
from ..runtime import progress_disabled

__all__ = ["THREAT_MODEL", "ensemble", "run_evasion"]

THREAT_MODEL = ("White-box attacker who knows the weights and gradients (and a score-based black-box "
                "attacker for Square), untargeted, perturbing each test input inside an L-inf or L2 ball of "
                "radius eps within the input box.")


def ensemble(norm: str, *, apgd_steps: int, square_queries: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """04's worst-case ensemble for `norm`: label -> (registry name, kwargs)."""
    return {"apgd_ce": ("apgd_ce", {"steps": apgd_steps, "norm": norm}),
            "apgd_dlr": ("apgd_dlr", {"steps": apgd_steps, "norm": norm}),
            f"square_{norm}": (f"square_{norm}", {"max_queries": square_queries})}


def _interval(k: int, n: int) -> dict[str, float]:
    p, lo, hi = clopper_pearson(k, n)
    return {"value": p, "low": lo, "high": hi, "k": k, "n": n}


def run_evasion(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, grids: dict[str, list[float]],
                apgd_steps: int, square_queries: int, seed: int) -> dict[str, Any]:
    """Clean accuracy and, per norm in `grids` ("linf", "l2": increasing eps lists in
    [0, 1] input units), robust accuracy at each eps with its 95 % Clopper-Pearson
    interval and the attack that broke each example first."""
    n = x.shape[0]
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).cpu()
    out: dict[str, Any] = {"threat_model": THREAT_MODEL, "n": n,
                           "clean_accuracy": _interval(int(correct.sum()), n),
                           "attacks": {}, "curves": {}}
    points = [(norm, e) for norm, g in grids.items() for e in g]
    bar = tqdm(points, desc="audit evasion", disable=progress_disabled(), leave=False)
    robust = {norm: correct.clone() for norm in grids}
    for norm, eps in bar:
        bar.set_postfix_str(f"{norm} eps={eps:g}")
        spec = ensemble(norm, apgd_steps=apgd_steps, square_queries=square_queries)
        out["attacks"][norm] = list(spec)
        alive = robust[norm].nonzero().squeeze(1)
        broken = {label: 0 for label in spec}
        outside = {label: 0 for label in spec}
        if alive.numel():
            wc = worst_case(model, x[alive.to(x.device)], y[alive.to(y.device)], spec, eps=float(eps), norm=norm,
                            seed=seed, cascade=True)
            labels = list(spec)
            for i in wc["broken_by"][wc["broken_by"] >= 0].tolist():
                broken[labels[i]] += 1
            outside = wc["outside_ball"]
            still = robust[norm].clone()
            still[alive] = wc["robust"]
            robust[norm] = still
        k = int(robust[norm].sum())
        out["curves"].setdefault(norm, []).append(
            {"eps": float(eps), "robust_accuracy": _interval(k, n), "broken_by": broken,
             "outside_ball_not_counted": outside})
    bar.close()
    return out
