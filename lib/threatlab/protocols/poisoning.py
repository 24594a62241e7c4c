"""Measuring poisoning attacks: flip effects, victim retraining for feature collision, filter outcomes.

The kernels in `threatlab.attacks.poisoning` build poisoned data; this module trains
the victims the way each threat model says and reads the outcome, so notebook 03 stays
a short sequence of calls.

    >>> acc = per_class_accuracy(model, x_test, y_test, num_classes=10)
    >>> eff = flip_effects(model, x_test, y_test, source=3, target=8, num_classes=10)
    >>> hits = collision_trials(model, x_ft, y_ft, poisons, base_labels, targets)
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .. import metrics, models, validate
from ..attacks import poisoning
from ..defenses import spectral_signatures
from ..errors import ConfigError
from ..runtime import progress_disabled

__all__ = ["REGIMES", "collision_trials", "evaluate_filter", "finetune", "flip_effects", "per_class_accuracy"]

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
                     y_poison: torch.Tensor, x_target: torch.Tensor, *, regimes: Sequence[str] = REGIMES,
                     epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                     desc: str = "retrain victims") -> dict[str, list[bool]]:
    """Whether feature-collision poisons flip their target, per regime and target.

    Args:
        model: the pretrained victim (left unchanged).
        x_clean, y_clean: the clean data the victim (re)trains on, together with the poisons.
        x_poison: [T, K, C, H, W] poisons, K per target (all K are used: the poison
            count is fixed before the run); y_poison: [T] their (clean) base label.
        x_target: [T, C, H, W] the target instances.
        regimes: subset of `REGIMES`.
    Returns {regime: [T] bools}: True where the victim retrained on the clean data plus
    that target's K poisons assigns the target its poisons' label. One retraining per
    (regime, target), seeded ``seed + target index``: the targets are independent attacks.
    """
    t = x_poison.shape[0]
    if x_target.shape[0] != t or y_poison.shape != (t,) or x_poison.dim() != x_target.dim() + 1:
        raise ConfigError(f"x_poison [T={t}, K, ...] needs x_target [T, ...] and y_poison [T]; got "
                          f"{tuple(x_target.shape)} and {tuple(y_poison.shape)}")
    for r in regimes:
        validate.choice("regime", r, REGIMES)
    k = x_poison.shape[1]
    out: dict[str, list[bool]] = {r: [] for r in regimes}
    jobs = [(r, i) for r in regimes for i in range(t)]
    for r, i in tqdm(jobs, desc=desc, disable=progress_disabled(), leave=False):
        xs = torch.cat([x_clean, x_poison[i]])
        ys = torch.cat([y_clean, y_poison[i].repeat(k)])
        m = finetune(model, xs, ys, regime=r, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed + i)
        out[r].append(bool(models.predict(m, x_target[i:i + 1])[0] == y_poison[i]))
    return out


@torch.no_grad()
def flip_effects(model, x: torch.Tensor, y: torch.Tensor, *, source: int, target: int,
                 num_classes: int) -> dict[str, float]:
    """What a label flip did to a victim, on the test set (x, y).

    Returns {"acc": overall accuracy, "confusion": fraction of true-`source` images
    predicted `target` (`metrics.confusion_rate`), "source_recall": accuracy on class
    `source`}. The confusion rate is F09's register-v2 metric; the recall is kept for
    comparison with v1 (random flips inflate it: they relabel other classes as `source`).
    """
    pred = models.predict(model, x).to(y.device)
    cm = metrics.confusion_matrix(pred, y, num_classes)
    return {"acc": metrics.accuracy(pred, y), "confusion": metrics.confusion_rate(pred, y, source=source, target=target),
            "source_recall": float(cm[source, source]) / max(1, int(cm[source].sum()))}


def evaluate_filter(flagged: torch.Tensor, is_poison: torch.Tensor, retrained, x_test: torch.Tensor,
                    y_test: torch.Tensor, *, target_class: int, trigger: torch.Tensor,
                    source_class: int | None = None) -> dict[str, float]:
    """A training-set filter's outcome: recall and precision of its flags against the
    planted poisons, and the victim retrained without the flagged examples: attack
    success (triggered test images of `source_class`, or of every other class, sent to
    `target_class`) and clean accuracy.
    """
    recall, precision = spectral_signatures.detection_scores(flagged.cpu(), is_poison.cpu())
    return {"removed": int(flagged.sum()), "recall": recall, "precision": precision,
            "success_after": poisoning.backdoor_success(retrained, x_test, y_test, target_class=target_class,
                                                        trigger=trigger, source_class=source_class),
            "clean_acc_after": models.accuracy(retrained, x_test, y_test)}
