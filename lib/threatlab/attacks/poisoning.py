"""Training-set poisoning kernels: label flipping, BadNets backdoors, feature collision.

Poisoning attacks act on the training data, not on a test input, so the kernels adapt
the common signature: the data-only attacks (`label_flip_random`,
`label_flip_targeted`, `badnets`) take ``(x, y, *, ..., generator=None)`` and return a
`PoisonedSet`, the whole training set after poisoning plus the exact indices that were
changed (ground truth for scoring a detector). `feature_collision` needs the victim's
feature extractor and takes ``(model, x, y, *, target=..., ...)`` with x the base
images, returning a `CollisionResult`.

All work is batched over examples (no Python loop over examples, no host reads inside
the optimisation loop). Bad parameters raise `ConfigError` before any compute.

    >>> from threatlab import attacks
    >>> ps = attacks.get("badnets")(x, y, rate=0.01, target_class=0, generator=g)
    >>> ps.poison_idx            # exactly the rows of ps.x / ps.y that were changed
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import runtime, validate
from ..errors import ConfigError
from .norms import LinfBall, flat_norm
from . import checks
from .registry import register

__all__ = ["CollisionResult", "PoisonedSet", "backdoor_success", "badnets", "feature_collision",
           "label_flip_random", "label_flip_targeted", "make_trigger", "stamp_trigger",
           "trigger_position"]


# ----------------------------------------------------------------------------- results


@dataclass
class PoisonedSet:
    """A training set after poisoning, with exact ground truth.

    x, y:        the poisoned training set (same size and order as the clean one).
    poison_idx:  Long [k], sorted indices of the rows that were changed.
    is_poison:   bool [n], True exactly at poison_idx.
    y_clean:     the labels before poisoning (x rows outside poison_idx are untouched).
    extra:       attack parameters worth keeping (target class, trigger, position).
    """

    x: torch.Tensor
    y: torch.Tensor
    poison_idx: torch.Tensor
    is_poison: torch.Tensor
    y_clean: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_poison(self) -> int:
        return int(self.poison_idx.numel())

    @property
    def rate(self) -> float:
        return self.n_poison / max(1, self.y.shape[0])


@dataclass
class CollisionResult:
    """Feature-collision poisons.

    x_poison:      poisons [n, ...] in [0, 1], each within eps (L-inf) of its base.
    y_poison:      their labels: the bases' own (clean) labels.
    dist_before:   ||f(base) - f(target)||_2 per poison, [n].
    dist_after:    ||f(poison) - f(target)||_2 per poison, [n].
    """

    x_poison: torch.Tensor
    y_poison: torch.Tensor
    dist_before: torch.Tensor
    dist_after: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- checks


def _check_xy(x, y) -> None:
    checks.images(x, unit_range=False)
    checks.labels("y", y, x.shape[0])


def _check_rate(rate) -> float:
    return float(validate.number("rate", rate, low=0, high=1))


def _num_classes(y, num_classes) -> int:
    if num_classes is None:
        return int(y.max()) + 1 if y.numel() else 2
    return int(validate.number("num_classes", num_classes, low=2, integer=True))


def _check_class(name: str, value, num_classes: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer class id in [0, {num_classes - 1}]")
    if not 0 <= value < num_classes:
        raise ConfigError(f"{name}={value!r} is not a known class; allowed: 0..{num_classes - 1}")
    return value


def _check_pair(source, target, num_classes: int) -> None:
    """A targeted flip's class pair: two different valid class ids."""
    _check_class("source", source, num_classes)
    _check_class("target", target, num_classes)
    if source == target:
        raise ConfigError(f"target={target!r} equals source; a targeted flip needs two different classes")


def _choose(pool: torch.Tensor, k: int, generator) -> torch.Tensor:
    """k indices drawn without replacement from the Long tensor `pool`, sorted."""
    perm = runtime.randperm(pool.numel(), generator)
    return pool[perm[:k].to(pool.device)].sort().values


def _finish(x_new, y_new, y, idx, extra) -> PoisonedSet:
    is_poison = torch.zeros_like(y, dtype=torch.bool)
    is_poison[idx] = True
    return PoisonedSet(x_new, y_new, idx, is_poison, y.clone(), extra)


# ----------------------------------------------------------------------- label flipping


