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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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


# ============================================================= register v3 (issue #30)
# F09's pair rule, F11's two retraining regimes with their controls, F12's trial per poison
# draw. Appended as new functions; the register-v2 helpers above are unchanged.


@dataclass(frozen=True)
class ConfusionPair:
    """F09's class pair: `source` (true class) -> `target` (predicted class), the largest
    off-diagonal entry `count` of the clean victim's confusion `matrix` (Long [C, C],
    rows = true class) on the held-out images."""

    source: int
    target: int
    count: int
    matrix: torch.Tensor


def confusion_pair(model_or_logits, x_heldout: torch.Tensor | None, y_heldout: torch.Tensor, *,
                   num_classes: int) -> ConfusionPair:
    """The off-diagonal (true, predicted) pair the clean victim confuses most (register v3, F09).

    Chosen before any poisoning, from the clean victim's predictions on held-out training
    images (1,000 in the register): the targeted flip then attacks the pair the model
    already finds closest, as class-pair flips do (Xiao, Xiao, Eckert 2012, ECAI;
    Biggio, Nelson, Laskov 2012, arXiv 1206.6389). Ties go to the lowest (true,
    predicted) pair in row-major order; a victim that confuses nothing gives (0, 1) with
    count 0 (the count is returned so the caller can see it).

    Args:
        model_or_logits: a model (run on `x_heldout`) or its logits [n, num_classes].
        x_heldout: the held-out images (ignored, may be None, when logits are given).
        y_heldout: their labels, Long [n].
        num_classes: number of classes (>= 2).
    Returns ConfusionPair(source, target, count, matrix).

    Example:
        >>> pair = confusion_pair(clean, x_train[-1000:], y_train[-1000:], num_classes=10)
        >>> targeted_flip(x, y, budget=label_budget(len(y), 0.05), source=pair.source, target=pair.target)
    """
    c = int(validate.number("num_classes", num_classes, low=2, integer=True))
    if torch.is_tensor(model_or_logits):
        logits = model_or_logits
        if logits.dim() != 2 or logits.shape[1] != c or not logits.is_floating_point():
            raise ConfigError(f"logits must be a floating tensor [n, {c}]; got {tuple(logits.shape)}")
        if logits.numel() and not bool(torch.isfinite(logits).all()):
            raise ConfigError("logits must be finite (no NaN or inf)")
        validate.labels("y_heldout", y_heldout, logits.shape[0], num_classes=c)
        pred = logits.argmax(1)
    else:
        validate.images("x_heldout", x_heldout)
        validate.labels("y_heldout", y_heldout, x_heldout.shape[0], num_classes=c)
        pred = models.predict(model_or_logits, x_heldout)
    cm = metrics.confusion_matrix(pred, y_heldout, c)
    off = cm.clone()
    off.fill_diagonal_(-1)
    # argmax of a flat tensor returns the first maximum: the lowest (true, predicted) pair.
    flat = int(off.flatten().argmax())
    return ConfusionPair(flat // c, flat % c, int(off.flatten()[flat]), cm)


@dataclass
class LogisticHead:
    """M logistic-regression heads on frozen features (float64).

    weight: [M, d] (binary: one logit, class 1 vs class 0) or [M, K, d] (multinomial);
    bias: [M] or [M, K]; iterations: L-BFGS iterations used (shared by the M heads,
    which are fitted as one sum of independent objectives); grad_max: largest gradient
    entry at the end (the convergence check).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    num_classes: int
    iterations: int
    grad_max: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[M, n] (binary: the class-1 logit) or [M, n, K]; features [n, d] or [M, n, d]."""
        f = features.to(self.weight)
        f = f.unsqueeze(0).expand(self.weight.shape[0], *f.shape) if f.dim() == 2 else f
        if self.num_classes == 2:
            return torch.einsum("mnd,md->mn", f, self.weight) + self.bias.unsqueeze(1)
        return torch.einsum("mnd,mkd->mnk", f, self.weight) + self.bias.unsqueeze(1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted class ids, Long [M, n]."""
        z = self.logits(features)
        return (z > 0).long() if self.num_classes == 2 else z.argmax(-1)


def fit_logistic_head(features: torch.Tensor, labels: torch.Tensor, *, num_classes: int = 2, l2: float = 1e-4,
                      max_iter: int = 500, tol: float = 1e-10) -> LogisticHead:
    """Logistic regression retrained from scratch on frozen features, by L-BFGS, batched.

    F11's transfer regime (register v3): Poison Frogs' victim retrains only its last
    layer on frozen features (Shafahi et al. 2018, arXiv 1804.00792, Sec. 4.1), here to
    convergence. Objective per head: mean cross-entropy + (l2 / 2) ||W||^2, the bias
    unpenalised; binary = one sigmoid logit (as scikit-learn parametrises it). This is
    scikit-learn's ``LogisticRegression(C=C)``, whose objective is
    ``C * sum_i loss_i + ||W||^2 / 2``: divided by C n it is ``mean loss + ||W||^2 / (2 C n)``,
    so **C = 1 / (l2 * n)** (tests/test_protocols_poisoning_v3.py checks the match).

    Batched: M heads (features [M, n, d], labels [M, n]) are fitted as one L-BFGS run on
    the sum of their objectives, which are independent, so the sum's minimiser is each
    head's own; one head per target of F11 (the 1,000 clean images + that target's poisons).
    Float64 throughout (L-BFGS with a strong-Wolfe line search; stops when the largest
    gradient entry is below `tol` or after `max_iter` iterations).

    Args:
        features: [n, d] or [M, n, d], finite. labels: [n] or [M, n], in 0..num_classes-1.
        num_classes: 2 (binary, the F11 task) or more (multinomial).
        l2: L2 weight (>= 0); default 1e-4 (the register's). max_iter: <= 500 in the register.
        tol: gradient tolerance of L-BFGS.
    Returns a LogisticHead (M = 1 for unbatched input).

    Example:
        >>> head = fit_logistic_head(clean.features(x_ft), (y_ft == base).long())
        >>> head.predict(clean.features(x_target))[0]      # 1 = labelled as the base class
    """
    c = int(validate.number("num_classes", num_classes, low=2, integer=True))
    validate.non_negative("l2", l2)
    validate.positive("max_iter", max_iter, integer=True)
    validate.positive("tol", tol)
    if not torch.is_tensor(features) or features.dim() not in (2, 3) or not features.is_floating_point():
        raise ConfigError(f"features must be a floating tensor [n, d] or [M, n, d]; got "
                          f"{tuple(features.shape) if torch.is_tensor(features) else type(features).__name__}")
    f = features.detach().double()
    if f.dim() == 2:
        f = f.unsqueeze(0)
        labels = labels.unsqueeze(0) if torch.is_tensor(labels) else labels
    m, n, d = f.shape
    if not torch.is_tensor(labels) or labels.shape != (m, n) or labels.is_floating_point() \
            or labels.dtype == torch.bool:
        raise ConfigError(f"labels must be an integer tensor shaped like features' first dimensions {(m, n)}")
    if n == 0 or not bool(torch.isfinite(f).all()):
        raise ConfigError("features must be non-empty and finite (no NaN or inf)")
    if int(labels.min()) < 0 or int(labels.max()) >= c:
        raise ConfigError(f"labels must lie in 0..{c - 1}")
    lab = labels.to(f.device)
    k = 1 if c == 2 else c
    w = torch.zeros(m, k, d, dtype=torch.float64, device=f.device, requires_grad=True)
    b = torch.zeros(m, k, dtype=torch.float64, device=f.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, max_eval=max_iter * 5 // 4 + 1,
                            tolerance_grad=tol, tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad(set_to_none=True)
        z = torch.einsum("mnd,mkd->mnk", f, w) + b.unsqueeze(1)
        if c == 2:
            loss = F.binary_cross_entropy_with_logits(z.squeeze(2), lab.double(), reduction="none").mean(1)
        else:
            loss = F.cross_entropy(z.reshape(m * n, c), lab.reshape(-1), reduction="none").view(m, n).mean(1)
        total = (loss + 0.5 * l2 * w.pow(2).flatten(1).sum(1)).sum()
        total.backward()
        return total

    opt.step(objective)
    objective()
    grad_max = float(torch.cat([w.grad.flatten(), b.grad.flatten()]).abs().max())
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    wf, bf = w.detach(), b.detach()
    return LogisticHead(wf.squeeze(1) if c == 2 else wf, bf.squeeze(1) if c == 2 else bf, c, iters, grad_max)
