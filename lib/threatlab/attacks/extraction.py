"""Model extraction: copy a black-box classifier from its answers.

Two routes, both through `oracle.BlackBox`, so every query is counted by the oracle
(never assumed):

* `equation_solving` (Tramèr et al. 2016) recovers a multinomial logistic regression
  exactly from confidence scores: its centred log-probabilities are affine in x, so
  d + 1 random queries give a square linear system.
* Substitute training (Papernot et al. 2017; Orekondy et al. 2019): label a query set
  with the victim and fit a copy. Four registered query strategies differ only in which
  inputs they ask about: `noise` (uniform), `jacobian` (Jacobian-based dataset
  augmentation), `knockoff` (natural images from another distribution, random order)
  and `active` (margin-based selection from an unlabeled pool).

Every kernel takes the victim as a `BlackBox` in place of a model, plus the attacker's
own data `x`; agreement ("fidelity") is always measured against the victim's labels on
an evaluation set, never against ground truth (`fidelity`).

    >>> from threatlab import attacks
    >>> from threatlab.oracle import BlackBox
    >>> curve = attacks.get("active")(BlackBox(victim), pool, budgets=[100, 200, 400],
    ...                               eval_x=x_test, eval_labels=victim_labels(ev, x_test))
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics, models, validate
from ..errors import ConfigError
from ..oracle import BlackBox
from .registry import register

#: Query strategies of the substitute route (each one is a registered kernel).
STRATEGIES = ("noise", "jacobian", "knockoff", "active")
#: Oracle output modes a substitute can learn from.
OUTPUT_MODES = ("probs", "topk", "rounded", "label")


# ----------------------------------------------------------------------------- results


@dataclass
class EquationSolvingResult:
    """What equation solving recovered.

    weight:   [k, d] float64, centred over classes (sum over classes is 0): the softmax
              is invariant to adding one vector to every row, so only this is identifiable.
    bias:     [k] float64, centred the same way.
    queries:  queries the oracle counted for this call (d + 1 by default).
    residual: RMS residual of the fitted centred log-probabilities. Informative only
              with n_queries > d + 1 (a square system fits any answers exactly): then
              about 0 when the victim is linear in its logits, large when it is not.
    model:    the recovered linear classifier (inputs [n, *in_shape] in [0, 1] -> logits).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    queries: int
    residual: float
    model: nn.Module


@dataclass
class ExtractionCurve:
    """A substitute's fidelity as its query budget grows.

    budgets:    query-set sizes at which a substitute was fitted (ints, increasing).
    queries:    oracle-counted queries after each budget (equal to budgets).
    agreement:  fraction of eval_x on which the substitute predicts the victim's label
                (None per entry when no evaluation set was given).
    substitutes: the fitted substitute at each budget (eval mode).
    x_query:    every input asked, in order (the first budgets[i] rows were used at i).
    """

    budgets: list[int]
    queries: list[int]
    agreement: list[float | None]
    substitutes: list[nn.Module] = field(repr=False)
    x_query: torch.Tensor = field(repr=False)

    def queries_to(self, target: float) -> int | None:
        """Fewest budget at which agreement reached `target`; None if it never did."""
        for q, a in zip(self.queries, self.agreement):
            if a is not None and a >= target:
                return q
        return None


@dataclass
class SubstituteResult:
    """A substitute fitted on one query set: model, its training targets, queries used."""

    model: nn.Module
    targets: torch.Tensor
    queries: int


# ------------------------------------------------------------------------------ checks


def _check_oracle(oracle: Any, *, need_scores: bool = False, attack: str) -> None:
    if not isinstance(oracle, BlackBox):
        raise ConfigError(f"oracle must be a threatlab.oracle.BlackBox (every victim access is "
                          f"counted through it); got {type(oracle).__name__}")
    if need_scores and oracle.mode == "label":
        raise ConfigError(f"oracle mode='label' is not allowed for {attack}: it needs confidence "
                          "scores; use mode 'probs', 'rounded' or 'topk'")


