"""Neural Cleanse, a backdoor defense: reverse-engineer a minimal trigger per class.

Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao (2019), "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019. A backdoored label is
one that a *small* patch sends every input to. For each class c the defender solves

    min_{m, p}  CE(model((1 - m) * x + m * p), c) + cost_c * |m|_1

over a mask m [H, W] in [0, 1] and a pattern p [C, H, W] in [0, 1] on clean images x,
then scores the L1 norms of the C masks with the anomaly index (distance from the
median in units of the median absolute deviation, scaled to a normal's standard
deviation): a class whose index exceeds 2 with a mask smaller than the median is
flagged as backdoored.

    >>> nc = neural_cleanse(model, x_clean, num_classes=10, steps=300)
    >>> nc.flagged_classes, nc.anomaly_index
    >>> filt = trigger_neuron_filter(model, x_train, y_train, x_clean, y_clean, nc)

All classes are optimised at once (a batch of C triggers on the same clean images), so
the cost of the search is one forward-backward of C x batch_size rows per step.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import runtime, validate
from ..errors import ConfigError
from .spectral_signatures import FilterResult, representations

__all__ = ["NeuralCleanseResult", "anomaly_index", "apply_trigger", "neural_cleanse", "trigger_neuron_filter"]

_TANH_SCALE = 2 + 1e-4  # tanh(.) / scale + 0.5 stays strictly inside (0, 1)


@dataclass
class NeuralCleanseResult:
    """masks [classes, H, W] and patterns [classes, C, H, W] in [0, 1]: the reversed
    trigger of each class (the smallest mask that reached `success_threshold`, else the
    last one); l1 [classes]: mask L1 norms; success [classes]: fraction of the clean
    images the reversed trigger sends to its class; anomaly_index [classes];
    flagged_classes: classes with index > threshold and L1 below the median;
    diverged: bool [classes], the class's loss or gradient went non-finite and its
    search stopped there (its trigger is the best, else the last, finite one)."""

    masks: torch.Tensor
    patterns: torch.Tensor
    l1: torch.Tensor
    success: torch.Tensor
    anomaly_index: torch.Tensor
    flagged_classes: list[int]
    threshold: float
    diverged: torch.Tensor | None = None


def apply_trigger(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """(1 - mask) * x + mask * pattern for x [n, C, H, W], mask [H, W], pattern [C, H, W]."""
    m = mask.to(x).unsqueeze(0)
    return (1 - m) * x + m * pattern.to(x)


def anomaly_index(l1) -> torch.Tensor:
    """|l1 - median| / (1.4826 * MAD) per class (scipy.stats.median_abs_deviation with
    scale="normal"); zeros when the MAD is 0 (no spread, no outlier)."""
    import numpy as np
    from scipy import stats

    v = np.asarray(torch.as_tensor(l1).detach().double().cpu(), dtype=float)
    mad = float(stats.median_abs_deviation(v, scale="normal"))
    dev = np.abs(v - np.median(v))
    return torch.as_tensor(dev / mad if mad > 0 else np.zeros_like(v))


def neural_cleanse(model: torch.nn.Module, x: torch.Tensor, *, num_classes: int, steps: int = 300, lr: float = 0.1,
                   batch_size: int = 32, init_cost: float = 1e-3, success_threshold: float = 0.99, patience: int = 5,
                   window: int = 10, threshold: float = 2.0,
                   generator: torch.Generator | None = None) -> NeuralCleanseResult:
    """Reverse-engineer each class's minimal trigger and flag the anomalous classes.

    Wang et al. (2019), IEEE S&P (see the module doc). Threat model of the defender:
    white-box access to the trained model and a small set of clean images; it does not
    know whether, or which label, is backdoored. The optimisation follows the authors'
    code: mask and pattern parametrised through tanh, Adam (betas 0.5, 0.9), and a cost
    that starts at 0, is set to `init_cost` once the trigger first reaches
    `success_threshold`, then is multiplied by 1.5 after `patience` windows at or above
    the threshold and divided by 1.5 ** 1.5 after `patience` windows below it (a window
    = `window` steps, the authors' epoch). The best trigger of a class is its smallest
    mask whose window success reached the threshold.

    Args:
        model: the classifier (eval mode; not changed).
        x: clean images [n, C, H, W] in [0, 1], used in order in cyclic mini-batches of
            `batch_size` (pass a shuffled sample).
        num_classes: number of classes (>= 2).
        steps: optimisation steps (> 0). lr: Adam learning rate (> 0).
        batch_size: clean images per step, each stamped with every class's trigger.
        init_cost: the L1 weight once the trigger works (> 0; the authors' 1e-3).
        success_threshold: attack success a trigger must reach, in (0, 1].
        patience, window: cost schedule (positive integers), see above.
        threshold: anomaly-index bar (> 0; the paper's 2).
        generator: unused (deterministic start, data in order); kept for the signature.
    Returns NeuralCleanseResult. No host read inside the loop: the cost schedule and
    the best triggers are updated on the device. The classes' losses are separate terms
    of one sum: a class whose loss or gradient goes non-finite is frozen where it is
    (its Adam step undone, on the device) and reported in `diverged`, so its NaN never
    reaches the L1 norms the anomaly index compares.

    Example:
        >>> nc = neural_cleanse(model, x_clean[:500], num_classes=10, steps=300)
        >>> nc.l1                      # the backdoored class has the smallest mask
        >>> 0 in nc.flagged_classes
    """
    validate.number("num_classes", num_classes, low=2, integer=True)
    validate.positive("steps", steps, integer=True)
    validate.number("lr", lr, low=0, high=math.inf, low_open=True, high_open=True)
    validate.positive("batch_size", batch_size, integer=True)
    validate.number("init_cost", init_cost, low=0, high=math.inf, low_open=True, high_open=True)
    validate.number("success_threshold", success_threshold, low=0, high=1, low_open=True)
    validate.positive("patience", patience, integer=True)
    validate.positive("window", window, integer=True)
    validate.number("threshold", threshold, low=0, high=math.inf, low_open=True, high_open=True)
    if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point() or x.shape[0] == 0:
        raise ConfigError(f"x must be a non-empty floating tensor [n, C, H, W]; got "
                          f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if not bool(torch.isfinite(x).all()) or bool(x.min() < 0) or bool(x.max() > 1):
        raise ConfigError("x must be finite and lie in [0, 1]")

    k, (ch, h, w) = num_classes, x.shape[1:]
    dev = x.device
    # Deterministic start: a mid-grey pattern and a small uniform mask (tanh^-1 of -0.8
    # gives m = 0.1 everywhere); the gradient, not a random draw, breaks the symmetry.
    mask_t = torch.full((k, h, w), math.atanh(-0.8 * 1.0), device=dev, requires_grad=True)
    pattern_t = torch.zeros((k, ch, h, w), device=dev, requires_grad=True)
    opt = torch.optim.Adam([mask_t, pattern_t], lr=lr, betas=(0.5, 0.9))
    labels = torch.arange(k, device=dev)
    cost = torch.zeros(k, device=dev)
    cost_set = torch.zeros(k, dtype=torch.bool, device=dev)
    up = torch.zeros(k, dtype=torch.long, device=dev)
    down = torch.zeros(k, dtype=torch.long, device=dev)
    best_l1 = torch.full((k,), math.inf, device=dev)
    best_mask = torch.zeros(k, h, w, device=dev)
    best_pattern = torch.zeros(k, ch, h, w, device=dev)
    hits = torch.zeros(k, device=dev)
    dead = torch.zeros(k, dtype=torch.bool, device=dev)
    rows = 0
    # Eval mode for the search, every submodule's own training flag restored afterwards
    # (also on an exception): runtime.eval_mode, entered by hand to keep the long body flat.
    modes = contextlib.ExitStack()
    modes.enter_context(runtime.eval_mode(model))
    try:
        for step in range(steps):
            start = (step * batch_size) % x.shape[0]
            idx = torch.arange(start, start + batch_size, device=dev) % x.shape[0]
            xb = x[idx]
            with torch.enable_grad():
                mask = torch.tanh(mask_t) / _TANH_SCALE + 0.5
                pattern = torch.tanh(pattern_t) / _TANH_SCALE + 0.5
                m = mask.unsqueeze(1).unsqueeze(2)                       # [k, 1, 1, H, W]
                xa = (1 - m) * xb.unsqueeze(0) + m * pattern.unsqueeze(1)  # [k, B, C, H, W]
                logits = model(xa.reshape(-1, ch, h, w)).view(k, batch_size, -1)
                ce = F.cross_entropy(logits.reshape(k * batch_size, -1), labels.repeat_interleave(batch_size),
                                     reduction="none").view(k, batch_size).mean(1)
                l1 = mask.flatten(1).sum(1)
                loss = (ce + cost * l1).sum()  # classes are independent: their gradients do not mix
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with torch.no_grad():
                dead |= ~(torch.isfinite(ce.detach() + cost * l1.detach())
                          & torch.isfinite(mask_t.grad).flatten(1).all(1)
                          & torch.isfinite(pattern_t.grad).flatten(1).all(1))
                before = (mask_t.detach().clone(), pattern_t.detach().clone())
            opt.step()
            with torch.no_grad():
                mask_t.copy_(torch.where(dead[:, None, None], before[0], mask_t))
                pattern_t.copy_(torch.where(dead[:, None, None, None], before[1], pattern_t))
                hits += (logits.argmax(2) == labels[:, None]).float().sum(1)
                rows += batch_size
                if (step + 1) % window == 0 or step + 1 == steps:
                    succ = hits / rows
                    ok = succ >= success_threshold
                    better = ok & (l1.detach() < best_l1) & ~dead
                    best_l1 = torch.where(better, l1.detach(), best_l1)
                    best_mask = torch.where(better[:, None, None], mask.detach(), best_mask)
                    best_pattern = torch.where(better[:, None, None, None], pattern.detach(), best_pattern)
                    first = ok & ~cost_set
                    cost = torch.where(first, torch.full_like(cost, init_cost), cost)
                    cost_set = cost_set | first
                    up = torch.where(cost_set & ok, up + 1, torch.zeros_like(up))
                    down = torch.where(cost_set & ~ok, down + 1, torch.zeros_like(down))
                    cost = torch.where(up >= patience, cost * 1.5, cost)
                    cost = torch.where(down >= patience, cost / 1.5 ** 1.5, cost)
                    up = torch.where(up >= patience, torch.zeros_like(up), up)
                    down = torch.where(down >= patience, torch.zeros_like(down), down)
                    hits.zero_()
                    rows = 0
        with torch.no_grad():
            # A class whose trigger never worked keeps its last mask (and is no outlier
            # on the small side: its mask is what the search reached, not a backdoor).
            mask = torch.tanh(mask_t) / _TANH_SCALE + 0.5
            pattern = torch.tanh(pattern_t) / _TANH_SCALE + 0.5
            never = torch.isinf(best_l1)
            best_mask = torch.where(never[:, None, None], mask, best_mask)
            best_pattern = torch.where(never[:, None, None, None], pattern, best_pattern)
            l1_final = best_mask.flatten(1).sum(1)
            success = torch.stack([_success(model, x, best_mask[c], best_pattern[c], c) for c in range(k)])
    finally:
        modes.close()
    idx_a = anomaly_index(l1_final)
    med = float(l1_final.median())
    flagged = [c for c in range(k) if float(idx_a[c]) > threshold and float(l1_final[c]) < med]
    return NeuralCleanseResult(best_mask.cpu(), best_pattern.cpu(), l1_final.cpu(), success.cpu(), idx_a,
                               flagged, float(threshold), dead.cpu())


@torch.no_grad()
def _success(model, x, mask, pattern, c, batch_size=1024) -> torch.Tensor:
    hit = torch.zeros((), device=x.device)
    for i in range(0, x.shape[0], batch_size):
        hit += (model(apply_trigger(x[i:i + batch_size], mask, pattern)).argmax(1) == c).sum()
    return hit / x.shape[0]


def trigger_neuron_filter(model, x_train: torch.Tensor, y_train: torch.Tensor, x_clean: torch.Tensor,
                          y_clean: torch.Tensor, nc: NeuralCleanseResult, *, target_classes=None,
                          top_fraction: float = 0.01, fpr: float = 0.05) -> FilterResult:
    """Flag the training examples that carry a reversed trigger's activation profile.

    Wang et al.'s filter (Sec. VI-A), applied to the training set: for each flagged
    class c, the penultimate neurons whose mean activation c's reversed trigger raises
    most on the clean images (the top `top_fraction`, at least one) score an input by
    their mean activation. Only examples labelled c can be poisons aimed at c (the
    attacker labels them so), so only they are flagged, above the threshold that gives
    a false-positive rate of `fpr` on the defender's clean images of class c (the
    paper calibrates on clean inputs; calibrating within the class keeps c's own
    features from counting as trigger evidence).

    Args:
        x_train, y_train: the (possibly poisoned) training set.
        x_clean, y_clean: the defender's clean images and labels.
        nc: the `neural_cleanse` result. target_classes: classes to filter for
            (default ``nc.flagged_classes``; empty = flag nothing).
    Returns FilterResult(scores [n] (the filtering class's score, 0 elsewhere),
    flagged bool [n], removed_per_class [classes]).
    """
    validate.number("top_fraction", top_fraction, low=0, high=1, low_open=True)
    validate.number("fpr", fpr, low=0, high=1)
    k = nc.masks.shape[0]
    n = x_train.shape[0]
    if not torch.is_tensor(y_train) or y_train.shape != (n,):
        raise ConfigError(f"y_train must be a tensor of shape ({n},)")
    if not torch.is_tensor(y_clean) or y_clean.shape != (x_clean.shape[0],):
        raise ConfigError(f"y_clean must be a tensor of shape ({x_clean.shape[0]},)")
    classes = list(nc.flagged_classes if target_classes is None else target_classes)
    for i, c in enumerate(classes):
        validate.number(f"target_classes[{i}]", c, low=0, high=k - 1, integer=True)
    scores = torch.zeros(n)
    flagged = torch.zeros(n, dtype=torch.bool)
    removed = torch.zeros(k, dtype=torch.long)
    if not classes:
        return FilterResult(scores, flagged, removed)
    r_clean = representations(model, x_clean).cpu()
    r_train = representations(model, x_train).cpu()
    yc, yt = y_clean.cpu(), y_train.cpu()
    top = max(1, math.ceil(top_fraction * r_clean.shape[1] - 1e-9))
    for c in classes:  # one pass per flagged class (a handful at most)
        r_trig = representations(model, apply_trigger(x_clean, nc.masks[c].to(x_clean.device),
                                                      nc.patterns[c].to(x_clean.device))).cpu()
        neurons = (r_trig.mean(0) - r_clean.mean(0)).topk(top).indices
        own = yc == c
        if not bool(own.any()):
            raise ConfigError(f"the clean images hold no example of class {c}; the filter needs some to calibrate")
        thr = torch.quantile(r_clean[own][:, neurons].mean(1).double(), 1 - fpr)
        s = r_train[:, neurons].mean(1)
        mine = yt == c
        scores[mine] = s[mine]
        hit = mine & (s.double() > thr)
        flagged |= hit
        removed[c] = int(hit.sum())
    return FilterResult(scores, flagged, removed)