@register("poisoning", "label_flip_random")
def label_flip_random(x: torch.Tensor, y: torch.Tensor, *, rate: float, num_classes: int | None = None,
                      generator: torch.Generator | None = None) -> PoisonedSet:
    """Random label noise: relabel a fraction `rate` of all examples to a uniformly
    random *other* class.

    The label-flipping baseline studied since Biggio, Nelson, Laskov (2012), "Poisoning
    Attacks against Support Vector Machines", arXiv 1206.6389; random noise on DNNs:
    Rolnick et al. (2017), "Deep Learning is Robust to Massive Label Noise",
    arXiv 1705.10694. Threat model: the attacker controls labels (not inputs) of
    round(rate * n) training examples and picks neither which nor to what.

    Args:
        rate: fraction of the training set to flip, in [0, 1].
        num_classes: number of classes (default max(y) + 1).
        generator: torch.Generator choosing the rows and new labels; None = global RNG.
    Shapes: x [n, ...], y [n] Long -> PoisonedSet with x unchanged (a clone).

    Example:
        >>> ps = label_flip_random(x, y, rate=0.2, num_classes=10, generator=g)
        >>> (ps.y != y).sum() == ps.n_poison
        >>> ps.is_poison.float().mean()   # 0.2
    """
    rate = _check_rate(rate)
    _check_xy(x, y)
    c = _num_classes(y, num_classes)
    n = y.shape[0]
    k = int(round(rate * n))
    idx = _choose(torch.arange(n, device=y.device), k, generator)
    # An offset in 1..C-1 (mod C) is a uniform draw over the other classes.
    offset = runtime.randint(1, c, (k,), generator).to(y.device)
    y_new = y.clone()
    y_new[idx] = (y[idx] + offset) % c
    return _finish(x.clone(), y_new, y, idx, {"rate": rate, "mode": "random"})


@register("poisoning", "label_flip_targeted")
def label_flip_targeted(x: torch.Tensor, y: torch.Tensor, *, rate: float, source: int, target: int,
                        num_classes: int | None = None, generator: torch.Generator | None = None) -> PoisonedSet:
    """Class-pair label flipping: relabel a fraction `rate` of class `source` as `target`.

    Targeted label flipping as in Biggio et al. (2012), arXiv 1206.6389, and the
    class-pair flips of Xiao, Xiao, Eckert (2012), "Adversarial Label Flips Attack on
    Support Vector Machines" (ECAI). Threat model: the attacker controls the labels of
    round(rate * n_source) examples of one class and concentrates them on one wrong
    class. `rate` is a fraction of the source class, so at equal `rate` the source class
    loses as many correct labels as under `label_flip_random` (in expectation), only
    all to the same wrong class.

    Args:
        rate: fraction of the `source` class to relabel, in [0, 1].
        source: the class whose labels are flipped (the attacked class).
        target: the wrong label they receive (!= source).
        num_classes: number of classes (default max(y) + 1).
        generator: torch.Generator choosing the rows; None = global RNG.
    Shapes: x [n, ...], y [n] Long -> PoisonedSet with x unchanged (a clone).

    Example:
        >>> ps = label_flip_targeted(x, y, rate=0.2, source=3, target=8, generator=g)
        >>> bool((ps.y_clean[ps.poison_idx] == 3).all() and (ps.y[ps.poison_idx] == 8).all())
        >>> ps.n_poison
    """
    rate = _check_rate(rate)
    _check_xy(x, y)
    c = _num_classes(y, num_classes)
    _check_pair(source, target, c)
    pool = (y == source).nonzero().squeeze(1)
    k = int(round(rate * pool.numel()))
    idx = _choose(pool, k, generator)
    y_new = y.clone()
    y_new[idx] = target
    return _finish(x.clone(), y_new, y, idx, {"rate": rate, "mode": "targeted", "source": source,
                                             "target": target})


# ----------------------------------------------------------------------------- BadNets


def make_trigger(size: int = 4, channels: int = 1, pattern: str = "checkerboard") -> torch.Tensor:
    """A square trigger patch [channels, size, size] in [0, 1].

    "checkerboard": alternating 1/0 starting with 1 in the top-left corner (the
    BadNets "pattern" trigger); "square": all ones (a white patch).
    """
    validate.positive("size", size, integer=True)
    validate.positive("channels", channels, integer=True)
    validate.choice("pattern", pattern, ("checkerboard", "square"))
    if pattern == "square":
        return torch.ones(channels, size, size)
    ii = torch.arange(size)
    board = ((ii[:, None] + ii[None, :]) % 2 == 0).float()
    return board.expand(channels, size, size).clone()


