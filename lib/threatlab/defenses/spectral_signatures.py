"""Spectral signatures, a poisoning defense: filter suspicious training examples.

`spectral_signatures` (Tran, Li, Madry 2018) scores every training example by its
squared projection, within its labelled class, on the top singular vector of the
centred penultimate representations, and flags the top-scoring fraction of each class.
It works on any representation tensor, so it can be tested on synthetic data with
planted outliers and run on ``model.penultimate(x)`` of a trained network.

    >>> reps = representations(model, x_poisoned)
    >>> res = spectral_signatures(reps, y_poisoned, remove_fraction=1.5 * eps)
    >>> recall, precision = detection_scores(res.flagged, poisoned.is_poison)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import runtime, validate
from ..errors import ConfigError

__all__ = ["FilterResult", "detection_scores", "removal_curve", "representations", "spectral_signatures"]


@dataclass
class FilterResult:
    """scores: outlier score per example [n] (higher = more suspicious);
    flagged: bool [n], the examples to drop; removed_per_class: Long [classes]."""

    scores: torch.Tensor
    flagged: torch.Tensor
    removed_per_class: torch.Tensor


def check_features(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> tuple[int, int]:
    """(n, classes) of a representation filter's inputs: features a finite floating
    tensor [n, d], labels integers [n] in 0..classes-1; ConfigError otherwise."""
    if not torch.is_tensor(features) or features.dim() != 2 or not features.is_floating_point():
        raise ConfigError(f"features must be a floating tensor [n, d]; got "
                          f"{tuple(features.shape) if torch.is_tensor(features) else type(features).__name__}")
    if features.numel() and not bool(torch.isfinite(features).all()):
        raise ConfigError("features must be finite (no NaN or inf)")
    n = features.shape[0]
    if (not torch.is_tensor(labels) or labels.shape != (n,) or labels.is_floating_point()
            or labels.dtype == torch.bool):
        raise ConfigError(f"labels must be an integer tensor of shape ({n},)")
    c = int(labels.max()) + 1 if num_classes is None else int(
        validate.number("num_classes", num_classes, low=2, integer=True))
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ConfigError(f"labels must lie in 0..{c - 1}")
    return n, c


@torch.no_grad()
def representations(model, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """``model.penultimate(x)`` in batches, in eval mode: [n, feature_dim] on x's device."""
    validate.positive("batch_size", batch_size, integer=True)
    if not hasattr(model, "penultimate"):
        raise ConfigError("model must expose .penultimate(x) (see threatlab.models.Classifier)")
    with runtime.eval_mode(model):  # every submodule's own flag comes back afterwards
        dev = next(model.parameters()).device
        out = [model.penultimate(x[i:i + batch_size].to(dev)).to(x.device)
               for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def spectral_signatures(features: torch.Tensor, labels: torch.Tensor, *, remove_fraction: float,
                        num_classes: int | None = None) -> FilterResult:
    """Spectral-signature filtering of a (possibly) poisoned training set.

    Tran, Li, Madry (2018), "Spectral Signatures in Backdoor Attacks", arXiv 1811.00636.
    For each labelled class c with representations R_c [n_c, d]: centre R_c, take its
    top right singular vector v, score each row by ``((R_c - mean) @ v) ** 2`` and flag
    the ceil(remove_fraction * n_c) highest scores. The paper removes 1.5 x the expected
    poison fraction from every class (the defender does not know the target class).

    Args:
        features: representations [n, d] (e.g. `representations(model, x)`).
        labels: the training labels [n] (as poisoned: poisons carry the target label).
        remove_fraction: fraction of each class to flag, in [0, 1].
        num_classes: number of classes (default max(labels) + 1).
    Returns FilterResult(scores [n], flagged [n] bool, removed_per_class [classes]).

    Example:
        >>> res = spectral_signatures(reps, y, remove_fraction=0.075)
        >>> keep = ~res.flagged
        >>> x_clean, y_clean = x[keep], y[keep]
    """
    validate.number("remove_fraction", remove_fraction, low=0, high=1)
    n, c = check_features(features, labels, num_classes)

    feats = features.detach().double()  # SVD of near-degenerate classes is steadier in float64
    scores = torch.zeros(n, dtype=torch.float64, device=features.device)
    flagged = torch.zeros(n, dtype=torch.bool, device=features.device)
    removed = torch.zeros(c, dtype=torch.long)
    # One SVD per class (a handful), each batched over that class's examples.
    for k in range(c):
        idx = (labels == k).nonzero().squeeze(1)
        if idx.numel() < 2:
            continue
        r = feats[idx] - feats[idx].mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(r, full_matrices=False)
        s = (r @ vh[0]).pow(2)
        scores[idx] = s
        m = min(idx.numel(), math.ceil(remove_fraction * idx.numel() - 1e-9))
        if m:
            flagged[idx[s.topk(m).indices]] = True
        removed[k] = m
    return FilterResult(scores.float(), flagged, removed)


def detection_scores(flagged: torch.Tensor, is_poison: torch.Tensor) -> tuple[float, float]:
    """(recall, precision) of `flagged` against the ground truth `is_poison` (bool [n])."""
    if flagged.shape != is_poison.shape:
        raise ConfigError(f"flagged {tuple(flagged.shape)} and is_poison {tuple(is_poison.shape)} differ")
    tp = int((flagged & is_poison).sum())
    return tp / max(1, int(is_poison.sum())), tp / max(1, int(flagged.sum()))


def removal_curve(scores: torch.Tensor, labels: torch.Tensor, is_poison: torch.Tensor,
                  fractions) -> dict[str, list[float]]:
    """Recall and precision of spectral-signature filtering against the fraction removed.

    For each fraction f in `fractions`, flag the ceil(f * n_c) highest `scores` of every
    labelled class c (the rule of `spectral_signatures`, which computes the scores once
    for every f) and score the flags against `is_poison`. Returns {"fraction": [...],
    "removed": [...], "recall": [...], "precision": [...]} (removed = examples flagged).
    """
    if scores.shape != labels.shape or scores.shape != is_poison.shape:
        raise ConfigError(f"scores {tuple(scores.shape)}, labels {tuple(labels.shape)} and is_poison "
                          f"{tuple(is_poison.shape)} must have the same shape")
    fr = [float(validate.number(f"fractions[{i}]", f, low=0, high=1)) for i, f in enumerate(fractions)]
    s, lab, truth = scores.detach().cpu(), labels.detach().cpu(), is_poison.detach().cpu().bool()
    out: dict[str, list[float]] = {"fraction": fr, "removed": [], "recall": [], "precision": []}
    # Rank of each example within its class by descending score, computed once.
    rank = torch.empty(s.shape[0], dtype=torch.long)
    size = torch.zeros(s.shape[0], dtype=torch.long)
    for k in lab.unique().tolist():
        idx = (lab == k).nonzero().squeeze(1)
        order = s[idx].argsort(descending=True, stable=True)
        rank[idx[order]] = torch.arange(idx.numel())
        size[idx] = idx.numel()
    for f in fr:
        m = torch.ceil(f * size.double() - 1e-9).long().clamp_max(size)
        flagged = rank < m
        recall, precision = detection_scores(flagged, truth)
        out["removed"].append(int(flagged.sum()))
        out["recall"].append(recall)
        out["precision"].append(precision)
    return out
