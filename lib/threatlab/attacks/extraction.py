"""Model extraction: copy a black-box classifier from its answers.

Two routes, both through `oracle.BlackBox`, so every query is counted by the oracle
(never assumed):

* `equation_solving` (Tramèr et al. 2016) recovers a multinomial logistic regression
  exactly from confidence scores: its centred log-probabilities are affine in x, so
  d + 1 random queries give a square linear system.
* Substitute training (Papernot et al. 2017; Orekondy et al. 2019): label a query set
  with the victim and fit a copy. Five registered query strategies differ only in which
  inputs they ask about: `noise` (uniform), `pool` (the attacker's own unlabelled
  in-distribution images in random order: the honest baseline), `jacobian`
  (Jacobian-based dataset augmentation), `knockoff` (natural images from another
  distribution, random order) and `active` (margin-based selection from an unlabelled
  pool). Every strategy and output mode fits its substitutes with the same routine,
  `fit_substitute`: epochs over the query set with early stopping on a held-out slice
  of the queries, so training effort grows with the budget.

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

from .. import ensemble, metrics, models, runtime, validate
from ..errors import ConfigError
from ..oracle import BlackBox
from .registry import register

#: Query strategies of the substitute route (each one is a registered kernel).
STRATEGIES = ("noise", "pool", "jacobian", "knockoff", "active")
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
    epochs:     epochs each fit ran before early stopping (or the cap) ended it.
    """

    budgets: list[int]
    queries: list[int]
    agreement: list[float | None]
    substitutes: list[nn.Module] = field(repr=False)
    x_query: torch.Tensor = field(repr=False)
    epochs: list[int] = field(default_factory=list)

    def queries_to(self, target: float) -> int | None:
        """Fewest budget at which agreement reached `target`; None if it never did."""
        for q, a in zip(self.queries, self.agreement):
            if a is not None and a >= target:
                return q
        return None

    def queries_to_level(self, level: float, *, not_reached_factor: float = 2.0) -> tuple[float, bool]:
        """Queries to reach agreement `level`, interpolated on a log scale between budgets
        (`metrics.queries_to_reach`); (largest budget x 2, False) when never reached."""
        if any(a is None for a in self.agreement):
            raise ConfigError("queries_to_level needs agreement at every budget: give eval_x and eval_labels")
        return metrics.queries_to_reach(self.queries, self.agreement, level,
                                        not_reached_factor=not_reached_factor)


@dataclass
class SubstituteResult:
    """A substitute fitted on one query set: model, its training targets, queries used,
    and the epochs its fit ran (`FitReport.epochs`)."""

    model: nn.Module
    targets: torch.Tensor
    queries: int
    epochs: int = 0


@dataclass
class FitReport:
    """How `fit_substitute` went.

    model:      the fitted model (eval mode), holding the weights of `best_epoch`.
    epochs:     epochs run (early stopping or `max_epochs` ended the loop).
    best_epoch: the epoch (1-based) with the lowest held-out loss, whose weights were kept
                (the last epoch when nothing was held out).
    val_loss:   that held-out loss (None when nothing was held out).
    n_train, n_val: query rows trained on and held out.
    """

    model: nn.Module
    epochs: int
    best_epoch: int
    val_loss: float | None
    n_train: int
    n_val: int


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


def _check_fit(arch, arch_params, max_epochs, patience, val_fraction, min_steps, batch_size, lr):
    validate.choice("arch", arch, sorted(models.ARCHITECTURES))
    if arch_params is not None and not isinstance(arch_params, dict):
        raise ConfigError(f"arch_params={arch_params!r} must be a dict or None")
    validate.positive("max_epochs", max_epochs, integer=True)
    validate.positive("patience", patience, integer=True)
    validate.number("val_fraction", val_fraction, low=0, high=1, high_open=True)
    validate.non_negative("min_steps", min_steps, integer=True)
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