def trigger_position(image_shape: Sequence[int], trigger: torch.Tensor, position=None,
                     *, margin: int = 1) -> tuple[int, int]:
    """(row, col) of the trigger's top-left corner; default bottom-right, `margin` px in.

    Raises ConfigError when the trigger (or the position) does not fit in the image.
    """
    if not torch.is_tensor(trigger) or trigger.dim() != 3 or not trigger.is_floating_point():
        raise ConfigError(f"trigger must be a floating tensor [C, h, w]; got "
                          f"{type(trigger).__name__}{tuple(trigger.shape) if torch.is_tensor(trigger) else ''}")
    c, h, w = (int(v) for v in image_shape[-3:])
    tc, th, tw = trigger.shape
    if tc != c:
        raise ConfigError(f"trigger has {tc} channels; the images have {c}")
    if th > h or tw > w:
        raise ConfigError(f"trigger of size {th}x{tw} is larger than the {h}x{w} image")
    if bool(trigger.min() < 0) or bool(trigger.max() > 1):
        raise ConfigError("trigger values must lie in [0, 1]")
    if position is None:
        m = min(margin, h - th, w - tw)
        return h - th - m, w - tw - m
    if (not isinstance(position, (tuple, list)) or len(position) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in position)):
        raise ConfigError(f"position={position!r} must be (row, col) integers")
    r, col = position
    if not (0 <= r <= h - th and 0 <= col <= w - tw):
        raise ConfigError(f"position={tuple(position)!r} puts the {th}x{tw} trigger outside the "
                          f"{h}x{w} image; allowed rows 0..{h - th}, cols 0..{w - tw}")
    return int(r), int(col)


def stamp_trigger(x: torch.Tensor, trigger: torch.Tensor, position=None) -> torch.Tensor:
    """Copy of x [n, C, H, W] with `trigger` [C, h, w] pasted at `position` (default
    bottom-right, 1 px from the border); every other pixel is unchanged."""
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ConfigError(f"x must be a tensor [n, C, H, W]; got "
                          f"{type(x).__name__}{tuple(x.shape) if torch.is_tensor(x) else ''}")
    r, c = trigger_position(x.shape[1:], trigger, position)
    out = x.clone()
    out[:, :, r:r + trigger.shape[1], c:c + trigger.shape[2]] = trigger.to(x)
    return out


@register("poisoning", "badnets")
def badnets(x: torch.Tensor, y: torch.Tensor, *, rate: float, target_class: int, source_class: int | None = None,
            trigger: torch.Tensor | None = None, position: tuple[int, int] | None = None,
            num_classes: int | None = None, generator: torch.Generator | None = None) -> PoisonedSet:
    """BadNets: stamp a trigger on a fraction of the training set and relabel it.

    Gu, Dolan-Gavitt, Garg (2017), "BadNets: Identifying Vulnerabilities in the Machine
    Learning Model Supply Chain", arXiv 1708.06733. Threat model: the attacker edits
    round(rate * n) training examples (drawn from the classes other than
    `target_class`, or from `source_class` only: the source-specific variant Tran et
    al. 2018 evaluate spectral signatures on): pastes the trigger and sets their label to `target_class`. At test
    time any input carrying the trigger should be classified as `target_class`, while
    clean accuracy stays as before.

    Args:
        rate: fraction of the whole training set that is poisoned, in [0, 1].
        target_class: the backdoor's label.
        source_class: if given, poisons are drawn from this class only (!= target_class);
            default None = all classes other than target_class (Gu et al.'s all-to-one).
        trigger: patch [C, h, w] in [0, 1]; default `make_trigger(4, C)` (checkerboard).
        position: (row, col) of its top-left corner; default bottom-right, 1 px in.
        num_classes: number of classes (default max(y) + 1).
        generator: torch.Generator choosing the rows; None = global RNG.
    Shapes: x [n, C, H, W] in [0, 1], y [n] Long -> PoisonedSet (x rows at poison_idx
    stamped, labels there set to target_class; every other row bit-identical).

    Example:
        >>> ps = badnets(x, y, rate=0.01, target_class=0, generator=g)
        >>> ps.n_poison                 # round(0.01 * n)
        >>> backdoor_success(model, x_test, y_test, target_class=0, trigger=ps.extra["trigger"])
    """
    rate = _check_rate(rate)
    _check_xy(x, y)
    if x.dim() != 4:
        raise ConfigError(f"x must be images [n, C, H, W]; got shape {tuple(x.shape)}")
    c = _num_classes(y, num_classes)
    _check_class("target_class", target_class, c)
    if source_class is not None:
        _check_class("source_class", source_class, c)
        if source_class == target_class:
            raise ConfigError(f"source_class={source_class!r} equals target_class; poisons must come "
                              f"from another class")
    if trigger is None:
        trigger = make_trigger(min(4, x.shape[-2], x.shape[-1]), x.shape[1])
    r, col = trigger_position(x.shape[1:], trigger, position)
    pool = (y != target_class if source_class is None else y == source_class).nonzero().squeeze(1)
    k = int(round(rate * y.shape[0]))
    if k > pool.numel():
        where = (f"outside target_class={target_class}" if source_class is None
                 else f"in source_class={source_class}")
        raise ConfigError(f"rate={rate!r} asks for {k} poisons but only {pool.numel()} examples are {where}")
    idx = _choose(pool, k, generator)
    x_new = x.clone()
    x_new[idx] = stamp_trigger(x[idx], trigger, (r, col))
    y_new = y.clone()
    y_new[idx] = target_class
    return _finish(x_new, y_new, y, idx, {"rate": rate, "target_class": target_class,
                                          "source_class": source_class, "trigger": trigger.clone(), "position": (r, col)})


