"""Measurements shared by every family: accuracy, norms, agreement, ROC, PSNR.

All functions take tensors (any device) or arrays and return plain Python numbers or
tensors on the host, so results files hold JSON-ready values.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of predictions equal to labels."""
    return float((pred == y).float().mean()) if pred.numel() else float("nan")


def lp_norms(delta: torch.Tensor, *, tol: float = 1e-6) -> dict[str, torch.Tensor]:
    """Per-example L0 (pixels changed by more than `tol`), L2 and L-inf of a perturbation."""
    d = delta.detach().flatten(1)
    return {
        "l0": (d.abs() > tol).sum(1).to(torch.float64).cpu(),
        "l2": d.norm(p=2, dim=1).to(torch.float64).cpu(),
        "linf": d.abs().amax(1).to(torch.float64).cpu() if d.shape[1] else torch.zeros(d.shape[0]),
    }


def median(values: torch.Tensor) -> float:
    """Median of a 1-D tensor; NaN when empty (no successful example to measure)."""
    v = values.detach().to(torch.float64).cpu()
    return float(v.median()) if v.numel() else float("nan")


def agreement(pred_a: torch.Tensor, pred_b: torch.Tensor) -> float:
    """Fraction of inputs on which two models predict the same label (fidelity)."""
    return accuracy(pred_a, pred_b)


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every threshold; higher score = more likely positive (member).

    Ties are handled by grouping equal scores, so the curve is exact, not interpolated.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(labels).astype(bool).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(t)[distinct]
    fps = np.cumsum(~t)[distinct]
    p, n = max(t.sum(), 1), max((~t).sum(), 1)
    return np.r_[0.0, fps / n], np.r_[0.0, tps / p]


def auc(scores, labels) -> float:
    """Area under the ROC curve (trapezoidal over the exact curve)."""
    fpr, tpr = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores, labels, fpr_max: float) -> float:
    """Largest TPR reachable with FPR <= fpr_max (no interpolation)."""
    fpr, tpr = roc_curve(scores, labels)
    ok = fpr <= fpr_max + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def psnr(x_hat: torch.Tensor, x: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Per-example peak signal-to-noise ratio in dB (inputs in [0, data_range])."""
    mse = ((x_hat - x) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return (10 * torch.log10(data_range**2 / mse)).detach().cpu()


def spearman(a, b) -> float:
    """Spearman rank correlation of two sequences (average ranks for ties)."""
    from scipy.stats import spearmanr

    rho = spearmanr(np.asarray(a, float), np.asarray(b, float)).statistic
    return float(rho) if not math.isnan(rho) else float("nan")


def balanced_accuracy(scores, labels) -> float:
    """Best balanced accuracy (TPR + TNR) / 2 over all thresholds of the exact ROC curve
    (membership inference's threshold-optimal accuracy on a balanced set)."""
    fpr, tpr = roc_curve(scores, labels)
    return float(((tpr + 1.0 - fpr) / 2).max())


def queries_to_reach(queries, values, level: float, *, not_reached_factor: float = 2.0) -> tuple[float, bool]:
    """Queries an attack needs to reach `level` on a curve measured at a few budgets.

    `values[i]` (e.g. a substitute's agreement with the victim) was measured after
    `queries[i]` queries (positive, strictly increasing). The answer is read where the
    curve first reaches `level`, interpolated linearly in log(queries) between the last
    budget below the level and the first at or above it (budgets are spaced
    geometrically, so a straight line in log-queries is the natural reading between two
    of them). Reached at the first budget: that budget (the curve says nothing about
    fewer queries, so this is an upper bound). Never reached: the largest budget times
    `not_reached_factor` (the stand-in for "more than we tried", a finite
    number so that ratios and margins stay finite), with reached = False.

    Returns (queries as a float, reached).

        >>> queries_to_reach([100, 200, 400], [0.6, 0.7, 0.9], 0.8)   # between 200 and 400
        (282.84..., True)
    """
    from .errors import ConfigError

    q = np.asarray(queries, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if q.size == 0 or q.shape != v.shape:
        raise ConfigError(f"queries ({q.size}) and values ({v.size}) must be non-empty and of equal length")
    if not (np.isfinite(q).all() and np.isfinite(v).all()):
        raise ConfigError("queries and values must be finite numbers (no NaN or inf)")
    if (q <= 0).any() or (np.diff(q) <= 0).any():
        raise ConfigError(f"queries={q.tolist()} must be positive and strictly increasing")
    if not math.isfinite(level):
        raise ConfigError(f"level={level!r} must be a finite number")
    if not (math.isfinite(not_reached_factor) and not_reached_factor >= 1):
        raise ConfigError(f"not_reached_factor={not_reached_factor!r} must be a finite number >= 1")
    hit = np.nonzero(v >= level)[0]
    if hit.size == 0:
        return float(q[-1] * not_reached_factor), False
    i = int(hit[0])
    if i == 0 or v[i] == level:            # at a measured budget: no interpolation
        return float(q[i]), True
    # v[i - 1] < level <= v[i]: interpolate log(queries) in the value.
    t = (level - v[i - 1]) / (v[i] - v[i - 1])
    return float(math.exp(math.log(q[i - 1]) + t * (math.log(q[i]) - math.log(q[i - 1])))), True


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [num_classes, num_classes] on the host: row = true class, column = prediction."""
    p, t = pred.detach().long().cpu(), y.detach().long().cpu()
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and y {tuple(t.shape)} differ")
    flat = t * num_classes + p
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confusion_rate(pred: torch.Tensor, y: torch.Tensor, *, source: int, target: int) -> float:
    """Fraction of the examples of true class `source` predicted as `target`
    (the damage of a source -> target label flip; NaN when no example is of `source`).

    Unlike the source class's recall, it does not rise when other classes' examples are
    relabelled as `source` (random flips do that), and it counts only the one confusion
    the attacker wanted."""
    p, t = pred.detach().cpu(), y.detach().cpu()
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and y {tuple(t.shape)} differ")
    src = t == source
    n = int(src.sum())
    return float((p[src] == target).sum()) / n if n else float("nan")
