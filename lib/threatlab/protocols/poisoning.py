"""Measuring poisoning attacks: flip effects, victim retraining for feature collision, filter outcomes.

The kernels in `threatlab.attacks.poisoning` build poisoned data; this module trains
the victims the way each threat model says and reads the outcome, so notebook 03 stays
a short sequence of calls.

    >>> acc = per_class_accuracy(model, x_test, y_test, num_classes=10)
    >>> eff = flip_effects(model, x_test, y_test, source=3, target=8, num_classes=10)
    >>> hits = collision_trials(model, x_ft, y_ft, poisons, base_labels, targets)
    >>> bd, rows = badnets_sweep(victim, clean, x_tr, y_tr, x_te, y_te, rates=[0.01, 0.1], target_class=0,
    ...                          trigger=make_trigger(4), num_classes=10, seed=2)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import attacks, metrics, models, validate
from ..attacks import poisoning
from ..defenses import spectral_signatures
from ..errors import ConfigError
from ..runtime import progress_disabled

__all__ = ["REGIMES", "badnets_sweep", "collision_trials", "evaluate_filter", "finetune", "flip_effects",
           "per_class_accuracy"]

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


def badnets_sweep(victim: Callable[[torch.Tensor, torch.Tensor, str], torch.nn.Module], clean: torch.nn.Module,
                  x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                  rates: Sequence[float], target_class: int, trigger: torch.Tensor, num_classes: int,
                  seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """F10: BadNets (Gu, Dolan-Gavitt, Garg 2017, arXiv 1708.06733) at each poisoning rate.

    For each rate of `rates`, `attacks.poisoning.badnets` stamps `trigger` on
    round(rate * n) training rows drawn from the classes other than `target_class` and
    relabels them (a fresh generator seeded `seed` per rate), and ``victim(x, y, tag)``
    (tag ``f"badnets_{rate}"``) returns the model trained on that set; `clean` is the
    victim trained on the unpoisoned set. Attack success is measured on the triggered
    test images of the other classes (`backdoor_success`), clean accuracy on the
    untouched test set (x_test, y_test; on the victims' device).

    Returns (bd, rows): bd = {"success": [per rate], "clean_acc": [per rate],
    "n_poison": [per rate], "success_unpoisoned": the trigger's success on `clean`, the
    trivial baseline}; rows = one table row per rate {"rate", "poisons",
    "attack success", "clean accuracy"}. Every argument is checked before any victim trains.
    """
    if not callable(victim):
        raise ConfigError(f"victim={victim!r} must be a callable victim(x, y, tag) -> trained model")
    if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or not rates:
        raise ConfigError(f"rates={rates!r} must be a non-empty list of fractions in [0, 1]")
    for i, r in enumerate(rates):
        validate.fraction(f"rates[{i}]", r)
    validate.number("num_classes", num_classes, low=2, integer=True)
    validate.number("target_class", target_class, low=0, high=num_classes - 1, integer=True)
    validate.non_negative("seed", seed, integer=True)
    poisoning.trigger_position(x_train.shape[1:], trigger)   # ConfigError if the trigger does not fit
    bd: dict[str, Any] = {"success": [], "clean_acc": [], "n_poison": []}
    for rate in rates:
        ps = attacks.get("badnets")(x_train, y_train, rate=rate, target_class=target_class, trigger=trigger,
                                    num_classes=num_classes, generator=torch.Generator().manual_seed(seed))
        m = victim(ps.x, ps.y, f"badnets_{rate}")
        bd["success"].append(poisoning.backdoor_success(m, x_test, y_test, target_class=target_class,
                                                        trigger=trigger))
        bd["clean_acc"].append(models.accuracy(m, x_test, y_test))
        bd["n_poison"].append(ps.n_poison)
    bd["success_unpoisoned"] = poisoning.backdoor_success(clean, x_test, y_test, target_class=target_class,
                                                          trigger=trigger)
    rows = [{"rate": r, "poisons": bd["n_poison"][i], "attack success": bd["success"][i],
             "clean accuracy": bd["clean_acc"][i]} for i, r in enumerate(rates)]
    return bd, rows
