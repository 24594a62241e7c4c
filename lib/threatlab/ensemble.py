"""Train many small models at once: one stacked-parameter ensemble instead of a loop.

Membership inference needs many models of one architecture trained on different
subsets of one data pool (Shokri et al. 2017 shadow models; LiRA's 16-256 reference
models, Carlini et al. 2022). Trained one after another, each small model wastes most
of a step on Python and kernel-launch overhead. Here the M models' parameters are
stacked along a new leading dimension (`torch.func.stack_module_state`) and one step
runs ``vmap(grad(loss))`` over that dimension, so M models cost about one launch
sequence per step. The optimizer is Adam written out on the stacked tensors with the
same update rule as ``torch.optim.Adam``, and every model m draws its batches from its
own ``torch.Generator(seed=seeds[m])`` exactly as `models.train` does: the ensemble
gives the same parameters as training each model with `models.train` (to float
tolerance; `tests/test_ensemble.py` checks it).

    >>> from threatlab import ensemble
    >>> ens = ensemble.train_ensemble("mlp", x_pool, y_pool, indices, seeds=list(range(16)),
    ...                               epochs=20, batch_size=128, lr=1e-3)
    >>> logits = ens.logits(x)          # [M, n, classes]
    >>> net = ens.model(3)              # model 3 as an ordinary nn.Module
"""
from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap
from tqdm.auto import tqdm

from . import models, validate
from .errors import ConfigError
from .runtime import progress_disabled

__all__ = ["Ensemble", "ShadowSplits", "train_ensemble", "train_sequential", "half_splits", "shadow_splits"]


@dataclass
class Ensemble:
    """M models of one architecture with stacked parameters.

    base:    one instance of the architecture (on the 'meta'-free device of the params),
             used as the function in ``functional_call``; its own parameters are unused.
    params:  name -> tensor [M, *shape] (stacked parameters).
    buffers: name -> tensor [M, *shape] (e.g. the normalization mean/std).
    history: {"loss": [M-vector of mean loss per epoch, ...], "seconds": wall time}.
    """

    base: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    history: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def _call(self, p, b, x):
        return functional_call(self.base, (p, b), (x,))

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Every model's logits on the same inputs: [M, n, classes]."""
        validate.positive("batch_size", batch_size, integer=True)
        f = vmap(self._call, in_dims=(0, 0, None))
        return torch.cat([f(self.params, self.buffers, x[i:i + batch_size])
                          for i in range(0, x.shape[0], batch_size)], dim=1)

    def model(self, m: int) -> nn.Module:
        """Model `m` as an ordinary module in eval mode (a copy; safe to hand to an oracle)."""
        validate.number("m", m, low=0, high=self.size - 1, integer=True)
        net = copy.deepcopy(self.base)
        state = {k: v[m].detach().clone() for k, v in {**self.params, **self.buffers}.items()}
        net.load_state_dict(state, strict=True)
        return net.eval()