def _check_x(name: str, x: Any, *, min_rows: int = 1) -> None:
    if not torch.is_tensor(x) or x.dim() < 2 or not x.is_floating_point():
        raise ConfigError(f"{name} must be a floating tensor of shape [n, ...]; got "
                          f"{type(x).__name__}{tuple(x.shape) if torch.is_tensor(x) else ''}")
    if x.shape[0] < min_rows:
        raise ConfigError(f"{name} has {x.shape[0]} rows; at least {min_rows} are needed")
    if x.numel() and (bool(x.min() < 0) or bool(x.max() > 1)):
        raise ConfigError(f"{name} must lie in [0, 1]; put normalization inside the model")


def check_budgets(budgets: Any, name: str = "budgets") -> list[int]:
    """Budgets must be a non-empty, strictly increasing list of positive ints."""
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence) or not budgets:
        raise ConfigError(f"{name}={budgets!r} must be a non-empty list of positive integers")
    for i, b in enumerate(budgets):
        validate.positive(f"{name}[{i}]", b, integer=True)
    if any(b <= a for a, b in zip(budgets, budgets[1:])):
        raise ConfigError(f"{name}={list(budgets)!r} must be strictly increasing")
    return [int(b) for b in budgets]


def _check_fit(arch, arch_params, steps, batch_size, lr):
    validate.choice("arch", arch, sorted(models.ARCHITECTURES))
    if arch_params is not None and not isinstance(arch_params, dict):
        raise ConfigError(f"arch_params={arch_params!r} must be a dict or None")
    validate.positive("steps", steps, integer=True)
    validate.positive("batch_size", batch_size, integer=True)
    validate.positive("lr", lr)


def _check_eval(eval_x, eval_labels):
    if (eval_x is None) != (eval_labels is None):
        raise ConfigError("eval_x and eval_labels go together: give both or neither")
    if eval_x is not None:
        _check_x("eval_x", eval_x)
        if not torch.is_tensor(eval_labels) or eval_labels.shape != (eval_x.shape[0],) \
                or eval_labels.is_floating_point():
            raise ConfigError(f"eval_labels must be a Long tensor of shape ({eval_x.shape[0]},) "
                              "holding the victim's labels on eval_x (see victim_labels)")


def _seed_from(generator: torch.Generator | None) -> int:
    # One draw before any loop: the substitute's initialisation seed.
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


# ---------------------------------------------------------------------------- helpers