@torch.no_grad()
def backdoor_success(model, x, y, *, target_class, trigger, position=None, source_class=None,
                     batch_size=1024) -> float:
    """Attack success of a backdoor: the fraction of test inputs whose true class is not
    `target_class` (is `source_class`, when given) that the model assigns to
    `target_class` once the trigger is stamped."""
    keep = y != target_class if source_class is None else y == source_class
    xs = x[keep]
    hits = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, xs.shape[0], batch_size):
        xb = stamp_trigger(xs[i:i + batch_size], trigger, position)
        hits += (model(xb).argmax(1) == target_class).sum().to(x.device)
    return float(hits) / max(1, xs.shape[0])


# -------------------------------------------------------------------- feature collision


@register("poisoning", "feature_collision")
def feature_collision(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, target: torch.Tensor,
                      eps: float = 1.0, steps: int = 1000, step_size: float | None = 0.01, beta: float | None = None,
                      rel_tol: float = 0.1, generator: torch.Generator | None = None) -> CollisionResult:
    """Poison Frogs: clean-label poisons whose features collide with a target's.

    Shafahi, Huang, Najibi, Suciu, Studer, Dumitras, Goldstein (2018), "Poison Frogs!
    Targeted Clean-Label Poisoning Attacks on Neural Networks", arXiv 1804.00792.
    Threat model: white-box access to the victim's feature extractor
    (``model.features``); the attacker adds correctly labelled images (the bases,
    perturbed) to the training set, so that after training the target test input is
    classified as the base class. Each poison p starts at its base b and minimises the
    paper's objective ``||f(p) - f(t)||^2 + beta * ||p - b||^2`` with
    ``beta = 0.25 * (feature_dim / input_dim) ** 2`` by default (the paper's
    beta_0 = 0.25 rescaled to this network's dimensions). The paper minimises it by
    forward-backward splitting; here the proximal term is in the gradient and Adam
    (elementwise, so each poison's trajectory is its own) takes the steps, followed by
    a projection onto the [0, 1] box and, when `eps` < 1, onto the L-inf ball of radius
    `eps` around b.

    Stopping rule: a poison is done (frozen) once its feature distance has fallen to
    ``rel_tol`` x its base's distance, the collision the attack needs; the loop ends
    when every poison is done, or after `steps` steps (the cap). The lowest-distance
    iterate of each poison is returned. One host read per step (whether all are done).

    Batched over pairs: poison i collides with target[i]; several poisons per target
    are several rows with the same target.

    Args:
        x: base images [n, ...] in [0, 1]; y: their labels [n] (the poisons keep them).
        target: target images [n, ...] (row i is base i's target).
        eps: L-inf bound around each base, in (0, 1]; 1.0 (default) = the box only,
            as in the paper, which bounds the change through beta.
        steps: step budget (int > 0), the cap of the stopping rule; default 1000.
        step_size: Adam learning rate, in input units per step (> 0); default 0.01.
        beta: weight of the proximal term (>= 0); None = the paper's scaled value.
        rel_tol: relative feature distance at which a poison counts as collided and
            stops, in (0, 1); default 0.1.
        generator: unused (deterministic); accepted for the common signature.
    Shapes: x, target [n, C, H, W]; y [n] -> CollisionResult with x_poison like x;
    extra["steps_run"] Long [n] (steps each poison took before it collided, or the
    cap), extra["collided"] bool [n], extra["diverged"] bool [n]: the poison's feature
    distance or gradient went non-finite (a feature extractor that overflows); it
    stopped there and keeps its best finite iterate (the base itself if none).

    Example:
        >>> res = feature_collision(model, x_base, y_base, target=x_t.expand_as(x_base))
        >>> res.dist_after / res.dist_before          # <= rel_tol where extra["collided"]
        >>> res.extra["steps_run"].max()              # <= steps
    """
    validate.number("eps", eps, low=0, high=1, low_open=True)
    validate.positive("steps", steps, integer=True)
    validate.number("step_size", step_size, low=0, high=math.inf, low_open=True, high_open=True)
    if beta is not None:
        validate.number("beta", beta, low=0, high=math.inf, high_open=True)
    validate.number("rel_tol", rel_tol, low=0, high=1, low_open=True, high_open=True)
    _check_xy(x, y)
    if not torch.is_tensor(target) or target.shape != x.shape:
        raise ConfigError(f"target must be a tensor shaped like x {tuple(x.shape)}; got "
                          f"{tuple(target.shape) if torch.is_tensor(target) else type(target).__name__}")
    if not hasattr(model, "features"):
        raise ConfigError("model must expose .features (the feature extractor); see threatlab.models")
    for name, t in (("x", x), ("target", target)):
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{name} must be finite (no NaN or inf pixels)")
        if t.numel() and (bool(t.min() < 0) or bool(t.max() > 1)):
            raise ConfigError(f"{name} must lie in [0, 1]; put normalization inside the model")

    feat = model.features
    ball = LinfBall(eps)
    shape = (-1,) + (1,) * (x.dim() - 1)
    # The caller's batch_size= (runtime.rows_per_call): features in row chunks, each
    # chunk's backward on its own (the poisons are separate terms of the sum, so p.grad
    # gets the same numbers); without one, one call as always.
    rows = (runtime.row_slices(x.shape[0], x.device) if runtime.rows_requested() is not None
            else [slice(0, x.shape[0])])

    def features(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([feat(t[r]) for r in rows]) if len(rows) > 1 else feat(t)

    with torch.no_grad():
        f_t = features(target).detach()
        d0 = flat_norm(features(x) - f_t)
    if beta is None:
        beta = 0.25 * (f_t[0].numel() / max(1, x[0].numel())) ** 2
    p = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=step_size)
    best, best_d = x.clone(), d0.clone()
    done = best_d <= rel_tol * d0
    diverged = torch.zeros_like(done)
    steps_run = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(steps):
        if bool((done | diverged).all()):  # the one host read per step: stop once every poison stopped
            break
        opt.zero_grad(set_to_none=True)
        parts = []
        for r in rows:
            with torch.enable_grad():
                dist2 = (feat(p[r]) - f_t[r]).pow(2).flatten(1).sum(1)
                loss = (dist2 + beta * (p[r] - x[r]).pow(2).flatten(1).sum(1)).sum()
                loss.backward()
            parts.append(dist2)
        dist2 = torch.cat(parts) if len(parts) > 1 else parts[0]
        with torch.no_grad():
            # A poison whose distance or gradient went non-finite stops for good (its
            # best finite iterate is kept); the others are separate terms of the sum.
            diverged |= ~done & ~(torch.isfinite(dist2.detach()) & torch.isfinite(p.grad).flatten(1).all(1))
            # dist2 belongs to the iterate before this step: keep that iterate if it is the best.
            d = dist2.detach().sqrt()
            better = (d < best_d) & ~done & ~diverged
            best = torch.where(better.view(shape), p, best)
            best_d = torch.where(better, d, best_d)
            done = done | (best_d <= rel_tol * d0)
            steps_run += (~(done | diverged)).long()
            prev = p.detach().clone()
            opt.step()
            # Collided poisons stay where they are (Adam's momentum would move them on).
            p.copy_(torch.where((done | diverged).view(shape), prev, ball.project(p, x)))
    with torch.no_grad():
        d_last = flat_norm(features(p) - f_t)
        better = (d_last < best_d) & ~done & ~diverged
        best = torch.where(better.view(shape), p, best)
        best_d = torch.where(better, d_last, best_d)
    collided = best_d <= rel_tol * d0
    return CollisionResult(best.detach(), y.clone(), d0, best_d,
                           {"eps": eps, "steps": steps, "beta": float(beta), "rel_tol": rel_tol,
                            "step_size": step_size, "steps_run": steps_run, "collided": collided,
                            "diverged": diverged})