def half_splits(n_pool: int, n_models: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """LiRA's data splits: each model gets a uniformly random half of the pool.

    Returns a bool mask [n_models, n_pool]; row m marks model m's training examples.
    Every row holds exactly n_pool // 2 examples, so the ensemble's batches line up.
    """
    validate.number("n_pool", n_pool, low=2, integer=True)
    validate.positive("n_models", n_models, integer=True)
    scores = torch.rand(n_models, n_pool, generator=generator)
    order = scores.argsort(dim=1)
    mask = torch.zeros(n_models, n_pool, dtype=torch.bool)
    mask.scatter_(1, order[:, : n_pool // 2], True)
    return mask


@dataclass(frozen=True)
class ShadowSplits:
    """Row bookkeeping of Shokri et al.'s shadow protocol over one data pool.

    candidates: Long [n_candidates], pool rows on the target's side (what the attack
        scores: the target trains on some of them, the others are its non-members).
    attacker:   Long [n_pool - n_candidates], pool rows the attacker owns (shadow data).
    shadow_in:  bool [n_shadows, len(attacker)], shadow m trains on attacker[shadow_in[m]].
    The two row sets are disjoint; `shadow_rows(m)` gives shadow m's pool rows.
    """

    candidates: torch.Tensor
    attacker: torch.Tensor
    shadow_in: torch.Tensor

    def shadow_rows(self, m: int) -> torch.Tensor:
        """Pool rows shadow model m trains on (Long)."""
        validate.number("m", m, low=0, high=self.shadow_in.shape[0] - 1, integer=True)
        return self.attacker[self.shadow_in[m]]

    def shadow_indices(self) -> torch.Tensor:
        """Long [n_shadows, len(attacker) // 2]: every shadow's pool rows (for `train_ensemble`)."""
        return torch.stack([self.attacker[r] for r in self.shadow_in])


def shadow_splits(n_pool: int, *, n_candidates: int, n_shadows: int,
                  generator: torch.Generator | None = None) -> ShadowSplits:
    """Split a pool for the shadow-model attack (Shokri et al. 2017, arXiv 1610.05820).

    A random permutation of the pool's rows: the first `n_candidates` are the target's
    side, the rest the attacker's own data, disjoint from them; each of the `n_shadows`
    shadow models trains on a random half of the attacker's rows (`half_splits`), so a
    shadow's training set has the target's size when n_pool = 2 * n_candidates.
    """
    validate.number("n_pool", n_pool, low=4, integer=True)
    validate.number("n_candidates", n_candidates, low=1, high=n_pool - 2, integer=True)
    validate.positive("n_shadows", n_shadows, integer=True)
    perm = torch.rand(n_pool, generator=generator).argsort()
    cand, att = perm[:n_candidates], perm[n_candidates:]
    return ShadowSplits(cand, att, half_splits(att.numel(), n_shadows, generator=generator))


def _check(arch, x, y, indices, seeds, epochs, batch_size, lr, weight_decay):
    validate.choice("arch", arch, sorted(models.ARCHITECTURES))
    models._check_xy(x, y)
    if not torch.is_tensor(indices) or indices.dim() != 2 or indices.is_floating_point() \
            or indices.dtype == torch.bool:
        raise ConfigError("indices must be an integer tensor [M, n] of row numbers into x "
                          f"(one row per model, equal sizes); got "
                          f"{tuple(indices.shape) if torch.is_tensor(indices) else type(indices).__name__}")
    if indices.numel() == 0:
        raise ConfigError(f"indices has shape {tuple(indices.shape)}; every model needs >= 1 example")
    if int(indices.min()) < 0 or int(indices.max()) >= x.shape[0]:
        raise ConfigError(f"indices must lie in [0, {x.shape[0] - 1}] (rows of x); got "
                          f"[{int(indices.min())}, {int(indices.max())}]")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) != indices.shape[0]:
        raise ConfigError(f"seeds={seeds!r} must be a sequence of {indices.shape[0]} integers (one per model)")
    for s in seeds:
        validate.non_negative("seeds", s, integer=True)
    models._check_train_params(epochs, batch_size, lr, weight_decay, "adam", 0.9, 0)


def train_ensemble(arch: str, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, *,
                   seeds: Sequence[int], epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
                   weight_decay: float = 0.0, num_classes: int = 10,
                   arch_params: Mapping[str, Any] | None = None,
                   device: torch.device | str | None = None, progress: bool = True) -> Ensemble:
    """Train M = len(seeds) models at once, model m on ``x[indices[m]], y[indices[m]]``.

    Model m is initialised as ``models.build(arch, seed=seeds[m], ...)`` and trained with
    Adam (betas 0.9/0.999, eps 1e-8, L2 `weight_decay` added to the gradient as torch's
    Adam does) on mean cross-entropy, visiting its examples in the order
    ``torch.randperm(n, generator=Generator().manual_seed(seeds[m]))`` each epoch, i.e.
    exactly what ``models.train(net, x[indices[m]], y[indices[m]], seed=seeds[m])`` does.

    Args:
        arch: a `models.ARCHITECTURES` name; arch_params go to `models.build`.
        x, y: the data pool [N, C, H, W] in [0, 1] and labels [N] (may stay on the CPU).
        indices: Long [M, n], model m's training rows (equal n for all models).
        seeds: M non-negative ints (initialisation and shuffling of each model).
        epochs, batch_size, lr, weight_decay: as in `models.train` (Adam only).
        device: where the ensemble trains (default CPU).
    Returns an `Ensemble` whose history holds the per-model mean loss of every epoch.
    """
    _check(arch, x, y, indices, seeds, epochs, batch_size, lr, weight_decay)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    nets = [models.build(arch, in_shape=tuple(x.shape[1:]), num_classes=num_classes, seed=int(s),
                         **dict(arch_params or {})).to(dev) for s in seeds]
    params, buffers = stack_module_state(nets)
    params = {k: v.detach().clone() for k, v in params.items()}
    base = nets[0]  # only its structure is used: functional_call swaps the parameters in
    m_count, n = indices.shape
    steps = (n + batch_size - 1) // batch_size
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    xs, ys = x.to(dev), y.to(dev, dtype=torch.long)
    idx_dev = indices.to(dev)

    def loss_fn(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    grad_all = vmap(grad(loss_fn, has_aux=False), in_dims=(0, 0, 0, 0))
    loss_all = vmap(loss_fn, in_dims=(0, 0, 0, 0))
    exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
    exp_sq = {k: torch.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    history: dict[str, Any] = {"loss": [], "epochs": epochs, "batch_size": batch_size}
    t0 = time.perf_counter()
    bar = tqdm(total=epochs * steps, desc=f"ensemble of {m_count} {arch}", unit="step",
               disable=(not progress) or progress_disabled(), leave=False)
    step = 0
    try:
        for _ in range(epochs):
            # Same draws as models.train: one randperm per model per epoch from its own generator.
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)
            rows = torch.gather(idx_dev, 1, perms)
            loss_sum = torch.zeros(m_count, device=dev)
            for i in range(steps):
                r = rows[:, i * batch_size:(i + 1) * batch_size]
                xb, yb = xs[r], ys[r]
                g = grad_all(params, buffers, xb, yb)
                with torch.no_grad():
                    loss_sum += loss_all(params, buffers, xb, yb) * r.shape[1]
                step += 1
                bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
                with torch.no_grad():
                    for k, p in params.items():
                        gk = g[k] + weight_decay * p if weight_decay else g[k]
                        exp_avg[k].lerp_(gk, 1 - b1)
                        exp_sq[k].mul_(b2).addcmul_(gk, gk, value=1 - b2)
                        denom = (exp_sq[k].sqrt() / (bc2 ** 0.5)).add_(eps)
                        p.addcdiv_(exp_avg[k], denom, value=-lr / bc1)
                bar.update(1)
            history["loss"].append((loss_sum / n).cpu().tolist())
    finally:
        bar.close()
    history["seconds"] = time.perf_counter() - t0
    return Ensemble(base, params, buffers, history)


def train_sequential(arch: str, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, *,
                     seeds: Sequence[int], epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
                     weight_decay: float = 0.0, num_classes: int = 10,
                     arch_params: Mapping[str, Any] | None = None,
                     device: torch.device | str | None = None) -> list[nn.Module]:
    """The reference: the same M models trained one after another with `models.train`.

    Same arguments as `train_ensemble`; returns the trained modules (eval mode). Used to
    check the ensemble and to benchmark it against the plain loop.
    """
    _check(arch, x, y, indices, seeds, epochs, batch_size, lr, weight_decay)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    out = []
    for m, s in enumerate(seeds):
        net = models.build(arch, in_shape=tuple(x.shape[1:]), num_classes=num_classes, seed=int(s),
                           **dict(arch_params or {})).to(dev)
        rows = indices[m]
        models.train(net, x[rows], y[rows], epochs=epochs, batch_size=batch_size, lr=lr,
                     weight_decay=weight_decay, optimizer="adam", seed=int(s), progress=False)
        out.append(net.eval())
    return out