class _Ids:
    """Running query ids: each distinct input is its own id in the oracle's counter."""

    def __init__(self, oracle: BlackBox):
        self.oracle, self.next = oracle, int(oracle.queries.shape[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ids = torch.arange(self.next, self.next + x.shape[0])
        self.next += x.shape[0]
        return self.oracle(x, ids=ids)


def victim_labels(oracle: BlackBox, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """The victim's top-1 labels on x, asked through `oracle` (any mode), as Long [n].

    Use a separate evaluation oracle for this so that the attacker's counter holds only
    the attacker's own queries.
    """
    _check_oracle(oracle, attack="victim_labels")
    out = []
    for i in range(0, x.shape[0], batch_size):
        a = oracle(x[i:i + batch_size])
        out.append(a if a.dtype == torch.long else a.argmax(1))
    return torch.cat(out)


def fidelity(substitute: nn.Module, x: torch.Tensor, victim_y: torch.Tensor,
             y: torch.Tensor | None = None) -> dict[str, float]:
    """Agreement of `substitute` with the victim's labels `victim_y` on x (fidelity), and,
    when the ground truth `y` is given, the substitute's own test accuracy.

    Agreement is measured against what the victim answers, not against ground truth: a
    perfect copy of a wrong victim has agreement 1.
    """
    pred = models.predict(substitute, x)
    out = {"agreement": metrics.agreement(pred, victim_y.to(pred.device))}
    if y is not None:
        out["accuracy"] = metrics.accuracy(pred, y.to(pred.device))
    return out


def answers_to_targets(answers: torch.Tensor) -> torch.Tensor:
    """Training targets from oracle answers: labels stay Long [n]; scores (probs, top-k,
    rounded) become rows renormalised to sum 1 (a row rounded to all zeros becomes
    uniform, since it carries no information)."""
    if answers.dtype == torch.long:
        return answers
    a = answers.to(torch.float32).clamp_min(0)
    s = a.sum(1, keepdim=True)
    uniform = torch.full_like(a, 1.0 / a.shape[1])
    return torch.where(s > 0, a / s.clamp_min(1e-12), uniform)


def fit_substitute(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, steps: int = 500,
                   batch_size: int = 64, lr: float = 1e-3,
                   generator: torch.Generator | None = None) -> nn.Module:
    """Train `model` in place on (x, targets) with Adam for a fixed number of steps.

    A fixed step count (not epochs) keeps small query sets from being under-trained and
    makes the cost of a fit independent of the budget. Soft targets (float [n, k]) use
    cross-entropy against the distribution; hard targets (Long [n]) the usual one.
    Mini-batch indices are drawn once from `generator` before the loop.
    """
    _check_fit("mlp", None, steps, batch_size, lr)
    dev = next(model.parameters()).device
    n = x.shape[0]
    bs = min(batch_size, n)
    idx = torch.randint(0, n, (steps, bs), generator=generator).to(dev)
    x, targets = x.to(dev), targets.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for i in range(steps):
        b = idx[i]
        loss = F.cross_entropy(model(x[b]), targets[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def _new_substitute(arch, arch_params, x, num_classes, seed) -> nn.Module:
    return models.build(arch, in_shape=tuple(x.shape[1:]), num_classes=num_classes, seed=seed,
                        **(arch_params or {})).to(x.device)


def _num_classes(oracle: BlackBox, x: torch.Tensor) -> int:
    # One uncharged look at the output width would be a free query; instead read it off
    # the model's last layer when it has one, else ask the caller.
    head = getattr(oracle.model, "head", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    for m in reversed(list(oracle.model.modules())):
        if isinstance(m, nn.Linear):
            return m.out_features
    raise ConfigError("could not infer the number of classes from the oracle's model; pass num_classes=")


def linear_parameters(model: nn.Module, in_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluator's white-box reading of an affine model: (W [k, d], b [k]) in float64
    with logits(x) = W x.flatten() + b on raw inputs (normalization folded in).

    Read off by evaluating at 0 and at each unit vector, so it works for any model that is
    affine in its input (e.g. ``models.build("mlp", hidden=[])``); for a non-affine model
    the result is meaningless.
    """
    m = copy.deepcopy(model).to("cpu", torch.float64).eval()
    d = math.prod(in_shape)
    with torch.no_grad():
        eye = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
        z = m(eye.view(d + 1, *in_shape))
    b = z[0]
    return (z[1:] - b).T.contiguous(), b


def center(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the softmax shift: subtract the mean over classes from each column."""
    return weight - weight.mean(0, keepdim=True), bias - bias.mean()


class LinearSurrogate(nn.Module):
    """logits = W x.flatten() + b, for inputs [n, *in_shape] (the solver's copy)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight.to(torch.float32))
            self.linear.bias.copy_(bias.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


# -------------------------------------------------------------------- equation solving


@register("extraction", "equation_solving")
def equation_solving(oracle: BlackBox, *, in_shape: Sequence[int], n_queries: int | None = None,
                     device: torch.device | str | None = None,
                     generator: torch.Generator | None = None) -> EquationSolvingResult:
    """Recover a multinomial logistic regression from its confidence scores.

    Tramèr, Zhang, Juels, Reiter, Ristenpart (2016), "Stealing Machine Learning Models via
    Prediction APIs", USENIX Security, arXiv 1609.02943. Threat model: black-box, the
    API returns class probabilities. For softmax(W x + b), the centred log-probabilities
    log p_j(x) - mean_c log p_c(x) = (W_j - mean W) x + (b_j - mean b) are affine in x:
    each query gives k such equations, one per class, in the d + 1 unknowns of that
    class's row. n = d + 1 uniform random queries make [X, 1] square and (almost surely)
    invertible; more queries are solved in the least-squares sense (useful against
    rounded answers). Probabilities that are exactly 0 (underflow, rounding, top-k) are
    clamped to the smallest positive float, so such answers give inexact equations.

    Args:
        oracle: the victim behind a `BlackBox` in mode "probs", "rounded" or "topk"
            ("label" raises ConfigError: there are no scores to solve).
        in_shape: shape of one input, e.g. (1, 28, 28); d = prod(in_shape).
        n_queries: number of queries (int >= 2); default d + 1. Fewer than d + 1 give the
            minimum-norm solution of an underdetermined system.
        device: where queries are made (default CPU); the solve runs on the CPU in float64.
        generator: torch.Generator for the uniform queries (CPU).
    Shapes: returns weight [k, d], bias [k] (float64, centred) and a linear model.

    Example:
        >>> res = equation_solving(BlackBox(lr_model, mode="probs"), in_shape=(1, 28, 28))
        >>> res.queries            # 785 = d + 1, counted by the oracle
        >>> fidelity(res.model, x_test, victim_y)["agreement"]
    """
    _check_oracle(oracle, need_scores=True, attack="equation_solving")
    if isinstance(in_shape, (str, bytes)) or not isinstance(in_shape, Sequence) or not in_shape:
        raise ConfigError(f"in_shape={in_shape!r} must be a sequence of positive integers")
    for s in in_shape:
        validate.positive("in_shape", s, integer=True)
    d = math.prod(in_shape)
    n = d + 1 if n_queries is None else validate.number("n_queries", n_queries, low=2, integer=True)
    dev = torch.device(device) if device is not None else torch.device("cpu")

    before = oracle.total
    xq = torch.rand(n, d, generator=generator)
    answers = _Ids(oracle)(xq.view(n, *in_shape).to(dev))
    p = answers.detach().to("cpu", torch.float64)
    logp = p.clamp_min(torch.finfo(answers.dtype).tiny).log()
    t = logp - logp.mean(1, keepdim=True)                       # centred: the shift cancels
    a = torch.cat([xq.to(torch.float64), torch.ones(n, 1, dtype=torch.float64)], 1)
    # gelsd (SVD) copes with the rank-deficient systems that fewer queries give.
    sol = torch.linalg.lstsq(a, t, driver="gelsd").solution      # [d + 1, k]
    resid = float(((a @ sol - t) ** 2).mean().sqrt())
    w, b = center(sol[:d].T.contiguous(), sol[d])
    return EquationSolvingResult(w, b, oracle.total - before, resid, LinearSurrogate(w, b).to(dev).eval())


# ------------------------------------------------------------------ substitute training


@register("extraction", "substitute")
def train_substitute(oracle: BlackBox, x: torch.Tensor, *, arch: str = "mlp",
                     arch_params: dict | None = None, num_classes: int | None = None, steps: int = 500,
                     batch_size: int = 64, lr: float = 1e-3,
                     generator: torch.Generator | None = None) -> SubstituteResult:
    """Label the query set x with the victim and fit a fresh substitute on the answers.

    Papernot, McDaniel, Goodfellow, Jha, Celik, Swami (2017), "Practical Black-Box Attacks
    against Machine Learning", AsiaCCS, arXiv 1602.02697 (substitute training); soft
    targets as in Orekondy, Schiele, Fritz (2019), "Knockoff Nets", arXiv 1812.02766.
    Threat model: black-box; what is learnt from depends on the oracle's mode (scores
    are soft targets, labels hard ones).

    Args:
        oracle: the victim as a `BlackBox` (any mode); charged one query per row of x.
        x: query inputs [n, ...] in [0, 1] (the attacker's own data).
        arch, arch_params: substitute architecture for `models.build` (default an MLP).
        num_classes: number of classes (default read off the victim's last linear layer).
        steps, batch_size, lr: Adam steps (fixed, whatever n is), mini-batch size, rate.
        generator: draws the substitute's initialisation seed and its mini-batches.
    Shapes: x [n, ...] -> model, targets [n] or [n, k], queries = n.

    Example:
        >>> res = train_substitute(BlackBox(victim, mode="label"), x_pool[:1000], generator=g)
        >>> res.queries            # 1000
        >>> fidelity(res.model, x_test, victim_y)
    """
    _check_oracle(oracle, attack="substitute")
    _check_x("x", x)
    _check_fit(arch, arch_params, steps, batch_size, lr)
    k = num_classes if num_classes is not None else _num_classes(oracle, x)
    before = oracle.total
    targets = answers_to_targets(_Ids(oracle)(x))
    model = _new_substitute(arch, arch_params, x, k, _seed_from(generator))
    fit_substitute(model, x, targets, steps=steps, batch_size=batch_size, lr=lr, generator=generator)
    return SubstituteResult(model, targets, oracle.total - before)


def _curve_setup(oracle, x, budgets, arch, arch_params, steps, batch_size, lr, eval_x, eval_labels,
                 *, attack, pool_rows: bool):
    _check_oracle(oracle, attack=attack)
    _check_x("x", x)
    budgets = check_budgets(budgets)
    _check_fit(arch, arch_params, steps, batch_size, lr)
    _check_eval(eval_x, eval_labels)
    if pool_rows and x.shape[0] < budgets[-1]:
        raise ConfigError(f"x has {x.shape[0]} rows but budgets go up to {budgets[-1]}: {attack} "
                          "queries distinct rows of x, so it needs at least that many")
    return budgets


def _evaluate(model, eval_x, eval_labels):
    if eval_x is None:
        return None
    return fidelity(model, eval_x, eval_labels)["agreement"]


def _nested_curve(oracle, xq, budgets, *, arch, arch_params, num_classes, steps, batch_size, lr,
                  eval_x, eval_labels, generator) -> ExtractionCurve:
    """Query rows of xq in order; at each budget fit a fresh substitute on the prefix."""
    ask = _Ids(oracle)
    before = oracle.total
    k = num_classes if num_classes is not None else _num_classes(oracle, xq)
    init = _seed_from(generator)
    targets, queries, agreement, subs = [], [], [], []
    done = 0
    for b in budgets:
        targets.append(answers_to_targets(ask(xq[done:b])))
        done = b
        model = _new_substitute(arch, arch_params, xq, k, init)
        fit_substitute(model, xq[:b], torch.cat(targets), steps=steps, batch_size=batch_size, lr=lr,
                       generator=generator)
        queries.append(oracle.total - before)
        agreement.append(_evaluate(model, eval_x, eval_labels))
        subs.append(model)
    return ExtractionCurve(list(budgets), queries, agreement, subs, xq[:budgets[-1]])


_COMMON_ARGS = """
        budgets: increasing query-set sizes (positive ints); a substitute is fitted at each.
        arch, arch_params: substitute architecture for `models.build` (default an MLP).
        num_classes: default read off the victim's last linear layer.
        steps, batch_size, lr: Adam steps per fit (fixed), mini-batch size, learning rate.
        eval_x, eval_labels: evaluation inputs and the victim's labels on them (from
            `victim_labels` with a separate oracle); agreement per budget is None without.
        generator: torch.Generator for every random draw (queries, initialisation, batches).
    Returns an `ExtractionCurve`; ``curve.queries`` is counted by the oracle."""


@register("extraction", "noise")
def noise_queries(oracle: BlackBox, x: torch.Tensor, *, budgets: Sequence[int], arch: str = "mlp",
                  arch_params: dict | None = None, num_classes: int | None = None, steps: int = 500,
                  batch_size: int = 64, lr: float = 1e-3, eval_x: torch.Tensor | None = None,
                  eval_labels: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> ExtractionCurve:
    """Substitute training on uniform-noise queries: the no-knowledge baseline.

    Tramèr et al. (2016), arXiv 1609.02943, retraining from uniform random queries.
    Threat model: black-box, the attacker has no data at all.

    Args:
        oracle: the victim as a `BlackBox` (any mode).
        x: any batch with the query shape [m, ...] in [0, 1]; only its shape and device
            are used.""" + _COMMON_ARGS + """

    Example:
        >>> c = noise_queries(BlackBox(victim), x_test[:1], budgets=[100, 1000],
        ...                   eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.agreement, c.queries_to(0.8)
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, steps, batch_size, lr, eval_x,
                           eval_labels, attack="noise", pool_rows=False)
    xq = torch.rand(budgets[-1], *x.shape[1:], generator=generator).to(x.device, x.dtype)
    return _nested_curve(oracle, xq, budgets, arch=arch, arch_params=arch_params, num_classes=num_classes,
                         steps=steps, batch_size=batch_size, lr=lr, eval_x=eval_x, eval_labels=eval_labels,
                         generator=generator)


@register("extraction", "knockoff")
def knockoff_queries(oracle: BlackBox, x: torch.Tensor, *, budgets: Sequence[int], arch: str = "mlp",
                     arch_params: dict | None = None, num_classes: int | None = None, steps: int = 500,
                     batch_size: int = 64, lr: float = 1e-3, eval_x: torch.Tensor | None = None,
                     eval_labels: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> ExtractionCurve:
    """Knockoff Nets, random strategy: query natural images from another distribution.

    Orekondy, Schiele, Fritz (2019), "Knockoff Nets: Stealing Functionality of Black-Box
    Models", CVPR, arXiv 1812.02766. Threat model: black-box; the attacker owns natural
    images that need not come from the victim's task (e.g. Fashion-MNIST for an MNIST
    victim) and asks about them in random order.

    Args:
        oracle: the victim as a `BlackBox` (any mode).
        x: the attacker's image pool [m, ...] in [0, 1], m >= budgets[-1].""" + _COMMON_ARGS + """

    Example:
        >>> c = knockoff_queries(BlackBox(victim), x_fashion, budgets=[500, 2000],
        ...                      eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.queries_to(0.8)
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, steps, batch_size, lr, eval_x,
                           eval_labels, attack="knockoff", pool_rows=True)
    order = torch.randperm(x.shape[0], generator=generator)[:budgets[-1]].to(x.device)
    return _nested_curve(oracle, x[order], budgets, arch=arch, arch_params=arch_params,
                         num_classes=num_classes, steps=steps, batch_size=batch_size, lr=lr,
                         eval_x=eval_x, eval_labels=eval_labels, generator=generator)


def jacobian_augment(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """Papernot et al.'s augmentation step: x + lam * sign(d F_label(x) / dx), in [0, 1].

    F is the substitute's softmax output for the label the victim gave; the step moves
    each point towards where the substitute's output for that class changes fastest,
    i.e. towards the victim's decision boundary as the substitute sees it.
    """
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        p = torch.softmax(model(xr), 1).gather(1, labels.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(p, xr)
    return (x + lam * g.sign()).clamp(0, 1).detach()


@register("extraction", "jacobian")
def jacobian_augmentation(oracle: BlackBox, x: torch.Tensor, *, budgets: Sequence[int], lam: float = 0.1,
                          arch: str = "mlp", arch_params: dict | None = None, num_classes: int | None = None,
                          steps: int = 500, batch_size: int = 64, lr: float = 1e-3,
                          eval_x: torch.Tensor | None = None, eval_labels: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> ExtractionCurve:
    """Jacobian-based dataset augmentation: grow a small seed set towards the boundary.

    Papernot, McDaniel, Goodfellow, Jha, Celik, Swami (2017), "Practical Black-Box Attacks
    against Machine Learning", AsiaCCS, arXiv 1602.02697. Threat model: black-box; the
    attacker holds a small seed set from the task (Papernot et al.: 150 test images).
    Round 0 queries the first budgets[0] rows of x; round r fits a fresh substitute on
    everything asked so far, then adds `jacobian_augment` of (budgets[r] - budgets[r-1])
    of the current points and asks only the new ones. With budgets doubling this is the
    paper's S_{r+1} = S_r U {x + lam sign(J_F(x)[O(x)])}: the set doubles each round.

    Args:
        oracle: the victim as a `BlackBox` (any mode).
        x: the seed pool [m, ...] in [0, 1], m >= budgets[0]; only its first budgets[0]
            rows are used. Each budget may at most double the previous one.
        lam: augmentation step in input units (> 0), default 0.1 (the paper's lambda).""" + _COMMON_ARGS + """

    Example:
        >>> c = jacobian_augmentation(BlackBox(victim, mode="label"), x_seed, budgets=[150, 300, 600],
        ...                           eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.queries          # [150, 300, 600]
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, steps, batch_size, lr, eval_x,
                           eval_labels, attack="jacobian", pool_rows=False)
    validate.number("lam", lam, low=0, low_open=True, high=1)
    if x.shape[0] < budgets[0]:
        raise ConfigError(f"x has {x.shape[0]} rows but the seed set is budgets[0]={budgets[0]}")
    for a, b in zip(budgets, budgets[1:]):
        if b > 2 * a:
            raise ConfigError(f"budgets={budgets!r}: a round can at most double the set "
                              f"({a} -> {b} is more than 2x)")
    ask = _Ids(oracle)
    before = oracle.total
    k = num_classes if num_classes is not None else _num_classes(oracle, x)
    init = _seed_from(generator)
    s = x[:budgets[0]]
    answers = ask(s)
    queries, agreement, subs = [], [], []
    for r, b in enumerate(budgets):
        model = _new_substitute(arch, arch_params, s, k, init)
        fit_substitute(model, s, answers_to_targets(answers), steps=steps, batch_size=batch_size, lr=lr,
                       generator=generator)
        queries.append(oracle.total - before)
        agreement.append(_evaluate(model, eval_x, eval_labels))
        subs.append(model)
        if r + 1 == len(budgets):
            break
        grow = budgets[r + 1] - b
        # Fewer than |S| new points: augment a random subset (Papernot et al.'s
        # reservoir variant keeps the per-round cost bounded the same way).
        pick = torch.randperm(b, generator=generator)[:grow].sort().values.to(s.device) if grow < b \
            else torch.arange(b, device=s.device)
        lab = answers[pick] if answers.dtype == torch.long else answers[pick].argmax(1)
        new = jacobian_augment(model, s[pick], lab, lam)
        s = torch.cat([s, new])
        answers = torch.cat([answers, ask(new)])
    return ExtractionCurve(list(budgets), queries, agreement, subs, s)


def margin(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Top-1 minus top-2 softmax probability per input: small = the model is unsure."""
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            top = torch.softmax(model(x[i:i + batch_size]), 1).topk(2, dim=1).values
            out.append(top[:, 0] - top[:, 1])
    return torch.cat(out)


@register("extraction", "active")
def active_queries(oracle: BlackBox, x: torch.Tensor, *, budgets: Sequence[int], arch: str = "mlp",
                   arch_params: dict | None = None, num_classes: int | None = None, steps: int = 500,
                   batch_size: int = 64, lr: float = 1e-3, eval_x: torch.Tensor | None = None,
                   eval_labels: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> ExtractionCurve:
    """Active selection: ask about the unlabeled pool inputs the substitute is least sure of.

    Margin-based uncertainty sampling (Scheffer et al. 2001) as used for extraction by
    Chandrasekaran, Chaudhuri, Giacomelli, Jha, Yan (2020), "Exploring Connections Between
    Active Learning and Model Extraction", USENIX Security, arXiv 1811.02054; also
    Pal et al. (2020), ActiveThief. Threat model: black-box; the attacker holds unlabeled
    data. Round 0 asks budgets[0] random pool rows; each later round fits a fresh
    substitute on all answers so far and asks the (budgets[r] - budgets[r-1]) not yet
    asked rows with the smallest top-1/top-2 margin.

    Args:
        oracle: the victim as a `BlackBox` (any mode).
        x: the unlabeled pool [m, ...] in [0, 1], m >= budgets[-1].""" + _COMMON_ARGS + """

    Example:
        >>> c = active_queries(BlackBox(victim), x_pool, budgets=[100, 200, 400],
        ...                    eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.queries_to(0.8)
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, steps, batch_size, lr, eval_x,
                           eval_labels, attack="active", pool_rows=True)
    ask = _Ids(oracle)
    before = oracle.total
    k = num_classes if num_classes is not None else _num_classes(oracle, x)
    init = _seed_from(generator)
    m = x.shape[0]
    chosen = torch.randperm(m, generator=generator)[:budgets[0]].to(x.device)
    asked = torch.zeros(m, dtype=torch.bool, device=x.device)
    asked[chosen] = True
    answers = answers_to_targets(ask(x[chosen]))
    queries, agreement, subs = [], [], []
    for r, b in enumerate(budgets):
        model = _new_substitute(arch, arch_params, x, k, init)
        fit_substitute(model, x[chosen], answers, steps=steps, batch_size=batch_size, lr=lr, generator=generator)
        queries.append(oracle.total - before)
        agreement.append(_evaluate(model, eval_x, eval_labels))
        subs.append(model)
        if r + 1 == len(budgets):
            break
        score = margin(model, x).masked_fill(asked, math.inf)
        new = score.topk(budgets[r + 1] - b, largest=False).indices.sort().values
        asked[new] = True
        chosen = torch.cat([chosen, new])
        answers = torch.cat([answers, answers_to_targets(ask(x[new]))])
    return ExtractionCurve(list(budgets), queries, agreement, subs, x[chosen])


def run_strategy(strategy: str, oracle: BlackBox, x: torch.Tensor, **kwargs: Any) -> ExtractionCurve:
    """Run the query strategy named `strategy` (one of STRATEGIES); ConfigError otherwise."""
    validate.choice("strategy", strategy, STRATEGIES)
    return {"noise": noise_queries, "jacobian": jacobian_augmentation, "knockoff": knockoff_queries,
            "active": active_queries}[strategy](oracle, x, **kwargs)


def make_oracle(model: nn.Module, mode: str, *, decimals: int = 2) -> BlackBox:
    """A fresh attacker-side `BlackBox` in output mode `mode` (one of OUTPUT_MODES)."""
    validate.choice("mode", mode, OUTPUT_MODES)
    return BlackBox(model, mode=mode, decimals=decimals)


# --------------------------------------------------------------- the stepping stone


@dataclass
class TransferResult:
    """Adversarials crafted on a substitute and replayed against the victim.

    x_adv:   the adversarial inputs [n, ...].
    success: bool [n], the victim's answer differs from y (judged through the oracle).
    queries: oracle-counted queries of the replay (one per example).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: int

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())


def transfer_attack(substitute: nn.Module, oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *,
                    attack: str = "pgd_linf", eps: float = 0.3,
                    attack_params: dict | None = None,
                    generator: torch.Generator | None = None) -> TransferResult:
    """Craft adversarials white-box on the substitute, then ask the victim once about each.

    Papernot et al. (2017), arXiv 1602.02697: the substitute is a stepping stone from
    black-box access to evasion. `attack` is any registered evasion kernel.

    Args:
        substitute: the stolen copy (white-box). oracle: the victim (any mode).
        x, y: inputs [n, ...] in [0, 1] and the victim's labels on them (Long [n]).
        attack: evasion kernel name (default "pgd_linf"); eps: its budget (> 0).
        attack_params: more keyword arguments for the kernel (e.g. steps).
        generator: the kernel's random start.
    Returns success[i] = (victim's label on x_adv[i]) != y[i].

    Example:
        >>> tr = transfer_attack(sub, BlackBox(victim, mode="label"), x, vy, eps=0.3, generator=g)
        >>> tr.success_rate, tr.queries
    """
    from .registry import get

    _check_oracle(oracle, attack="transfer_attack")
    kernel = get(attack, "adversarial")
    validate.positive("eps", eps)
    res = kernel(substitute, x, y, eps=eps, generator=generator, **(attack_params or {}))
    before = oracle.total
    vy = victim_labels(oracle, res.x_adv)
    return TransferResult(res.x_adv, vy != y, oracle.total - before)


def sign_noise_attack(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.3,
                      generator: torch.Generator | None = None) -> TransferResult:
    """Baseline of equal norm: x + eps * (random ±1 per pixel), clipped to [0, 1].

    The L-inf norm is eps, as for an L-inf attack of budget eps, and every pixel moves as
    far as PGD's sign steps allow, so the L2 norm is at least PGD's.
    """
    _check_oracle(oracle, attack="sign_noise_attack")
    validate.positive("eps", eps)
    sign = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
    x_adv = (x + eps * sign).clamp(0, 1)
    before = oracle.total
    vy = victim_labels(oracle, x_adv)
    return TransferResult(x_adv, vy != y, oracle.total - before)