# Seeded draws go through threatlab.runtime (drawn on the generator's device, then moved
# to the data's), so a CPU or a CUDA generator gives the same numbers for one seed.
def _randperm(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return runtime.randperm(n, generator, device=device)


def _uniform(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    return runtime.rand(shape, generator).to(device, dtype)


def _randint(high: int, shape, generator: torch.Generator | None, device) -> torch.Tensor:
    return runtime.randint(0, high, shape, generator, device=device)


def _seed_from(generator: torch.Generator | None) -> int:
    # One draw before any loop: the substitute's initialisation seed.
    return int(_randint(2**31 - 1, (1,), generator, "cpu"))


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


def fit_substitute(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, max_epochs: int = 100,
                   patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300, batch_size: int = 64,
                   lr: float = 1e-3, generator: torch.Generator | None = None) -> FitReport:
    """Train `model` in place on (x, targets): epochs over the query set with Adam and
    early stopping on a held-out slice of the queries.

    The attacker has no labelled data of the victim's task beyond its own queries, so the
    only honest stopping signal is a slice of those queries: `val_fraction` of the rows
    (at least one when n >= 2) are held out at random, the rest are trained on in epochs
    of shuffled mini-batches, and after each epoch the held-out loss (the same
    cross-entropy as in training) is measured; training stops after `patience` epochs
    without a new lowest loss, or after `max_epochs`, and the weights of the best epoch
    are kept. A floor of `min_steps` optimiser steps comes first (as many epochs as it
    takes; early stopping and the choice of the best epoch start after it): an epoch over
    20 queries is one step, and ten such steps decide nothing. Effort therefore grows
    with the query set (an epoch over 6,400 queries is 64 times the steps of one over
    100) instead of being one fixed step count for every budget, which under-trains
    large sets. Soft targets (float [n, k]: scores) use
    cross-entropy against the distribution; hard targets (Long [n]: labels) the usual
    one. This one routine fits every substitute of every output mode and strategy.

    Args:
        model: the substitute (trained in place).
        x: query inputs [n, ...]; targets: `answers_to_targets` of the victim's answers.
        max_epochs: cap on epochs (int > 0). patience: epochs without improvement of the
            held-out loss before stopping (int > 0).
        val_fraction: fraction of the queries held out for early stopping, in [0, 1);
            0 trains on every query for exactly `max_epochs` (or the floor's epochs).
        min_steps: optimiser steps before early stopping may act (int >= 0); the epoch
            cap is max(max_epochs, epochs the floor needs).
        batch_size: mini-batch rows; lr: Adam learning rate.
        generator: draws the hold-out split and each epoch's shuffling.
    Returns a `FitReport` (model in eval mode). One host sync per epoch (the held-out
    loss decides whether to stop); none inside an epoch.
    """
    _check_fit("mlp", None, max_epochs, patience, val_fraction, min_steps, batch_size, lr)
    dev = next(model.parameters()).device
    n = x.shape[0]
    n_val = min(max(1, int(val_fraction * n)), n - 1) if val_fraction > 0 and n >= 2 else 0
    split = _randperm(n, generator, dev)
    val_rows, train_rows = split[:n_val], split[n_val:]
    x, targets = x.to(dev), targets.to(dev)
    x_tr, t_tr, x_val, t_val = x[train_rows], targets[train_rows], x[val_rows], targets[val_rows]
    n_tr = x_tr.shape[0]
    per_epoch = -(-n_tr // batch_size)
    warmup = -(-min_steps // per_epoch)               # epochs the step floor needs
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best_loss, best_epoch, best_state, stale, epoch = math.inf, 0, None, 0, 0
    for epoch in range(1, max(max_epochs, warmup) + 1):
        model.train()
        order = _randperm(n_tr, generator, dev)
        for i in range(0, n_tr, batch_size):
            b = order[i:i + batch_size]
            loss = F.cross_entropy(model(x_tr[b]), t_tr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not n_val or epoch < warmup:
            best_epoch = epoch
            continue
        model.eval()
        with torch.no_grad():
            val_loss = float(F.cross_entropy(model(x_val), t_val))
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitReport(model.eval(), epoch, best_epoch, best_loss if n_val else None, n_tr, n_val)


def fit_substitutes(nets: Sequence[nn.Module], x: torch.Tensor, targets: Sequence[torch.Tensor], *,
                    generators: Sequence[torch.Generator | None], max_epochs: int, patience: int,
                    val_fraction: float, min_steps: int, batch_size: int, lr: float) -> list[dict[str, Any]]:
    """`fit_substitute` for M substitutes of one architecture on the
    same query rows `x`, each with its own targets and generator, as one stacked ensemble.

    Notebook 01's F02 (Tramèr et al. 2016, arXiv 1609.02943: richer answers, fewer
    queries) fits one substitute per output mode on the same queries: the same shape,
    the same inputs, only the answers differ. Model m gets exactly the draws
    `fit_substitute` would take from ``generators[m]`` (its held-out split, then one
    shuffle per epoch it runs, none after it stops, so the generator is left where the
    sequential fit leaves it) and the same step floor, patience and best-epoch rule;
    its loss is the cross-entropy against its own targets (labels as one-hot rows: the
    same loss and gradient as ``F.cross_entropy`` on the label). A model that has
    stopped keeps stepping on its last order until every model has stopped, but the
    weights it returns are those of its best epoch, which no longer change. Results
    agree with the sequential fits to float tolerance (tests/test_extraction_stacked.py).

    The stacked layers are `threatlab.ensemble`'s (its stacked forward, layout and
    fused Adam). This fitter lives here, beside `fit_substitute`, because the bytes of
    ensemble.py are part of the cache name of notebook 03's stacked victims: code added
    there would retrain them.

    Args: nets (trained in place; their best epoch's weights loaded at the end), x [n, ...],
    targets (M tensors: float [n, k] scores or Long [n] labels), generators (M), and
    `fit_substitute`'s settings (already validated by the caller).
    Returns M dicts {"epochs", "best_epoch", "val_loss", "n_train", "n_val"}.
    """
    m_count = len(nets)
    if not (len(targets) == len(generators) == m_count) or m_count == 0:
        raise ConfigError(f"fit_substitutes needs one target tensor and one generator per net; got "
                          f"{m_count} nets, {len(targets)} targets, {len(generators)} generators")
    dev = next(nets[0].parameters()).device
    n = x.shape[0]
    with torch.no_grad():
        width = int(nets[0](x[:1].to(dev)).shape[-1])                 # the substitutes' classes
    soft = [t.to(dev, x.dtype) if t.is_floating_point() else F.one_hot(t.to(dev).long(), width).to(x.dtype)
            for t in targets]   # labels as one-hot rows: the same loss and gradient
    tgt = torch.stack(soft)                                            # [M, n, k]
    n_val = min(max(1, int(val_fraction * n)), n - 1) if val_fraction > 0 and n >= 2 else 0
    splits = torch.stack([runtime.randperm(n, g, device=dev) for g in generators])   # [M, n]
    val_rows, train_rows = splits[:, :n_val], splits[:, n_val:]
    n_tr = n - n_val
    per_epoch = -(-n_tr // batch_size)
    warmup = -(-min_steps // per_epoch)
    x = x.to(dev)
    layers = ensemble._layers(nets[0])
    params, buffers = torch.func.stack_module_state(list(nets))
    lin = set(ensemble._linear_keys(layers))
    params = {key: (v.detach().transpose(1, 2) if key in lin else v.detach()).contiguous().requires_grad_(True)
              for key, v in params.items()}
    buffers = {key: v.detach() for key, v in buffers.items()}
    opt = torch.optim.Adam(list(params.values()), lr=lr, **ensemble._ADAM_IMPL)
    ar = torch.arange(m_count, device=dev).unsqueeze(1)

    def loss_per_model(rows: torch.Tensor) -> torch.Tensor:        # rows [M, B] -> [M]
        logits = ensemble._stacked_forward(layers, params, buffers, x[rows])
        t = tgt[ar, rows]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1, t.shape[-1]),
                               reduction="none").view(m_count, -1).mean(1)

    best_loss = [math.inf] * m_count
    best_epoch, stale, ran = [0] * m_count, [0] * m_count, [0] * m_count
    best_state: list[dict[str, torch.Tensor] | None] = [None] * m_count
    active = [True] * m_count
    order = None
    for epoch in range(1, max(max_epochs, warmup) + 1):
        fresh = [runtime.randperm(n_tr, g, device=dev) if a else None for g, a in zip(generators, active)]
        order = torch.stack([f if f is not None else order[m] for m, f in enumerate(fresh)])
        rows = torch.gather(train_rows, 1, order)
        for i in range(0, n_tr, batch_size):
            loss = loss_per_model(rows[:, i:i + batch_size]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for m in range(m_count):
            if active[m]:
                ran[m] = epoch
        if not n_val or epoch < warmup:
            best_epoch = [epoch if a else b for a, b in zip(active, best_epoch)]
            continue
        with torch.no_grad():
            val = loss_per_model(val_rows).tolist()                   # one host read per epoch
        for m in range(m_count):
            if not active[m]:
                continue
            if val[m] < best_loss[m]:
                best_loss[m], best_epoch[m], stale[m] = val[m], epoch, 0
                best_state[m] = {key: (v[m].detach().transpose(0, 1) if key in lin else v[m].detach()).clone()
                                 for key, v in params.items()}
            else:
                stale[m] += 1
                active[m] = stale[m] < patience
        if not any(active):
            break
    for m, net in enumerate(nets):
        state = dict(net.state_dict())
        if best_state[m] is not None:
            state.update(best_state[m])
        else:   # nothing held out: the last epoch's weights
            state.update({key: (v[m].detach().transpose(0, 1) if key in lin else v[m].detach()).clone()
                          for key, v in params.items()})
        net.load_state_dict(state)
        net.eval()
    return [{"epochs": ran[m], "best_epoch": best_epoch[m], "val_loss": best_loss[m] if n_val else None,
             "n_train": n_tr, "n_val": n_val} for m in range(m_count)]


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
    xq = _uniform((n, d), generator, "cpu")
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
                     arch_params: dict | None = None, num_classes: int | None = None, max_epochs: int = 100,
                     patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300,
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
        max_epochs, patience, val_fraction, min_steps, batch_size, lr: how
            `fit_substitute` trains
            (epochs over x with early stopping on a held-out slice of the queries).
        generator: draws the substitute's initialisation seed, the hold-out split and
            the mini-batches.
    Shapes: x [n, ...] -> model, targets [n] or [n, k], queries = n, epochs run.

    Example:
        >>> res = train_substitute(BlackBox(victim, mode="label"), x_pool[:1000], generator=g)
        >>> res.queries            # 1000
        >>> fidelity(res.model, x_test, victim_y)
    """
    _check_oracle(oracle, attack="substitute")
    _check_x("x", x)
    _check_fit(arch, arch_params, max_epochs, patience, val_fraction, min_steps, batch_size, lr)
    k = num_classes if num_classes is not None else _num_classes(oracle, x)
    before = oracle.total
    targets = answers_to_targets(_Ids(oracle)(x))
    model = _new_substitute(arch, arch_params, x, k, _seed_from(generator))
    fit = fit_substitute(model, x, targets, max_epochs=max_epochs, patience=patience,
                         val_fraction=val_fraction, min_steps=min_steps, batch_size=batch_size, lr=lr,
                         generator=generator)
    return SubstituteResult(model, targets, oracle.total - before, fit.epochs)


def _curve_setup(oracle, x, budgets, arch, arch_params, fit, batch_size, lr, eval_x, eval_labels,
                 *, attack, pool_rows: bool):
    _check_oracle(oracle, attack=attack)
    _check_x("x", x)
    budgets = check_budgets(budgets)
    _check_fit(arch, arch_params, *fit, batch_size, lr)
    _check_eval(eval_x, eval_labels)
    if pool_rows and x.shape[0] < budgets[-1]:
        raise ConfigError(f"x has {x.shape[0]} rows but budgets go up to {budgets[-1]}: {attack} "
                          "queries distinct rows of x, so it needs at least that many")
    return budgets


def _evaluate(model, eval_x, eval_labels):
    if eval_x is None:
        return None
    return fidelity(model, eval_x, eval_labels)["agreement"]


def _nested_curve(oracle, xq, budgets, *, arch, arch_params, num_classes, max_epochs, patience,
                  val_fraction, min_steps, batch_size, lr,
                  eval_x, eval_labels, generator) -> ExtractionCurve:
    """Query rows of xq in order; at each budget fit a fresh substitute on the prefix."""
    ask = _Ids(oracle)
    before = oracle.total
    k = num_classes if num_classes is not None else _num_classes(oracle, xq)
    init = _seed_from(generator)
    targets, queries, agreement, subs, epochs = [], [], [], [], []
    done = 0
    for b in budgets:
        targets.append(answers_to_targets(ask(xq[done:b])))
        done = b
        model = _new_substitute(arch, arch_params, xq, k, init)
        fit = fit_substitute(model, xq[:b], torch.cat(targets), max_epochs=max_epochs, patience=patience,
                             val_fraction=val_fraction, min_steps=min_steps, batch_size=batch_size, lr=lr,
                             generator=generator)
        queries.append(oracle.total - before)
        agreement.append(_evaluate(model, eval_x, eval_labels))
        subs.append(model)
        epochs.append(fit.epochs)
    return ExtractionCurve(list(budgets), queries, agreement, subs, xq[:budgets[-1]], epochs)


_COMMON_ARGS = """
        budgets: increasing query-set sizes (positive ints); a substitute is fitted at each.
        arch, arch_params: substitute architecture for `models.build` (default an MLP).
        num_classes: default read off the victim's last linear layer.
        max_epochs, patience, val_fraction, min_steps: `fit_substitute`'s epoch cap,
            early-stopping patience, held-out fraction of the queries and step floor (the
            same for every fit, whatever the strategy or output mode).
        batch_size, lr: mini-batch rows and Adam learning rate.
        eval_x, eval_labels: evaluation inputs and the victim's labels on them (from
            `victim_labels` with a separate oracle); agreement per budget is None without.
        generator: torch.Generator for every random draw (queries, initialisation, batches).
    Returns an `ExtractionCurve`; ``curve.queries`` is counted by the oracle."""


@register("extraction", "noise")
def noise_queries(oracle: BlackBox, x: torch.Tensor, *, budgets: Sequence[int], arch: str = "mlp",
                  arch_params: dict | None = None, num_classes: int | None = None, max_epochs: int = 100,
                  patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300, batch_size: int = 64,
                  lr: float = 1e-3, eval_x: torch.Tensor | None = None,
                  eval_labels: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> ExtractionCurve:
    """Substitute training on uniform-noise queries: the no-knowledge baseline.

    Tramèr et al. (2016), arXiv 1609.02943, retraining from uniform random queries.
    Threat model: black-box, the attacker has no data at all.

    Args:
        oracle: the victim as a `BlackBox` (any mode).
        x: any batch with the query shape [m, ...] in [0, 1]; only its shape and device
            are used.{COMMON_ARGS}

    Example:
        >>> c = noise_queries(BlackBox(victim), x_test[:1], budgets=[100, 1000],
        ...                   eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.agreement, c.queries_to(0.8)
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, (max_epochs, patience, val_fraction,
                                                      min_steps), batch_size, lr, eval_x, eval_labels, attack="noise", pool_rows=False)
    xq = _uniform((budgets[-1], *x.shape[1:]), generator, x.device, x.dtype)
    return _nested_curve(oracle, xq, budgets, arch=arch, arch_params=arch_params, num_classes=num_classes,
                         max_epochs=max_epochs, patience=patience, val_fraction=val_fraction, min_steps=min_steps,
                         batch_size=batch_size, lr=lr, eval_x=eval_x, eval_labels=eval_labels,
                         generator=generator)


@register("extraction", "knockoff")
def knockoff_queries(oracle: BlackBox, x: torch.Tensor, *, budgets: Sequence[int], arch: str = "mlp",
                     arch_params: dict | None = None, num_classes: int | None = None, max_epochs: int = 100,
                     patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300,
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
        x: the attacker's image pool [m, ...] in [0, 1], m >= budgets[-1].{COMMON_ARGS}

    Example:
        >>> c = knockoff_queries(BlackBox(victim), x_fashion, budgets=[500, 2000],
        ...                      eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.queries_to(0.8)
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, (max_epochs, patience, val_fraction,
                                                      min_steps), batch_size, lr, eval_x, eval_labels, attack="knockoff", pool_rows=True)
    return _random_order_curve(oracle, x, budgets, arch=arch, arch_params=arch_params,
                               num_classes=num_classes, max_epochs=max_epochs, patience=patience,
                               val_fraction=val_fraction, min_steps=min_steps, batch_size=batch_size, lr=lr, eval_x=eval_x,
                               eval_labels=eval_labels, generator=generator)


def _random_order_curve(oracle, x, budgets, *, generator, **kw) -> ExtractionCurve:
    """Ask distinct rows of x in one random order; nested prefixes, one fit per budget."""
    order = _randperm(x.shape[0], generator, x.device)[:budgets[-1]]
    return _nested_curve(oracle, x[order], budgets, generator=generator, **kw)


@register("extraction", "pool")
def pool_queries(oracle: BlackBox, x: torch.Tensor, *, budgets: Sequence[int], arch: str = "mlp",
                 arch_params: dict | None = None, num_classes: int | None = None, max_epochs: int = 100,
                 patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300, batch_size: int = 64,
                 lr: float = 1e-3,
                 eval_x: torch.Tensor | None = None, eval_labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> ExtractionCurve:
    """Random pool queries: the attacker's own unlabelled in-distribution images, asked in
    random order. The honest baseline of every query strategy.

    Papernot et al. (2017), arXiv 1602.02697, and Orekondy et al. (2019), arXiv
    1812.02766, both compare their query choices with plain random sampling of the
    attacker's data; here that data comes from the victim's own task (e.g. MNIST images
    the victim never trained on), so it is the strongest uninformed baseline: anything
    that "chooses" queries must beat it, not uniform noise, which never learns.
    Threat model: black-box; the attacker holds unlabelled images of the task.

    Args:
        oracle: the victim as a `BlackBox` (any mode).
        x: the attacker's unlabelled pool [m, ...] in [0, 1], m >= budgets[-1].{COMMON_ARGS}

    Example:
        >>> c = pool_queries(BlackBox(victim), x_pool, budgets=[100, 200, 400],
        ...                  eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.queries_to_level(0.8)
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, (max_epochs, patience, val_fraction,
                                                      min_steps), batch_size, lr, eval_x, eval_labels, attack="pool", pool_rows=True)
    return _random_order_curve(oracle, x, budgets, arch=arch, arch_params=arch_params,
                               num_classes=num_classes, max_epochs=max_epochs, patience=patience,
                               val_fraction=val_fraction, min_steps=min_steps, batch_size=batch_size, lr=lr, eval_x=eval_x,
                               eval_labels=eval_labels, generator=generator)


def pool_queries_many(oracles: Sequence[BlackBox], x: torch.Tensor, *, budgets: Sequence[int],
                      generators: Sequence[torch.Generator], arch: str = "mlp", arch_params: dict | None = None,
                      num_classes: int | None = None, max_epochs: int = 100, patience: int = 10,
                      val_fraction: float = 0.2, min_steps: int = 300, batch_size: int = 64, lr: float = 1e-3,
                      eval_x: torch.Tensor | None = None, eval_labels: torch.Tensor | None = None,
                      stacked: bool = True) -> list[ExtractionCurve]:
    """`pool_queries` for several oracles at once, oracle m drawing from ``generators[m]``:
    ``[pool_queries(o, x, generator=g, ...) for o, g in zip(oracles, generators)]``, with
    the substitutes of each budget fitted together when they can be.

    Tramèr et al. (2016), arXiv 1609.02943, compare what each output mode (scores,
    rounded scores, labels) of one victim gives an attacker who asks the same queries;
    notebook 01 (F02) seeds every mode's generator alike, so the modes ask the same rows
    in the same order and their substitutes differ only in the answers they fit. Then
    the fits of one budget share their inputs and architecture and train as one stacked
    ensemble (`fit_substitutes`: every draw, stop and kept epoch as the sequential fit,
    numbers to float tolerance). When the orders differ, the
    architecture cannot be stacked, or ``stacked=False``, each curve is fitted on its own
    exactly as `pool_queries` does. Queries are charged to each oracle as there.

    Args: as `pool_queries`, with `oracles` and one `generators` entry per oracle.
    Returns one `ExtractionCurve` per oracle, in order.
    """
    if isinstance(oracles, BlackBox) or not isinstance(oracles, Sequence) or not oracles:
        raise ConfigError(f"oracles must be a non-empty list of BlackBox; got {type(oracles).__name__}")
    if isinstance(generators, torch.Generator) or not isinstance(generators, Sequence) \
            or len(generators) != len(oracles):
        raise ConfigError(f"generators must be a list of {len(oracles)} torch.Generator (one per oracle)")
    for o in oracles:  # every check before the first query
        checked = _curve_setup(o, x, budgets, arch, arch_params, (max_epochs, patience, val_fraction, min_steps),
                               batch_size, lr, eval_x, eval_labels, attack="pool", pool_rows=True)
    budgets = checked
    kw = dict(arch=arch, arch_params=arch_params, num_classes=num_classes, max_epochs=max_epochs,
              patience=patience, val_fraction=val_fraction, min_steps=min_steps, batch_size=batch_size, lr=lr,
              eval_x=eval_x, eval_labels=eval_labels)
    orders = [_randperm(x.shape[0], g, x.device)[:budgets[-1]] for g in generators]
    probe = _new_substitute(arch, arch_params, x, num_classes or _num_classes(oracles[0], x), 0)  # forked RNG
    try:
        ensemble._layers(probe)
        stackable = True
    except ConfigError:
        stackable = False
    if not (stacked and stackable and len(oracles) > 1 and all(torch.equal(o, orders[0]) for o in orders)):
        return [_nested_curve(o, x[order], budgets, generator=g, **kw)
                for o, g, order in zip(oracles, generators, orders)]
    xq = x[orders[0]]
    asks = [_Ids(o) for o in oracles]
    before = [o.total for o in oracles]
    ks = [num_classes if num_classes is not None else _num_classes(o, xq) for o in oracles]
    if len(set(ks)) != 1:
        raise ConfigError(f"the oracles' models have different numbers of classes {ks}: they are not one victim")
    inits = [_seed_from(g) for g in generators]
    targets: list[list[torch.Tensor]] = [[] for _ in oracles]
    out = [ExtractionCurve(list(budgets), [], [], [], xq, []) for _ in oracles]
    done = 0
    for b in budgets:
        for m, ask in enumerate(asks):
            targets[m].append(answers_to_targets(ask(xq[done:b])))
        done = b
        nets = [_new_substitute(arch, arch_params, xq, ks[0], init) for init in inits]
        fits = fit_substitutes(nets, xq[:b], [torch.cat(t) for t in targets], generators=generators,
                               max_epochs=max_epochs, patience=patience, val_fraction=val_fraction,
                               min_steps=min_steps, batch_size=batch_size, lr=lr)
        for m, (net, fit) in enumerate(zip(nets, fits)):
            out[m].queries.append(oracles[m].total - before[m])
            out[m].agreement.append(_evaluate(net, eval_x, eval_labels))
            out[m].substitutes.append(net)
            out[m].epochs.append(fit["epochs"])
    return out


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
                          max_epochs: int = 100, patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300,
                          batch_size: int = 64, lr: float = 1e-3,
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
        lam: augmentation step in input units (> 0), default 0.1 (the paper's lambda).{COMMON_ARGS}

    Example:
        >>> c = jacobian_augmentation(BlackBox(victim, mode="label"), x_seed, budgets=[150, 300, 600],
        ...                           eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.queries          # [150, 300, 600]
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, (max_epochs, patience, val_fraction,
                                                      min_steps), batch_size, lr, eval_x, eval_labels, attack="jacobian", pool_rows=False)
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
    queries, agreement, subs, epochs = [], [], [], []
    for r, b in enumerate(budgets):
        model = _new_substitute(arch, arch_params, s, k, init)
        fit = fit_substitute(model, s, answers_to_targets(answers), max_epochs=max_epochs, patience=patience,
                             val_fraction=val_fraction, min_steps=min_steps, batch_size=batch_size, lr=lr,
                             generator=generator)
        queries.append(oracle.total - before)
        agreement.append(_evaluate(model, eval_x, eval_labels))
        subs.append(model)
        epochs.append(fit.epochs)
        if r + 1 == len(budgets):
            break
        grow = budgets[r + 1] - b
        # Fewer than |S| new points: augment a random subset (Papernot et al.'s
        # reservoir variant keeps the per-round cost bounded the same way).
        pick = _randperm(b, generator, s.device)[:grow].sort().values if grow < b \
            else torch.arange(b, device=s.device)
        lab = answers[pick] if answers.dtype == torch.long else answers[pick].argmax(1)
        new = jacobian_augment(model, s[pick], lab, lam)
        s = torch.cat([s, new])
        answers = torch.cat([answers, ask(new)])
    return ExtractionCurve(list(budgets), queries, agreement, subs, s, epochs)


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
                   arch_params: dict | None = None, num_classes: int | None = None, max_epochs: int = 100,
                   patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300,
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
        x: the unlabeled pool [m, ...] in [0, 1], m >= budgets[-1].{COMMON_ARGS}

    Example:
        >>> c = active_queries(BlackBox(victim), x_pool, budgets=[100, 200, 400],
        ...                    eval_x=x_test, eval_labels=vy, generator=g)
        >>> c.queries_to(0.8)
    """
    budgets = _curve_setup(oracle, x, budgets, arch, arch_params, (max_epochs, patience, val_fraction,
                                                      min_steps), batch_size, lr, eval_x, eval_labels, attack="active", pool_rows=True)
    ask = _Ids(oracle)
    before = oracle.total
    k = num_classes if num_classes is not None else _num_classes(oracle, x)
    init = _seed_from(generator)
    m = x.shape[0]
    chosen = _randperm(m, generator, x.device)[:budgets[0]]
    asked = torch.zeros(m, dtype=torch.bool, device=x.device)
    asked[chosen] = True
    answers = answers_to_targets(ask(x[chosen]))
    queries, agreement, subs, epochs = [], [], [], []
    for r, b in enumerate(budgets):
        model = _new_substitute(arch, arch_params, x, k, init)
        fit = fit_substitute(model, x[chosen], answers, max_epochs=max_epochs, patience=patience,
                             val_fraction=val_fraction, min_steps=min_steps, batch_size=batch_size, lr=lr,
                             generator=generator)
        queries.append(oracle.total - before)
        agreement.append(_evaluate(model, eval_x, eval_labels))
        subs.append(model)
        epochs.append(fit.epochs)
        if r + 1 == len(budgets):
            break
        score = margin(model, x).masked_fill(asked, math.inf)
        new = score.topk(budgets[r + 1] - b, largest=False).indices.sort().values
        asked[new] = True
        chosen = torch.cat([chosen, new])
        answers = torch.cat([answers, answers_to_targets(ask(x[new]))])
    return ExtractionCurve(list(budgets), queries, agreement, subs, x[chosen], epochs)


def run_strategy(strategy: str, oracle: BlackBox, x: torch.Tensor, **kwargs: Any) -> ExtractionCurve:
    """Run the query strategy named `strategy` (one of STRATEGIES); ConfigError otherwise."""
    validate.choice("strategy", strategy, STRATEGIES)
    return {"noise": noise_queries, "pool": pool_queries, "jacobian": jacobian_augmentation,
            "knockoff": knockoff_queries, "active": active_queries}[strategy](oracle, x, **kwargs)


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
    linf:    float64 [n], the L-inf norm of each perturbation actually applied
             (x_adv - x, after clipping to [0, 1]), so equal norms are shown, not assumed.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: int
    linf: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

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
    return TransferResult(res.x_adv, vy != y, oracle.total - before, metrics.lp_norms(res.x_adv - x)["linf"])


@register("extraction", "sign_noise")
def sign_noise_attack(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.3,
                      generator: torch.Generator | None = None) -> TransferResult:
    """F04's trivial baseline: random sign noise of the transfer attack's L-inf norm.

    x_adv = clip(x + eps * s, 0, 1) with s uniformly random in {-1, +1} per pixel, asked
    once of the victim. Its L-inf norm is eps (as for an L-inf attack of budget eps;
    `TransferResult.linf` records the norm after clipping), and every unclipped pixel
    moves the full eps, so its L2 norm is at least that of any attack within the same
    L-inf ball that leaves some pixels unchanged. Papernot et al. (2017), arXiv
    1602.02697, measure transferability against the victim's clean error in the same
    way. Threat model: black-box, no substitute.

    Args:
        oracle: the victim (any mode). x, y: inputs [n, ...] in [0, 1] and the victim's
            labels on them (Long [n]). eps: L-inf norm in input units (> 0).
        generator: draws the signs.
    Returns a `TransferResult` (success[i] = the victim's label on x_adv[i] != y[i]).

    Example:
        >>> base = sign_noise_attack(BlackBox(victim, mode="label"), x, vy, eps=0.3, generator=g)
        >>> base.success_rate, float(base.linf.max())      # the second is 0.3
    """
    _check_oracle(oracle, attack="sign_noise_attack")
    _check_x("x", x)
    validate.positive("eps", eps)
    sign = _randint(2, x.shape, generator, x.device).to(x.dtype) * 2 - 1
    x_adv = (x + eps * sign).clamp(0, 1)
    before = oracle.total
    vy = victim_labels(oracle, x_adv)
    return TransferResult(x_adv, vy != y, oracle.total - before, metrics.lp_norms(x_adv - x)["linf"])


# ------------------------------------------------ learners on answers already bought


def solve_equations(x: torch.Tensor, answers: torch.Tensor) -> EquationSolvingResult:
    """Equation solving on queries the caller already asked: least squares of the
    centred log-probabilities on [x.flatten(), 1], as in `equation_solving` (Tramèr,
    Zhang, Juels, Reiter, Ristenpart 2016, arXiv 1609.02943), but for any query rows,
    not only uniform noise. F01's gives this solver and a substitute
    (`fit_on_answers`) the same pool images, so the two learners differ only in the model
    class they fit.

    Exact for a victim that is linear in its logits wherever [x, 1] spans the inputs it is
    evaluated on (pool images leave always-dark pixels unconstrained; the minimum-norm
    solution gives them weight 0, which is harmless on images dark there too).
    Probabilities of exactly 0 are clamped to the smallest positive float first.

    Args:
        x: the queries [n, ...] in [0, 1] (n >= 2).
        answers: the victim's probabilities on them [n, k] (oracle mode "probs",
            "rounded" or "topk"), finite.
    Returns an `EquationSolvingResult` with queries = n (the rows used; the oracle that
    answered them counted them). The solve runs on the CPU in float64; the model lives on
    x's device.

    Example:
        >>> p = oracle(x_pool[:785])
        >>> res = solve_equations(x_pool[:785], p)
        >>> fidelity(res.model, x_test, victim_y)["agreement"]
    """
    _check_x("x", x, min_rows=2)
    if not torch.is_tensor(answers) or answers.dim() != 2 or answers.shape[0] != x.shape[0] \
            or not answers.is_floating_point():
        raise ConfigError(f"answers must be a float tensor [{x.shape[0]}, classes] of probabilities "
                          f"(label answers have no scores to solve); got "
                          f"{tuple(answers.shape) if torch.is_tensor(answers) else type(answers).__name__}")
    if not bool(torch.isfinite(answers).all()):
        raise ConfigError("answers hold NaN or inf")
    n, d = x.shape[0], math.prod(x.shape[1:])
    p = answers.detach().to("cpu", torch.float64)
    logp = p.clamp_min(torch.finfo(answers.dtype).tiny).log()
    t = logp - logp.mean(1, keepdim=True)                       # centred: the softmax shift cancels
    a = torch.cat([x.detach().to("cpu", torch.float64).reshape(n, d), torch.ones(n, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(a, t, driver="gelsd").solution      # SVD copes with rank-deficient pools
    resid = float(((a @ sol - t) ** 2).mean().sqrt())
    w, b = center(sol[:d].T.contiguous(), sol[d])
    return EquationSolvingResult(w, b, n, resid, LinearSurrogate(w, b).to(x.device).eval())


def fit_on_answers(x: torch.Tensor, answers: torch.Tensor, *, arch: str = "mlp", arch_params: dict | None = None,
                   num_classes: int | None = None, max_epochs: int = 100, patience: int = 10, val_fraction: float = 0.2, min_steps: int = 300,
                   batch_size: int = 64, lr: float = 1e-3,
                   generator: torch.Generator | None = None) -> SubstituteResult:
    """`train_substitute` without the asking: fit a fresh substitute on answers already
    bought (Papernot et al. 2017, arXiv 1602.02697; soft targets as Orekondy et al. 2019,
    arXiv 1812.02766), with `fit_substitute`'s recipe. Lets two learners share one set of
    counted queries (F01).

    Args:
        x: the queries [n, ...] in [0, 1]; answers: the victim's answers on them (Long
            labels [n] or scores [n, k], finite).
        num_classes: default a score answer's width (labels: give it).
        arch, arch_params, max_epochs, patience, val_fraction, min_steps, batch_size, lr:
            as `train_substitute`. generator: initialisation seed, hold-out split, batches.
    Returns a `SubstituteResult` (queries = n, the rows used).

    Example:
        >>> sub = fit_on_answers(x_q, oracle(x_q), generator=g)
    """
    _check_x("x", x)
    _check_fit(arch, arch_params, max_epochs, patience, val_fraction, min_steps, batch_size, lr)
    if not torch.is_tensor(answers) or answers.shape[0] != x.shape[0] or answers.dim() not in (1, 2):
        raise ConfigError(f"answers must be the victim's answers on x: [{x.shape[0]}] labels or "
                          f"[{x.shape[0]}, classes] scores")
    if answers.is_floating_point() and not bool(torch.isfinite(answers).all()):
        raise ConfigError("answers hold NaN or inf")
    if num_classes is not None:
        validate.positive("num_classes", num_classes, integer=True)
    elif answers.dim() == 1:
        raise ConfigError("answers are labels: pass num_classes= (the labels seen need not cover every class)")
    k = num_classes if num_classes is not None else answers.shape[1]
    targets = answers_to_targets(answers)
    model = _new_substitute(arch, arch_params, x, k, _seed_from(generator))
    fit = fit_substitute(model, x, targets, max_epochs=max_epochs, patience=patience, val_fraction=val_fraction,
                         min_steps=min_steps, batch_size=batch_size, lr=lr, generator=generator)
    return SubstituteResult(model, targets, x.shape[0], fit.epochs)


# The curve kernels share their argument list: their docstrings hold the literal
# "{COMMON_ARGS}" (a docstring must be a plain literal to be one at all), filled in here,
# on the registered wrapper and the kernel it wraps.
for _kernel in (noise_queries, knockoff_queries, pool_queries, jacobian_augmentation, active_queries):
    for _fn in (_kernel, _kernel.__wrapped__):
        _fn.__doc__ = _fn.__doc__.replace("{COMMON_ARGS}", _COMMON_ARGS.rstrip())
del _kernel, _fn