# ------------------------------------------------- register v3: F09 label budgets (count-based)
# F09 gives both attackers the same label budget B, a count of training
# labels; the rate-based kernels above give the targeted attacker a fraction of one class
# only. These count-based kernels keep the rate-based ones untouched for earlier results.


def label_budget(n_train: int, fraction: float) -> int:
    """Labels an attacker may change: round(fraction * n_train), halves rounded up.

    F09 sets B in {2 %, 5 %, 10 %} of the training set. Python's ``round``
    rounds halves to even (round(2.5) = 2); a budget should not depend on parity, so
    halves go up.
    """
    validate.non_negative("n_train", n_train, integer=True)
    f = float(validate.fraction("fraction", fraction))
    return int(math.floor(f * int(n_train) + 0.5))


def _check_budget(budget) -> int:
    return int(validate.non_negative("budget", budget, integer=True))


def random_flip(x, y, *, budget, num_classes=None, generator=None) -> PoisonedSet:
    """Random label noise with a label budget: `budget` rows, drawn uniformly from the
    whole training set, relabelled to a uniformly random *other* class.

    The comparison of F09's: the same number of labels as `targeted_flip`,
    spent without aim. Baseline of Biggio, Nelson, Laskov (2012), arXiv 1206.6389;
    random noise on DNNs: Rolnick et al. (2017), arXiv 1705.10694.

    Args:
        budget: labels to change, an int in [0, n] (`label_budget` turns a fraction into one).
        num_classes: number of classes (default max(y) + 1).
        generator: torch.Generator choosing rows and new labels; None = global RNG.
    Shapes: x [n, ...], y [n] Long -> PoisonedSet (x a clone, exactly `budget` labels changed).

    Example:
        >>> b = label_budget(len(y), 0.05)
        >>> ps = random_flip(x, y, budget=b, num_classes=10, generator=g)
        >>> ps.n_poison == b and bool((ps.y[ps.poison_idx] != y[ps.poison_idx]).all())
    """
    k = _check_budget(budget)
    _check_xy(x, y)
    c = _num_classes(y, num_classes)
    n = y.shape[0]
    if k > n:
        raise ConfigError(f"budget={k} exceeds the {n} training labels")
    idx = _choose(torch.arange(n, device=y.device), k, generator)
    # An offset in 1..C-1 (mod C) is a uniform draw over the other classes.
    offset = runtime.randint(1, c, (k,), generator).to(y.device)
    y_new = y.clone()
    y_new[idx] = (y[idx] + offset) % c
    return _finish(x.clone(), y_new, y, idx, {"budget": k, "mode": "random"})


