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

from .. import attacks, metrics, models, runtime, validate
from ..attacks import poisoning
from ..defenses.spectral_signatures import detection_scores
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
    `source`}. The confusion rate is F09's metric; the recall is kept for
    comparison with the earlier metric (random flips inflate it: they relabel other classes as `source`).
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
    recall, precision = detection_scores(flagged.cpu(), is_poison.cpu())
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
# draw. Appended as new functions; the earlier helpers above are unchanged.


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
    """The off-diagonal (true, predicted) pair the clean victim confuses most (F09).

    Chosen before any poisoning, from the clean victim's predictions on held-out training
    images (1,000 in the rule): the targeted flip then attacks the pair the model
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
                      max_iter: int = 500, tol: float = 1e-10, shared_features: torch.Tensor | None = None,
                      shared_labels: torch.Tensor | None = None) -> LogisticHead:
    """Logistic regression retrained from scratch on frozen features, by L-BFGS, batched.

    F11's transfer regime: Poison Frogs' victim retrains only its last
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

    Rows every head trains on (F11's 1,000 clean images) can be passed once as
    `shared_features` / `shared_labels`: head m then trains on those rows and its own
    ``features[m]``, the same objective as with the shared rows copied into every head's
    features, computed as one [n_shared, d] x [d, M] product instead of M copies (50
    heads: 50 times less memory traffic per L-BFGS evaluation). The sums run in another
    order, so where L-BFGS converges the heads agree with the copied form to its
    tolerance (tested); where it stops at `max_iter` the two can differ along directions
    in which the objective is flat (benchmarks/logistic_head.py: same decisions).

    Args:
        features: [n, d] or [M, n, d], finite. labels: [n] or [M, n], in 0..num_classes-1.
        num_classes: 2 (binary, the F11 task) or more (multinomial).
        l2: L2 weight (>= 0); default 1e-4 (the rule's). max_iter: <= 500 in the rule.
        tol: gradient tolerance of L-BFGS.
        shared_features, shared_labels: [n_s, d] and [n_s], rows of every head (both or
            neither; features may then have n = 0 own rows).
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
    if (shared_features is None) != (shared_labels is None):
        raise ConfigError("shared_features and shared_labels go together: pass both or neither")
    fs, ls = _shared_rows(shared_features, shared_labels, d, f.device)
    n_all = n + fs.shape[0]
    if n_all == 0 or not bool(torch.isfinite(f).all()):
        raise ConfigError("features must be non-empty and finite (no NaN or inf)")
    for lab_ in (labels, ls):
        if lab_.numel() and (int(lab_.min()) < 0 or int(lab_.max()) >= c):
            raise ConfigError(f"labels must lie in 0..{c - 1}")
    lab = labels.to(f.device)
    k = 1 if c == 2 else c
    w = torch.zeros(m, k, d, dtype=torch.float64, device=f.device, requires_grad=True)
    b = torch.zeros(m, k, dtype=torch.float64, device=f.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, max_eval=max_iter * 5 // 4 + 1,
                            tolerance_grad=tol, tolerance_change=1e-14, history_size=20,
                            line_search_fn="strong_wolfe")

    def row_losses(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:   # z [M, r, k], y [M, r] -> summed [M]
        if c == 2:
            return F.binary_cross_entropy_with_logits(z.squeeze(2), y.double(), reduction="none").sum(1)
        r = z.shape[1]
        return F.cross_entropy(z.reshape(m * r, c), y.reshape(-1), reduction="none").view(m, r).sum(1)

    def objective():
        opt.zero_grad(set_to_none=True)
        loss = row_losses(torch.einsum("mnd,mkd->mnk", f, w) + b.unsqueeze(1), lab)
        if fs.shape[0]:  # the shared rows: one product for all M heads
            zs = (fs @ w.reshape(m * k, d).T).view(-1, m, k).transpose(0, 1) + b.unsqueeze(1)
            loss = loss + row_losses(zs, ls.expand(m, -1))
        total = (loss / n_all + 0.5 * l2 * w.pow(2).flatten(1).sum(1)).sum()
        total.backward()
        return total

    opt.step(objective)
    objective()
    grad_max = float(torch.cat([w.grad.flatten(), b.grad.flatten()]).abs().max())
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    wf, bf = w.detach(), b.detach()
    return LogisticHead(wf.squeeze(1) if c == 2 else wf, bf.squeeze(1) if c == 2 else bf, c, iters, grad_max)


def _shared_rows(features, labels, d: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """`fit_logistic_head`'s shared rows, checked: float64 [n_s, d] and Long [n_s] (empty
    when none are given)."""
    if features is None:
        return (torch.zeros(0, d, dtype=torch.float64, device=device),
                torch.zeros(0, dtype=torch.long, device=device))
    if not torch.is_tensor(features) or features.dim() != 2 or features.shape[1] != d \
            or not features.is_floating_point():
        raise ConfigError(f"shared_features must be a floating tensor [n, {d}]; got "
                          f"{tuple(features.shape) if torch.is_tensor(features) else type(features).__name__}")
    if not bool(torch.isfinite(features).all()):
        raise ConfigError("shared_features must be finite (no NaN or inf)")
    if not torch.is_tensor(labels) or labels.shape != (features.shape[0],) or labels.is_floating_point() \
            or labels.dtype == torch.bool:
        raise ConfigError(f"shared_labels must be an integer tensor [{features.shape[0]}] (one per shared row)")
    return features.detach().to(device, torch.float64), labels.to(device, torch.long)


@dataclass
class CollisionOutcomes:
    """Per-target outcomes of Poison Frogs poisons under F11's retraining regimes.

    success[regime]: bool [T], target t labelled as the base class by the victim retrained
        on the clean images + target t's poisons.
    control[regime]: bool [T], the same decision by the victim retrained on the clean
        images alone (no poisons): what the base class gets without any attack.
    extra: bookkeeping (head iterations and final gradient, seeds).
    """

    success: dict[str, torch.Tensor]
    control: dict[str, torch.Tensor]
    extra: dict[str, Any]


def collision_outcomes(model, x_clean: torch.Tensor, y_clean: torch.Tensor, x_poison: torch.Tensor,
                       x_target: torch.Tensor, *, target_class: int, base_class: int,
                       regimes: Sequence[str] = REGIMES, l2: float = 1e-4, max_iter: int = 500,
                       epochs: int = 10, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                       progress: bool = False) -> CollisionOutcomes:
    """F11: does each target's poisons make the retrained victim label it
    as the base class, under the transfer and the end-to-end regime, with controls.

    Shafahi et al. (2018), "Poison Frogs!", arXiv 1804.00792: clean-label feature
    collision succeeds when only the last layer is retrained (their one-shot kill) and
    much less when the whole network is (their Sec. 4.2). Binary task: `target_class`
    vs `base_class`; (x_clean, y_clean) hold only these two classes (500 + 500 in F11's
    rule), and every poison carries the base label.

    - "transfer": the trained victim's `model.features` stay frozen; a logistic
      regression (`fit_logistic_head`, L-BFGS <= `max_iter`, L2 `l2`) is fitted from
      scratch per target on the features of the clean images + that target's poisons,
      all T heads in one batched fit. Success: the head's logit for the base class > 0.
    - "end2end": per target, a copy of the whole trained victim (its 10-class head
      included) is fine-tuned on the clean images + that target's poisons (Adam `lr`,
      `epochs`, `batch_size`, shuffling seed ``seed + t``), all T copies as one stacked
      ensemble (`ensemble.finetune_ensemble`). Success: the base class's logit beats the
      target class's (the same two-way decision as the transfer head's; the other
      classes have no data in the task).
    - controls: the same retraining without poisons (one model per regime, seed `seed`),
      its decision on every target.

    Success is counted per target (the paper's "success rate" is the fraction of targets
    misclassified as the base class). The K poisons of a target are all used; for
    F11's 1-poison row pass ``x_poison[:, :1]`` (the nearest base first, as
    `attacks.poisoning.nearest_rows` orders them).

    Args:
        model: the trained victim (a `models.Classifier`, left unchanged).
        x_clean, y_clean: the head's / fine-tuning's clean training set (two classes).
        x_poison: [T, K, C, H, W] poisons, K per target. x_target: [T, C, H, W].
        target_class, base_class: the binary task's two classes (different).
        regimes: a subset of `REGIMES`.
    Returns CollisionOutcomes (bool tensors [T] on the CPU).

    Example:
        >>> out = collision_outcomes(clean, x_ft, y_ft, res.x_poison.view(T, 5, 1, 28, 28), x_t,
        ...                          target_class=tc, base_class=bc)
        >>> out.success["transfer"].float().mean() - out.control["transfer"].float().mean()
    """
    from .. import ensemble  # protocols -> ensemble: the stacked fine-tuning

    for r in regimes:
        validate.choice("regime", r, REGIMES)
    validate.non_negative("seed", seed, integer=True)
    validate.images("x_clean", x_clean)
    validate.images("x_target", x_target)
    if not torch.is_tensor(x_poison) or x_poison.dim() != x_target.dim() + 1 or x_poison.shape[0] != x_target.shape[0] \
            or x_poison.shape[2:] != x_target.shape[1:] or x_poison.shape[1] == 0:
        raise ConfigError(f"x_poison must be [T, K, ...] with x_target [T, ...]; got "
                          f"{tuple(x_poison.shape) if torch.is_tensor(x_poison) else type(x_poison).__name__} "
                          f"and {tuple(x_target.shape)}")
    validate.images("x_poison", x_poison.flatten(0, 1))
    validate.labels("y_clean", y_clean, x_clean.shape[0])
    for name, v in (("target_class", target_class), ("base_class", base_class)):
        validate.number(name, v, low=0, integer=True)
    if target_class == base_class:
        raise ConfigError(f"base_class={base_class} equals target_class; the task needs two classes")
    if not bool(((y_clean == target_class) | (y_clean == base_class)).all()):
        raise ConfigError(f"y_clean must hold only target_class={target_class} and base_class={base_class}")
    if not hasattr(model, "features"):
        raise ConfigError("model must expose .features (the feature extractor); see threatlab.models")

    t, k = x_poison.shape[:2]
    dev = next(model.parameters()).device
    model.eval()
    out = CollisionOutcomes({}, {}, {"targets": t, "poisons_per_target": k})
    if "transfer" in regimes:
        with torch.no_grad():
            f_clean = model.features(x_clean.to(dev)).flatten(1)
            f_poison = model.features(x_poison.flatten(0, 1).to(dev)).flatten(1).view(t, k, -1)
            f_target = model.features(x_target.to(dev)).flatten(1)
        yb = (y_clean.to(dev) == base_class).long()
        # Head t: the clean rows (shared by every head, passed once) + target t's poisons.
        head = fit_logistic_head(f_poison, torch.ones(t, k, dtype=torch.long, device=dev), l2=l2, max_iter=max_iter,
                                 shared_features=f_clean, shared_labels=yb)
        # Head t judges its own target only.
        out.success["transfer"] = (head.logits(f_target.unsqueeze(1))[:, 0] > 0).cpu()
        ctrl = fit_logistic_head(f_clean, yb, l2=l2, max_iter=max_iter)
        out.control["transfer"] = (ctrl.logits(f_target)[0] > 0).cpu()
        out.extra["transfer"] = {"iterations": head.iterations, "grad_max": head.grad_max,
                                 "control_iterations": ctrl.iterations, "control_grad_max": ctrl.grad_max}
    if "end2end" in regimes:
        n0 = x_clean.shape[0]
        x_pool = torch.cat([x_clean.to(dev), x_poison.flatten(0, 1).to(dev)])
        y_pool = torch.cat([y_clean.to(dev), torch.full((t * k,), base_class, dtype=torch.long, device=dev)])
        rows = torch.cat([torch.arange(n0).expand(t, n0), n0 + torch.arange(t * k).view(t, k)], dim=1)
        seeds = [seed + i for i in range(t)]
        kw = dict(epochs=epochs, lr=lr, batch_size=batch_size, device=dev, progress=progress)
        ens = ensemble.finetune_ensemble(model, x_pool, y_pool, rows, seeds=seeds, **kw)
        logits = ens.logits(x_target.to(dev))                      # [T copies, T targets, classes]
        own = logits[torch.arange(t), torch.arange(t)]             # copy t on target t
        out.success["end2end"] = (own[:, base_class] > own[:, target_class]).cpu()
        ctrl_e = ensemble.finetune_ensemble(model, x_clean.to(dev), y_clean.to(dev), torch.arange(n0).unsqueeze(0),
                                            seeds=[seed], **kw)
        lc = ctrl_e.logits(x_target.to(dev))[0]
        out.control["end2end"] = (lc[:, base_class] > lc[:, target_class]).cpu()
        out.extra["end2end"] = {"seeds": seeds, "control_seed": seed}
    return out


def poison_draw_generator(seed: int, draw: int) -> torch.Generator:
    """The generator of poison draw `draw` (0 or 1 in F12's: two draws per
    seed, G5) of run `seed`: seeded ``1000 * seed + draw``, distinct for every
    (seed, draw) with draw < 1000, the same on every call."""
    validate.non_negative("seed", seed, integer=True)
    validate.number("draw", draw, low=0, high=999, integer=True)
    return torch.Generator().manual_seed(1000 * int(seed) + int(draw))


def spectral_trial(victim: Callable[[torch.Tensor, torch.Tensor, str], torch.nn.Module], x_train: torch.Tensor,
                   y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *, rate: float,
                   target_class: int, source_class: int, trigger: torch.Tensor, num_classes: int, seed: int,
                   draw: int = 0, multiple: float = 1.5) -> dict[str, Any]:
    """F12: one spectral-signature trial for one poison draw.

    Tran, Li, Madry (2018), "Spectral Signatures in Backdoor Attacks", arXiv 1811.00636:
    source-specific BadNets poisons (Gu et al. 2017, arXiv 1708.06733; rate `rate` of the
    training set, class `source_class` stamped and relabelled `target_class`) drawn with
    `poison_draw_generator(seed, draw)`; ``victim(x, y, tag)`` trains the victim on the
    poisoned set; `spectral_signatures` removes ``multiple`` x the poison share of every
    class (the paper's 1.5 x eps: in the target-labelled class, 1.5 x the poison count);
    the victim is retrained without the flagged examples (tag suffix ``_retrained``).
    Tags carry seed and draw, so a caching victim keeps the draws apart.

    Returns {"seed", "draw", "n_poison", "removed", "recall", "precision",
    "poisons_left" (poisons not flagged), "success_before", "success_after",
    "clean_acc_after"}: success = triggered test images of `source_class` labelled
    `target_class` (`attacks.poisoning.backdoor_success`).
    """
    from ..defenses.spectral_signatures import representations, spectral_signatures as signatures

    if not callable(victim):
        raise ConfigError(f"victim={victim!r} must be a callable victim(x, y, tag) -> trained model")
    validate.number("rate", rate, low=0, high=1, low_open=True)
    validate.number("multiple", multiple, low=0, low_open=True)
    gen = poison_draw_generator(seed, draw)
    ps = attacks.get("badnets")(x_train, y_train, rate=rate, target_class=target_class, source_class=source_class,
                                trigger=trigger, num_classes=num_classes, generator=gen)
    tag = f"spectral_s{seed}_d{draw}"
    poisoned = victim(ps.x, ps.y, tag)
    bd_kw = dict(target_class=target_class, trigger=trigger, source_class=source_class)
    share = ps.n_poison / max(1, int((ps.y == target_class).sum()))
    dev = next(poisoned.parameters()).device
    filt = signatures(representations(poisoned, ps.x.to(dev)), ps.y.to(dev), remove_fraction=min(1.0, multiple * share),
                      num_classes=num_classes)
    keep = ~filt.flagged.cpu()
    retrained = victim(ps.x[keep], ps.y[keep], f"{tag}_retrained")
    res = evaluate_filter(filt.flagged, ps.is_poison, retrained, x_test, y_test, **bd_kw)
    caught = int((filt.flagged.cpu() & ps.is_poison.cpu()).sum())
    return {"seed": int(seed), "draw": int(draw), "n_poison": ps.n_poison, **res,
            "poisons_left": ps.n_poison - caught,
            "success_before": poisoning.backdoor_success(poisoned, x_test, y_test, **bd_kw)}


__all__ += ["CollisionOutcomes", "ConfusionPair", "collision_outcomes", "confusion_pair", "fit_logistic_head",
            "LogisticHead", "poison_draw_generator", "spectral_trial"]


def craft_frogs(model, x_target: torch.Tensor, x_base_pool: torch.Tensor, *, base_class: int, n_poisons: int = 1,
                **collision_kw) -> tuple[poisoning.CollisionResult, torch.Tensor]:
    """F11's poisons: for each target, its `n_poisons` nearest base-class images in
    `model.features` space (nearest first) collided with it by `attacks.poisoning.poison_frogs`
    (Shafahi et al. 2018, arXiv 1804.00792), all T x K poisons in one batch.

    x_target: [T, C, H, W]; x_base_pool: base-class images [N, C, H, W]; collision_kw go
    to `poison_frogs` (steps, rel_tol, opacity=0.3 for the watermark row, ...).
    Returns (CollisionResult with rows target-major: row t * K + j is target t's j-th
    poison; base_idx Long [T, K] into x_base_pool). ``x_poison.view(T, K, ...)`` feeds
    `collision_outcomes`; its first column is the 1-poison row's poison.
    """
    validate.positive("n_poisons", n_poisons, integer=True)
    validate.images("x_target", x_target)
    validate.images("x_base_pool", x_base_pool)
    if not hasattr(model, "features"):
        raise ConfigError("model must expose .features (the feature extractor); see threatlab.models")
    dev = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        base_idx = poisoning.nearest_rows(model.features(x_target.to(dev)).flatten(1),
                                          model.features(x_base_pool.to(dev)).flatten(1), n_poisons)
    bases = x_base_pool.to(dev)[base_idx.flatten()]
    labels = torch.full((bases.shape[0],), int(base_class), dtype=torch.long, device=dev)
    res = poisoning.poison_frogs(model.features, bases, labels,
                                 target=x_target.to(dev).repeat_interleave(n_poisons, 0), **collision_kw)
    return res, base_idx


__all__ += ["craft_frogs"]


# ============================================================= register v3: the three trials of notebook 03
# Victims are trained by a caller-supplied `train_many(sets) -> models`, sets a list of
# (x, y, tag): the notebook decides how (cached, early-stopped per G1; stacked or not).

TrainMany = Callable[[Sequence[tuple[torch.Tensor, torch.Tensor, str]]], Sequence[torch.nn.Module]]


def flip_budget_trials(train_many: TrainMany, clean, x_train: torch.Tensor, y_train: torch.Tensor,
                       x_heldout: torch.Tensor, y_heldout: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                       *, budgets: Sequence[float], noise_rates: Sequence[float], num_classes: int,
                       seed: int) -> dict[str, Any]:
    """F09: random label noise against a targeted class-pair flip with the
    same label budget.

    1. The pair: `confusion_pair` of the clean victim on (x_heldout, y_heldout), chosen
       before any poisoning (source = true class, target = the class it is most often
       mistaken for).
    2. For each budget fraction B in `budgets`: `attacks.poisoning.targeted_flip` spends
       min(B, n_source) source labels on the target class, `random_flip` B labels drawn
       from the whole set; for each rate in `noise_rates` random flips with that budget
       (a fraction shared by both lists is trained once). Every draw uses a fresh
       generator seeded ``seed``, so a budget's random rows are the same in both lists.
    3. `train_many` trains one victim per poisoned set; `flip_effects` measures test
       accuracy and the pair's confusion rate (source test images predicted target).

    Returns {"pair": {"source", "target", "heldout_count", "heldout_n"}, "clean": effects,
    "budgets", "noise_rates", "labels" (B as a count per budget), "spent_targeted" (labels
    the targeted flip changed), "random_budget"/"targeted_budget": {key: [per budget]},
    "random_noise": {key: [per noise rate]}} with keys "acc", "confusion", "source_recall".
    """
    for name, seq in (("budgets", budgets), ("noise_rates", noise_rates)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or not seq:
            raise ConfigError(f"{name}={seq!r} must be a non-empty list of fractions in [0, 1]")
        for i, r in enumerate(seq):
            validate.fraction(f"{name}[{i}]", r)
    validate.non_negative("seed", seed, integer=True)
    pair = confusion_pair(clean, x_heldout, y_heldout, num_classes=num_classes)
    n = y_train.shape[0]

    def gen():
        return torch.Generator().manual_seed(int(seed))

    fractions = sorted(set(float(b) for b in budgets) | set(float(r) for r in noise_rates))
    sets, keys = [], []
    for f in fractions:
        ps = poisoning.random_flip(x_train, y_train, budget=poisoning.label_budget(n, f), num_classes=num_classes,
                                   generator=gen())
        sets.append((ps.x, ps.y, f"flip_random_{f:g}"))
        keys.append(("random", f, ps.n_poison))
    for b in budgets:
        ps = poisoning.targeted_flip(x_train, y_train, budget=poisoning.label_budget(n, b), source=pair.source,
                                     target=pair.target, num_classes=num_classes, generator=gen())
        sets.append((ps.x, ps.y, f"flip_targeted_{b:g}"))
        keys.append(("targeted", float(b), ps.n_poison))
    trained = train_many(sets)
    kw = dict(source=pair.source, target=pair.target, num_classes=num_classes)
    eff = {key[:2]: flip_effects(m, x_test, y_test, **kw) for key, m in zip(keys, trained)}
    spent = {key[:2]: key[2] for key in keys}
    names = ("acc", "confusion", "source_recall")
    return {"pair": {"source": pair.source, "target": pair.target, "heldout_count": pair.count,
                     "heldout_n": int(y_heldout.shape[0])},
            "clean": flip_effects(clean, x_test, y_test, **kw),
            "budgets": [float(b) for b in budgets], "noise_rates": [float(r) for r in noise_rates],
            "labels": [poisoning.label_budget(n, b) for b in budgets],
            "spent_targeted": [spent[("targeted", float(b))] for b in budgets],
            "random_budget": {k: [eff[("random", float(b))][k] for b in budgets] for k in names},
            "targeted_budget": {k: [eff[("targeted", float(b))][k] for b in budgets] for k in names},
            "random_noise": {k: [eff[("random", float(r))][k] for r in noise_rates] for k in names},
            "n_source_test": int((y_test == pair.source).sum())}


def frogs_experiment(model, x_train: torch.Tensor, y_train: torch.Tensor, x_pool: torch.Tensor,
                     y_pool: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *, n_targets: int,
                     n_clean_per_class: int = 500, n_poisons: int = 5, opacity: float = 0.3, steps: int = 1000,
                     rel_tol: float = 0.01, power_tol: float = 0.05, epochs: int = 10, lr: float = 1e-3,
                     batch_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """F11: Poison Frogs (Shafahi et al. 2018, arXiv 1804.00792) in a CPU
    version of its setting, with no-poison controls.

    - Task: binary, target class vs base class. The target class is drawn by a generator
      seeded ``seed``; the base class is the one whose mean feature (the trained victim's
      `model.features` on x_train) is nearest the target class's (`nearest_class`).
    - Clean training set of the retrained victims: `n_clean_per_class` images of each of
      the two classes from (x_train, y_train), in a seeded order.
    - Targets: `n_targets` test images of the target class the victim classifies
      correctly, drawn by the same generator.
    - Poisons (`craft_frogs`): per target its `n_poisons` nearest base-class images of the
      pool (x_pool: training images outside the victim's training set) in feature space,
      collided until <= `rel_tol` of the starting feature distance or `steps` steps.
      Rows: "1 poison" (the nearest base's poison only), f"{K} poisons", and
      f"{K} poisons, watermark {opacity:.0%}" (the bases blended with the target first).
    - Each row: `collision_outcomes` under "transfer" (logistic head from scratch,
      L-BFGS) and "end2end" (10 epochs fine-tuning), each with its no-poison control.

    Returns {"target_class", "base_class", "n_targets", "n_clean", "rows": {row:
    {"poisons", "hits_transfer", "hits_end2end", "hits_control_transfer",
    "hits_control_end2end", "collided_fraction" (poisons within `power_tol` of their
    start: G0 / power), "collided_1pct", "rel_dist_median", "steps_max"}},
    "head_grad_max"}, plus "examples" (targets, bases, poisons of the 1-poison row: tensors).
    """
    validate.positive("n_targets", n_targets, integer=True)
    validate.positive("n_clean_per_class", n_clean_per_class, integer=True)
    validate.positive("n_poisons", n_poisons, integer=True)
    validate.number("opacity", opacity, low=0, high=1, high_open=True)
    validate.number("power_tol", power_tol, low=0, high=1, low_open=True, high_open=True)
    validate.non_negative("seed", seed, integer=True)
    if not hasattr(model, "features"):
        raise ConfigError("model must expose .features (the feature extractor); see threatlab.models")
    g = torch.Generator().manual_seed(int(seed))
    dev = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        feats = model.features(x_train.to(dev)).flatten(1)
        pred_test = models.predict(model, x_test.to(dev)).cpu()
    classes = sorted(set(y_train.tolist()))
    tc = classes[int(runtime.randint(0, len(classes), (1,), g))]
    bc = poisoning.nearest_class(feats, y_train.to(dev), tc)
    order = runtime.randperm(y_train.shape[0], g)
    rows_t = order[y_train[order] == tc][:n_clean_per_class]
    rows_b = order[y_train[order] == bc][:n_clean_per_class]
    if rows_t.numel() < n_clean_per_class or rows_b.numel() < n_clean_per_class:
        raise ConfigError(f"n_clean_per_class={n_clean_per_class} exceeds the training images of class {tc} "
                          f"({rows_t.numel()}) or {bc} ({rows_b.numel()})")
    clean_rows = torch.cat([rows_t, rows_b])
    x_clean, y_clean = x_train[clean_rows], y_train[clean_rows]
    ok = ((y_test == tc) & (pred_test == y_test.cpu())).nonzero().squeeze(1)
    if ok.numel() < n_targets:
        raise ConfigError(f"n_targets={n_targets} exceeds the {ok.numel()} correctly classified test images of class {tc}")
    t_idx = ok[runtime.randperm(ok.numel(), g)[:n_targets]]
    x_tgt = x_test[t_idx]
    pool = x_pool[y_pool == bc]
    if pool.shape[0] < n_poisons:
        raise ConfigError(f"n_poisons={n_poisons} exceeds the {pool.shape[0]} pool images of base class {bc}")
    crafted = {}
    for wm in (0.0, float(opacity)):
        res, base_idx = craft_frogs(model, x_tgt, pool, base_class=bc, n_poisons=n_poisons, steps=steps,
                                    rel_tol=rel_tol, opacity=wm)
        crafted[wm] = (res, base_idx)
    res0, base_idx0 = crafted[0.0]
    plan = {"1 poison": (res0, 1), f"{n_poisons} poisons": (res0, n_poisons),
            f"{n_poisons} poisons, watermark {opacity:.0%}": (crafted[float(opacity)][0], n_poisons)}
    out: dict[str, Any] = {"target_class": int(tc), "base_class": int(bc), "n_targets": int(n_targets),
                           "n_clean": int(x_clean.shape[0]), "rows": {}}
    shape = x_tgt.shape[1:]
    for name, (res, k) in plan.items():
        xp = res.x_poison.view(n_targets, n_poisons, *shape)[:, :k]
        rel = (res.dist_after / res.dist_before).view(n_targets, n_poisons)[:, :k].cpu()
        steps_run = res.extra["steps_run"].view(n_targets, n_poisons)[:, :k]
        oc = collision_outcomes(model, x_clean, y_clean, xp, x_tgt, target_class=tc, base_class=bc, epochs=epochs,
                                lr=lr, batch_size=batch_size, seed=seed)
        out["rows"][name] = {"poisons": int(k),
                             "hits_transfer": int(oc.success["transfer"].sum()),
                             "hits_end2end": int(oc.success["end2end"].sum()),
                             "hits_control_transfer": int(oc.control["transfer"].sum()),
                             "hits_control_end2end": int(oc.control["end2end"].sum()),
                             "collided_fraction": float((rel <= power_tol).float().mean()),
                             "collided_1pct": float((rel <= rel_tol).float().mean()),
                             "rel_dist_median": float(rel.median()),
                             "steps_max": int(steps_run.max()),
                             "head_grad_max": float(oc.extra["transfer"]["grad_max"])}
    out["examples"] = {"target": x_tgt.cpu(), "base": pool[base_idx0[:, 0].cpu()].cpu(),
                       "poison": res0.x_poison.view(n_targets, n_poisons, *shape)[:, 0].cpu()}
    return out


__all__ += ["flip_budget_trials", "frogs_experiment"]


def badnets_trials(train_many: TrainMany, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                   y_test: torch.Tensor, *, rates: Sequence[float], target_class: int, trigger: torch.Tensor,
                   num_classes: int, seed: int) -> tuple[torch.nn.Module, dict[str, Any], list[dict[str, Any]]]:
    """F10 as `badnets_sweep`, with every victim (the unpoisoned one first, then one per
    rate) trained by one `train_many` call, so victims of one size train at once.
    Returns (clean victim, bd, rows) with bd and rows as `badnets_sweep` gives them, plus
    bd["n_success_test"] (triggered test images the success rate is measured on)."""
    if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or not rates:
        raise ConfigError(f"rates={rates!r} must be a non-empty list of fractions in [0, 1]")
    for i, r in enumerate(rates):
        validate.fraction(f"rates[{i}]", r)
    validate.number("num_classes", num_classes, low=2, integer=True)
    validate.number("target_class", target_class, low=0, high=num_classes - 1, integer=True)
    validate.non_negative("seed", seed, integer=True)
    poisoning.trigger_position(x_train.shape[1:], trigger)
    sets = [(x_train, y_train, "backdoor_clean")]
    n_poison = []
    for rate in rates:
        ps = attacks.get("badnets")(x_train, y_train, rate=rate, target_class=target_class, trigger=trigger,
                                    num_classes=num_classes, generator=torch.Generator().manual_seed(seed))
        sets.append((ps.x, ps.y, f"badnets_{rate:g}"))
        n_poison.append(ps.n_poison)
    clean, *victims = train_many(sets)
    kw = dict(target_class=target_class, trigger=trigger)
    bd: dict[str, Any] = {"success": [poisoning.backdoor_success(m, x_test, y_test, **kw) for m in victims],
                          "clean_acc": [models.accuracy(m, x_test, y_test) for m in victims],
                          "n_poison": n_poison,
                          "success_unpoisoned": poisoning.backdoor_success(clean, x_test, y_test, **kw),
                          "n_success_test": int((y_test != target_class).sum())}
    rows = [{"rate": r, "poisons": bd["n_poison"][i], "attack success": bd["success"][i],
             "clean accuracy": bd["clean_acc"][i]} for i, r in enumerate(rates)]
    return clean, bd, rows


def spectral_trials(train_many: TrainMany, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                    y_test: torch.Tensor, *, rate: float, target_class: int, source_class: int,
                    trigger: torch.Tensor, num_classes: int, seed: int, draws: int = 2,
                    multiple: float = 1.5) -> tuple[list[dict[str, Any]], list[Any]]:
    """F12: `spectral_trial` for poison draws 0..draws-1 of run `seed`, the
    victims of every draw trained by one `train_many` call (then the retrained ones by
    another: the filtered sets of the draws have equal sizes, so they train at once too).
    Returns (one result dict per draw, as `spectral_trial`; plus per draw
    (poisoned set, poisoned victim, filter) for the defenses that reuse them)."""
    from ..defenses.spectral_signatures import representations, spectral_signatures as signatures

    validate.number("rate", rate, low=0, high=1, low_open=True)
    validate.number("multiple", multiple, low=0, low_open=True)
    validate.positive("draws", draws, integer=True)
    bd_kw = dict(target_class=target_class, trigger=trigger, source_class=source_class)
    sets = [attacks.get("badnets")(x_train, y_train, rate=rate, target_class=target_class, source_class=source_class,
                                   trigger=trigger, num_classes=num_classes, generator=poison_draw_generator(seed, d))
            for d in range(draws)]
    poisoned = train_many([(ps.x, ps.y, f"spectral_s{seed}_d{d}") for d, ps in enumerate(sets)])
    filters, keeps = [], []
    for ps, m in zip(sets, poisoned):
        dev = next(m.parameters()).device
        share = ps.n_poison / max(1, int((ps.y == target_class).sum()))
        filt = signatures(representations(m, ps.x.to(dev)), ps.y.to(dev), remove_fraction=min(1.0, multiple * share),
                          num_classes=num_classes)
        filters.append(filt)
        keeps.append(~filt.flagged.cpu())
    retrained = train_many([(ps.x[k], ps.y[k], f"spectral_s{seed}_d{d}_retrained")
                            for d, (ps, k) in enumerate(zip(sets, keeps))])
    out, kept = [], []
    for d, (ps, m, filt, r) in enumerate(zip(sets, poisoned, filters, retrained)):
        res = evaluate_filter(filt.flagged, ps.is_poison, r, x_test, y_test, **bd_kw)
        caught = int((filt.flagged.cpu() & ps.is_poison.cpu()).sum())
        out.append({"seed": int(seed), "draw": d, "n_poison": ps.n_poison, **res, "poisons_left": ps.n_poison - caught,
                    "removal_multiple": float(multiple),
                    "success_before": poisoning.backdoor_success(m, x_test, y_test, **bd_kw),
                    "clean_acc_before": models.accuracy(m, x_test, y_test)})
        kept.append((ps, m, filt))
    return out, kept


__all__ += ["badnets_trials", "spectral_trials"]
