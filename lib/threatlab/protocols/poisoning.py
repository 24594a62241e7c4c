"""Measuring poisoning attacks: per-class accuracy and victim retraining for feature collision.

The kernels in `threatlab.attacks.poisoning` build poisoned data; this module trains
the victims the way each threat model says and reads the outcome, so notebook 03 stays
a short sequence of calls.

    >>> acc = per_class_accuracy(model, x_test, y_test, num_classes=10)
    >>> out = collision_trials(model, x_ft, y_ft, poisons, targets, base_labels, counts=[1, 5])
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .. import models, validate
from ..errors import ConfigError
from ..runtime import progress_disabled

__all__ = ["REGIMES", "collision_trials", "finetune", "per_class_accuracy"]

#: How the victim (re)trains on data containing clean-label poisons.
#: "transfer": the pretrained feature extractor is frozen, only the linear head trains.
#: "end2end": every parameter trains, from the same pretrained weights.
REGIMES = ("transfer", "end2end")


@torch.no_grad()
def per_class_accuracy(model, x: torch.Tensor, y: torch.Tensor, *, num_classes: int) -> list[float]:
    """Accuracy on the test examples of each class, [num_classes] floats (NaN if absent)."""
    pred = models.predict(model, x).to(y.device)
    hit = torch.zeros(num_classes, dtype=torch.float64)
    tot = torch.zeros(num_classes, dtype=torch.float64)
    tot.index_add_(0, y.cpu(), torch.ones(y.shape[0], dtype=torch.float64))
    hit.index_add_(0, y.cpu(), (pred == y).cpu().double())
    return (hit / tot).tolist()


def finetune(model, x: torch.Tensor, y: torch.Tensor, *, regime: str, epochs: int, lr: float,
             batch_size: int = 64, seed: int = 0):
    """A copy of `model` trained further on (x, y) under `regime` (see `REGIMES`)."""
    validate.choice("regime", regime, REGIMES)
    m = copy.deepcopy(model)
    if regime == "transfer":
        for p in m.features.parameters():
            p.requires_grad_(False)
    models.train(m, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=False)
    return m.eval()


def collision_trials(model, x_clean: torch.Tensor, y_clean: torch.Tensor, x_poison: torch.Tensor,
                     y_poison: torch.Tensor, x_target: torch.Tensor, *, counts: Sequence[int],
                     regimes: Sequence[str] = REGIMES, epochs: int = 10, lr: float = 1e-3,
                     batch_size: int = 64, seed: int = 0, desc: str = "retrain victims") -> dict[str, list[float]]:
    """Success of feature-collision poisons per regime and poison count.

    Args:
        model: the pretrained victim (left unchanged).
        x_clean, y_clean: the clean data the victim (re)trains on, together with the poisons.
        x_poison: [T, K, C, H, W] poisons, K per target; y_poison: [T] their (clean)
            base label, the same for a target's K poisons.
        x_target: [T, C, H, W] the target instances.
        counts: numbers of poisons to try (each <= K); the first `count` of each target's
            poisons are used.
        regimes: subset of `REGIMES`.
    Returns {regime: [success rate over the T targets for each count]}, where a target
    counts as a success when the retrained victim assigns it its poisons' label.
    One retraining per (regime, count, target): the targets are independent attacks.
    """
    t, k = x_poison.shape[:2]
    if x_target.shape[0] != t or y_poison.shape != (t,):
        raise ConfigError(f"x_poison [T={t}, K, ...] needs x_target [T, ...] and y_poison [T]; got "
                          f"{tuple(x_target.shape)} and {tuple(y_poison.shape)}")
    for c in counts:
        validate.number("counts[i]", c, low=1, high=k, integer=True)
    for r in regimes:
        validate.choice("regime", r, REGIMES)
    out: dict[str, list[float]] = {r: [] for r in regimes}
    jobs = [(r, c, i) for r in regimes for c in counts for i in range(t)]
    hits = {(r, c): 0 for r in regimes for c in counts}
    for r, c, i in tqdm(jobs, desc=desc, disable=progress_disabled(), leave=False):
        xs = torch.cat([x_clean, x_poison[i, :c]])
        ys = torch.cat([y_clean, y_poison[i].repeat(c)])
        m = finetune(model, xs, ys, regime=r, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed + i)
        hits[(r, c)] += int(models.predict(m, x_target[i:i + 1])[0] == y_poison[i])
    for r in regimes:
        out[r] = [hits[(r, c)] / t for c in counts]
    return out