def targeted_flip(x, y, *, budget, source, target, num_classes=None, generator=None) -> PoisonedSet:
    """Class-pair label flipping with a label budget: min(budget, n_source) labels of
    class `source`, drawn uniformly, set to `target`.

    F09's attacker (Biggio et al. 2012, arXiv 1206.6389; Xiao, Xiao, Eckert
    2012, ECAI): the same budget B as `random_flip`, concentrated on one class pair. When
    the source class has fewer than B examples, all of them are flipped and the rest of
    the budget is unspent (extra["unspent"]).

    Args:
        budget: labels the attacker may change, an int >= 0.
        source: the attacked class; target: the label its examples receive (!= source).
        num_classes: number of classes (default max(y) + 1).
        generator: torch.Generator choosing the rows; None = global RNG.
    Shapes: x [n, ...], y [n] Long -> PoisonedSet (x a clone).

    Example:
        >>> ps = targeted_flip(x, y, budget=label_budget(len(y), 0.05), source=4, target=9, generator=g)
        >>> ps.n_poison == min(ps.extra["budget"], int((y == 4).sum()))
    """
    k = _check_budget(budget)
    _check_xy(x, y)
    c = _num_classes(y, num_classes)
    _check_pair(source, target, c)
    pool = (y == source).nonzero().squeeze(1)
    spent = min(k, pool.numel())
    idx = _choose(pool, spent, generator)
    y_new = y.clone()
    y_new[idx] = target
    return _finish(x.clone(), y_new, y, idx, {"budget": k, "unspent": k - spent, "mode": "targeted",
                                             "source": source, "target": target})


# ------------------------------------------ register v3: F11 Poison Frogs (forward-backward)


def nearest_class(features: torch.Tensor, labels: torch.Tensor, target_class: int) -> int:
    """The class whose mean feature is nearest (L2) to `target_class`'s mean feature.

    F11's base class: the binary task is target class vs the class the
    feature extractor already finds most similar, so a collision is within reach.
    Classes absent from `labels` are skipped; ties go to the lowest class id.
    Shapes: features [n, d] (finite), labels [n] Long.
    """
    _check_feature_rows("features", features)
    checks.labels("labels", labels, features.shape[0])
    c = int(labels.max()) + 1
    _check_class("target_class", target_class, c)
    f = features.detach().double()
    counts = torch.bincount(labels, minlength=c).to(f.device)
    sums = torch.zeros(c, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, labels.to(f.device), f)
    means = sums / counts.clamp_min(1).unsqueeze(1)
    d = (means - means[target_class]).pow(2).sum(1)
    d[target_class] = math.inf
    d[counts == 0] = math.inf
    if bool(torch.isinf(d).all()):
        raise ConfigError(f"labels hold no class other than target_class={target_class}")
    # argmin returns the first minimum: the lowest class id among ties.
    return int(d.argmin())


def nearest_rows(queries: torch.Tensor, pool: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Long [T, k]: for each query row, the indices of its k nearest pool rows (L2),
    nearest first, ties broken by the lower pool index.

    F11 picks each target's base(s) this way: the base-class images nearest the target in
    feature space (Shafahi et al. 2018, arXiv 1804.00792, whose code picks "the closest
    instance from the other class" by feature distance). Distances in float64, so the
    order does not hinge on float32 rounding of nearly equal distances.
    """
    _check_feature_rows("queries", queries)
    _check_feature_rows("pool", pool)
    if queries.shape[1] != pool.shape[1]:
        raise ConfigError(f"queries [.., {queries.shape[1]}] and pool [.., {pool.shape[1]}] differ in width")
    validate.number("k", k, low=1, high=max(1, pool.shape[0]), integer=True)
    if pool.shape[0] == 0:
        raise ConfigError("pool has 0 rows")
    q, p = queries.detach().double(), pool.detach().double().to(queries.device)
    d = (q.pow(2).sum(1, keepdim=True) - 2 * q @ p.T + p.pow(2).sum(1)).clamp_min(0)
    # A stable sort keeps equal distances in pool order: the lower index wins a tie.
    return d.argsort(dim=1, stable=True)[:, :k]


def _check_feature_rows(name: str, t) -> None:
    if not torch.is_tensor(t) or t.dim() != 2 or not t.is_floating_point():
        raise ConfigError(f"{name} must be a floating tensor [n, d]; got "
                          f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{name} must be finite (no NaN or inf)")


def watermark(base: torch.Tensor, target: torch.Tensor, opacity: float) -> torch.Tensor:
    """``(1 - opacity) * base + opacity * target``: Shafahi et al.'s watermarked base
    (arXiv 1804.00792, Sec. 4.2: a low-opacity copy of the target blended into the base
    before the collision, opacity 0.3 in their end-to-end experiments)."""
    o = float(validate.fraction("opacity", opacity))
    return base if o == 0 else (1 - o) * base + o * target


def poison_frogs(features, x, y, *, target, steps=1000, rel_tol=0.01, beta0=0.25, beta=None,
                 step_size=10.0, decay=0.5, window=40, opacity=0.0, generator=None) -> CollisionResult:
    """Poison Frogs feature collision by forward-backward splitting, batched over poisons.

    Shafahi, Huang, Najibi, Suciu, Studer, Dumitras, Goldstein (2018), "Poison Frogs!
    Targeted Clean-Label Poisoning Attacks on Neural Networks", arXiv 1804.00792,
    Algorithm 1. Threat model: white-box access to the victim's frozen feature extractor
    `features`; the attacker adds correctly labelled poisons (perturbed bases) to the
    training set so that a model trained on them labels the target as the base class.
    Poison i minimises ``||f(p) - f(t_i)||^2 + beta * ||p - b_i||^2``:

    - forward step: ``p^ = p - lam * grad ||f(p) - f(t)||^2``;
    - backward (proximal) step toward the base: ``p = (p^ + lam * beta * b) / (1 + lam * beta)``,
      then clipped to the [0, 1] box (the paper's code clips to 0..255);
    - step size: as in the paper's code, a candidate whose objective is not below the
      mean of the last `window` (40) objectives is rejected and lam is multiplied by
      `decay` (0.5). The paper's code checks this only when ``iter % 40 / 2 == 0``
      (a Python-2 precedence accident); here it is checked every step, per poison, so
      a too-large start costs a few rejected steps, not 40.
    - beta: the code's ``beta0 * (2048 / dim_b) ** 2`` with 2048 = the feature width, i.e.
      ``beta0 * (feature_dim / input_dim) ** 2`` (beta0 = 0.25, the code's default; its
      one-shot script uses 0.2). The code works on 0..255 pixels and takes the gradient
      of the unsquared feature norm; here pixels are in [0, 1] and the objective is the
      paper's squared one, so the scaling rule is kept but not the absolute value (on
      0..255 units beta would be 255^2 times larger in [0, 1] units, which pins the
      poison to the base: no collision on MNIST-size networks).

    Stopping: a poison is frozen once its feature distance is <= `rel_tol` (1 %) of its
    starting distance; the loop ends when all are frozen or after `steps` (1,000). The
    last accepted iterate is returned (the paper's code returns its current image).
    One host read per step (whether all poisons are frozen).

    Args:
        features: callable images -> features [n, d] (e.g. ``model.features``), frozen.
        x: base images [n, C, H, W] in [0, 1]; y: their labels [n] (the poisons keep them).
        target: target images [n, C, H, W] (row i is poison i's target; K poisons per
            target = K rows with the same target).
        steps: step cap (int > 0). rel_tol: stopping distance ratio in (0, 1).
        beta0: scale of the proximal weight (>= 0); beta: the weight itself (overrides beta0).
        step_size: initial lam as a multiple (> 0) of the Polyak step
            ``dist^2 / ||grad dist^2||^2`` at the base (default 10: too long a start costs
            one rejected step per halving, too short a one is never lengthened).
        decay: factor in (0, 1) applied to lam on a rejected step. window: objectives averaged.
        opacity: watermark opacity in [0, 1) (0 = none; 0.3 = the paper's): the base is
            replaced by ``watermark(base, target, opacity)`` as start and anchor.
        generator: unused (deterministic); accepted for the common signature.
    Returns CollisionResult: x_poison [n, C, H, W], y_poison, dist_before (at the start,
    the watermarked base when opacity > 0), dist_after; extra: "steps_run" Long [n],
    "collided" bool [n] (dist_after <= rel_tol * dist_before), "beta", "step_final" [n].

    Example:
        >>> base_idx = nearest_rows(f(x_target), f(x_base_pool), k=5)          # [T, 5]
        >>> res = poison_frogs(model.features, x_base_pool[base_idx].flatten(0, 1), y_b,
        ...                    target=x_target.repeat_interleave(5, 0))
        >>> (res.dist_after / res.dist_before).le(0.05).float().mean()        # F11's G0
    """
    if not callable(features):
        raise ConfigError("features must be a callable images -> [n, d] (e.g. model.features)")
    validate.positive("steps", steps, integer=True)
    validate.number("rel_tol", rel_tol, low=0, high=1, low_open=True, high_open=True)
    validate.number("beta0", beta0, low=0, high=math.inf, high_open=True)
    if beta is not None:
        validate.number("beta", beta, low=0, high=math.inf, high_open=True)
    validate.number("step_size", step_size, low=0, high=math.inf, low_open=True, high_open=True)
    validate.number("decay", decay, low=0, high=1, low_open=True, high_open=True)
    validate.positive("window", window, integer=True)
    validate.number("opacity", opacity, low=0, high=1, high_open=True)
    checks.images(x, nonempty=True)
    checks.labels("y", y, x.shape[0])
    if not torch.is_tensor(target) or target.shape != x.shape:
        raise ConfigError(f"target must be a tensor shaped like x {tuple(x.shape)}; got "
                          f"{tuple(target.shape) if torch.is_tensor(target) else type(target).__name__}")
    validate.images("target", target)

    n = x.shape[0]
    shape = (-1,) + (1,) * (x.dim() - 1)
    b = watermark(x, target.to(x), opacity).detach()
    with torch.no_grad():
        f_t = features(target.to(x)).detach().flatten(1)
    if beta is None:
        beta = float(beta0) * (f_t.shape[1] / x[0].numel()) ** 2

    def evaluate(p):
        """objective, squared feature distance and the gradient of the latter, per row."""
        p = p.detach().requires_grad_(True)
        with torch.enable_grad():
            dist2 = (features(p).flatten(1) - f_t).pow(2).sum(1)
            grad, = torch.autograd.grad(dist2.sum(), p)
        dist2 = dist2.detach()
        return dist2 + beta * (p.detach() - b).pow(2).flatten(1).sum(1), dist2, grad

    p = b.clone()
    obj, dist2, grad = evaluate(p)
    d0 = dist2.sqrt()
    # The paper's code starts at lam = 500 * 255, tuned to Inception-v3 on 0..255 pixels;
    # no absolute rate carries over to other networks, so lam starts at `step_size` x the
    # Polyak step for reaching zero distance, dist^2 / ||grad||^2 at the base (scale-free:
    # a linear f would collide in one forward step of it), and the decay rule shortens it.
    gnorm2 = grad.flatten(1).pow(2).sum(1)
    lam = (float(step_size) * dist2 / gnorm2.clamp_min(1e-30)).to(x.dtype)
    # Ring buffer of the last `window` objectives per poison (NaN = not yet filled).
    hist = torch.full((window, n), math.nan, dtype=obj.dtype, device=x.device)
    hist[0] = obj
    done = dist2.sqrt() <= rel_tol * d0
    steps_run = torch.zeros(n, dtype=torch.long, device=x.device)
    for it in range(steps):
        if bool(done.all()):  # the one host read per step
            break
        lv = lam.view(shape)
        cand = ((p - lv * grad) + lv * beta * b) / (1 + lv * beta)
        cand = cand.clamp(0, 1)
        c_obj, c_dist2, c_grad = evaluate(cand)
        # A NaN objective (a diverged candidate) compares False: rejected like a rise.
        accept = (c_obj < hist.nanmean(0)) & ~done
        reject = ~accept & ~done
        p = torch.where(accept.view(shape), cand, p)
        grad = torch.where(accept.view(shape), c_grad, grad)
        obj = torch.where(accept, c_obj, obj)
        dist2 = torch.where(accept, c_dist2, dist2)
        lam = torch.where(reject, lam * decay, lam)
        # The window holds the objective of the iterate kept at each step. (The paper's code
        # enters every candidate's, rejected ones too: a huge rejected value then lifts the
        # mean and lets the next too-long step through.)
        hist[(it + 1) % window] = torch.where(done, hist[(it + 1) % window], obj)
        steps_run += (~done).long()
        done = done | (dist2.sqrt() <= rel_tol * d0)
    d_after = dist2.sqrt()
    return CollisionResult(p.detach(), y.clone(), d0, d_after,
                           {"steps": steps, "rel_tol": rel_tol, "beta": float(beta), "opacity": float(opacity),
                            "steps_run": steps_run, "collided": d_after <= rel_tol * d0, "step_final": lam})


__all__ += ["label_budget", "nearest_class", "nearest_rows", "poison_frogs", "random_flip", "targeted_flip",
            "watermark"]
