"""Train many small models at once: one stacked-parameter ensemble instead of a loop.

Membership inference needs many models of one architecture trained on different
subsets of one data pool (Shokri et al. 2017 shadow models; LiRA's 16-256 reference
models, Carlini et al. 2022, arXiv 2112.03570). Trained one after another, each small
model wastes most of a step on Python, autograd and optimizer overhead. Here the M
models' parameters are stacked along a new leading dimension and one step runs all M
models layer by layer on stacked tensors: a linear layer is one batched matmul
(``torch.baddbmm``, [M, batch, in] x [M, in, out]), a convolution one grouped
convolution (the M models are the M groups, in channels-last layout), pooling and ReLU
one call on the stacked activations, the loss the sum of the M per-model mean
cross-entropies (so each model's gradient is exactly its own), and one
``torch.optim.Adam(foreach=True)`` steps all stacked tensors. Every model m draws its
batches from its own ``torch.Generator(seed=seeds[m])`` exactly as `models.train` does:
the ensemble gives the same parameters as training each model with `models.train` (to
float tolerance; `tests/test_ensemble_dp.py` checks it). benchmarks/PROFILING.md has the
profile behind this layout (a ``vmap(grad(...))`` step was slower than the plain loop).

    >>> from threatlab import ensemble
    >>> ens = ensemble.train_ensemble("mlp", x_pool, y_pool, indices, seeds=list(range(16)),
    ...                               epochs=20, batch_size=128, lr=1e-3)
    >>> logits = ens.logits(x)          # [M, n, classes]
    >>> net = ens.model(3)              # model 3 as an ordinary nn.Module
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from . import models, runtime, validate
from .errors import ConfigError
from .runtime import progress_disabled

#: sha256 of this file: part of the cache name of stacked victims (`cached_many`).
_SOURCE_VERSION: str = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

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
    scores = runtime.rand((n_models, n_pool), generator)
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
    perm = runtime.rand((n_pool,), generator).argsort()
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


#: How torch.optim.Adam runs over the stacked tensors: "fused" makes one pass over
#: parameter, gradient and both moments per element (the stacked tensors do not fit in
#: cache, so the foreach kernels' several passes cost as much as the matmuls; PROFILING.md).
_ADAM_IMPL: dict[str, bool] = {"fused": True}

#: Layers the stacked forward knows (every `models.ARCHITECTURES` entry is built from these).
_STACKABLE = (models.Normalize, nn.Flatten, nn.Linear, nn.ReLU, nn.Conv2d, nn.MaxPool2d)


def _layers(base: nn.Module) -> list[tuple[str, nn.Module]]:
    """`base`'s layers in forward order with their parameter-name prefixes.

    A `models.Classifier` runs ``head(features(x))``; anything else must be an
    ``nn.Sequential`` of `_STACKABLE` layers.
    """
    if isinstance(base, models.Classifier):
        seq = [(f"features.{k}", m) for k, m in base.features.named_children()] + [("head", base.head)]
    elif isinstance(base, nn.Sequential):
        seq = list(base.named_children())
    else:
        raise ConfigError(f"model {type(base).__name__} cannot be stacked; expected a models.Classifier "
                          "or an nn.Sequential")
    for name, m in seq:
        if not isinstance(m, _STACKABLE):
            raise ConfigError(f"layer {name} ({type(m).__name__}) cannot be stacked; allowed: "
                              f"{[c.__name__ for c in _STACKABLE]}")
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"
                                          or isinstance(m.padding, str)):
            raise ConfigError(f"layer {name}: only groups=1, numeric zero padding convolutions can be stacked")
    return seq


#: Models per grouped convolution call. A convolutional trunk's activations grow with
#: the models stacked in one call ([64, 32 m, 28, 28] floats after SmallCNN's first
#: conv on a batch of 64: 100 MB at m = 16, several such kept for the backward pass),
#: so the trunk runs at most this many models at a time; everything after it (linear
#: layers, loss, Adam) stays stacked over all M. On the 2-core CPU (K = 16, 3 rounds,
#: load ~8) 1, 4 and 16 models per call trained SmallCNN in 2.28, 2.14 and 2.62 s
#: (median) against 2.33 s for the sequential loop: convolution arithmetic bounds it
#: and the chunk size is within noise (PROFILING.md); 4 keeps a K = 64 ensemble's
#: activations at a quarter of one call's.
CONV_MODELS_PER_CALL = 4


def _run_layers(layers, params, buffers, x: torch.Tensor) -> torch.Tensor:
    """`layers` of m models on stacked tensors; x [m, B, ...] -> [m, B, features] (or the
    grouped [B, m*C, H, W] map when `layers` stops before the flatten)."""
    m_count, b = x.shape[0], x.shape[1]
    h, grouped = x, False                         # grouped: [B, m*C, H, W]; else [m, B, ...]
    for name, layer in layers:
        if isinstance(layer, models.Normalize):
            if grouped:
                raise ConfigError(f"layer {name}: Normalize after a convolution cannot be stacked")
            h = (h - buffers[f"{name}.mean"]) / buffers[f"{name}.std"]   # [m,1,C,1,1] per model
        elif isinstance(layer, nn.Conv2d):
            if not grouped:
                h = h.transpose(0, 1).reshape(b, -1, *h.shape[3:]).contiguous(memory_format=torch.channels_last)
                grouped = True
            w = params[f"{name}.weight"]
            bias = params.get(f"{name}.bias")
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if bias is None else bias.reshape(-1),
                         stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=m_count)
        elif isinstance(layer, nn.MaxPool2d):
            h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                             ceil_mode=layer.ceil_mode)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
        elif isinstance(layer, nn.Flatten):
            # Each model's features in its own (C, H, W) order, as nn.Flatten gives them.
            h = h.reshape(b, m_count, -1).transpose(0, 1) if grouped else h.flatten(2)
            grouped = False
        else:  # nn.Linear; the weight is held transposed, [m, in, out] (see _linear_keys)
            wt = params[f"{name}.weight"]
            bias = params.get(f"{name}.bias")
            h = torch.bmm(h, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, wt)
    return h


def _stacked_forward(layers, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor],
                     x: torch.Tensor, models_per_conv: int | None = None) -> torch.Tensor:
    """M models' logits [M, B, classes] on their own batches x [M, B, C, H, W].

    Linear layers run on [M, B, features] (one ``baddbmm`` for all M). A convolutional
    trunk (everything up to the flatten after the last convolution) runs
    `models_per_conv` (default `CONV_MODELS_PER_CALL`) models at a time as one grouped convolution ([B, m * C, H, W],
    the m models are the m groups) in channels-last memory, where max-pooling is an
    order of magnitude faster on the CPU than in NCHW; the trunk's stacked parameters
    are split with ``Tensor.split``, whose backward writes each chunk's gradient into
    one stacked gradient. Each model's numbers go through the same operations as in its
    own forward, so they agree with ``model(x[m])`` to float rounding.
    """
    last_conv = max((i for i, (_, l) in enumerate(layers) if isinstance(l, nn.Conv2d)), default=-1)
    cut = next((i + 1 for i, (_, l) in enumerate(layers) if i > last_conv and isinstance(l, nn.Flatten)),
               0) if last_conv >= 0 else 0
    if last_conv >= 0 and cut == 0:
        raise ConfigError("the stacked model must flatten after its last convolution")
    h, chunk = x, models_per_conv or CONV_MODELS_PER_CALL
    if cut:
        trunk = layers[:cut]
        names = {f"{n}." for n, _ in trunk}
        own = lambda d: {k: v.split(chunk) for k, v in d.items()  # noqa: E731
                         if any(k.startswith(n) for n in names)}
        p_parts, b_parts = own(params), own(buffers)
        outs = []
        for j, xc in enumerate(x.split(chunk)):
            outs.append(_run_layers(trunk, {k: v[j] for k, v in p_parts.items()},
                                    {k: v[j] for k, v in b_parts.items()}, xc))
        h = torch.cat(outs) if len(outs) > 1 else outs[0]
    h = _run_layers(layers[cut:], params, buffers, h)
    if h.dim() != 3:  # pragma: no cover - every Classifier ends in its linear head
        raise ConfigError("the stacked model must end in a linear layer on flattened features")
    return h


def _linear_keys(layers) -> list[str]:
    """Names of the linear weights, which train as [M, in, out] (transposed, contiguous).

    With the weight stored [M, out, in], autograd computes its gradient as
    ``input^T @ grad_out`` = [M, in, out] and then copies it into the transposed layout:
    one full pass over the largest tensor every step (PROFILING.md). Holding the
    transpose avoids it; Adam is elementwise, so the layout does not change a number.
    """
    return [f"{name}.weight" for name, layer in layers if isinstance(layer, nn.Linear)]


def train_ensemble(arch: str, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, *,
                   seeds: Sequence[int], epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
                   weight_decay: float = 0.0, num_classes: int = 10,
                   arch_params: Mapping[str, Any] | None = None,
                   device: torch.device | str | None = None, progress: bool = True) -> Ensemble:
    """Train M = len(seeds) models at once, model m on ``x[indices[m]], y[indices[m]]``.

    Model m is initialised as ``models.build(arch, seed=seeds[m], ...)`` and trained with
    ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8, L2 `weight_decay` added to the
    gradient) on mean cross-entropy, visiting its examples in the order
    of ``torch.randperm(n)`` drawn from ``Generator().manual_seed(seeds[m])`` each epoch, i.e.
    exactly what ``models.train(net, x[indices[m]], y[indices[m]], seed=seeds[m])`` does.
    Adam is elementwise, so one Adam over the stacked tensors is M independent Adams;
    the summed loss gives model m the gradient of its own loss only.

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
    return _fit_stacked(nets, x, y, indices, seeds=seeds, epochs=epochs, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, device=dev, progress=progress,
                        desc=f"ensemble of {len(seeds)} {arch}")


def _fit_stacked(nets: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, *,
                 seeds: Sequence[int], epochs: int, batch_size: int, lr: float, weight_decay: float,
                 device: torch.device, progress: bool, desc: str, after_epoch=None) -> Ensemble:
    """Train the M modules `nets` (one architecture, on `device`) as one stacked ensemble,
    model m on ``x[indices[m]]`` shuffled by ``Generator().manual_seed(seeds[m])``.
    ``after_epoch(epoch, layers, params, buffers)`` (0-based epoch; linear weights held
    transposed) runs after every epoch; returning True ends training."""
    dev = device
    base = nets[0]  # its structure is used, its parameters are replaced by the stacked ones
    layers = _layers(base)
    params, buffers = stack_module_state(nets)
    lin = set(_linear_keys(layers))
    params = {k: (v.detach().transpose(1, 2) if k in lin else v.detach()).contiguous().requires_grad_(True)
              for k, v in params.items()}
    buffers = {k: v.detach() for k, v in buffers.items()}
    opt = torch.optim.Adam(list(params.values()), lr=lr, weight_decay=weight_decay, **_ADAM_IMPL)
    m_count, n = indices.shape
    steps = (n + batch_size - 1) // batch_size
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    xs, ys = x.to(dev), y.to(dev, dtype=torch.long)
    idx_dev = indices.to(dev)
    history: dict[str, Any] = {"loss": [], "epochs": epochs, "batch_size": batch_size}
    t0 = time.perf_counter()
    bar = tqdm(total=epochs * steps, desc=desc, unit="step",
               disable=(not progress) or progress_disabled(), leave=False)
    try:
        for _ in range(epochs):
            # Same draws as models.train: one randperm per model per epoch from its own generator.
            perms = torch.stack([runtime.randperm(n, g) for g in gens]).to(dev)
            rows = torch.gather(idx_dev, 1, perms)
            loss_sum = torch.zeros(m_count, device=dev)
            for i in range(steps):
                r = rows[:, i * batch_size:(i + 1) * batch_size]           # [M, B]
                logits = _stacked_forward(layers, params, buffers, xs[r])  # [M, B, classes]
                per_model = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys[r].reshape(-1),
                                            reduction="none").view(m_count, -1).mean(1)
                opt.zero_grad(set_to_none=True)
                per_model.sum().backward()
                opt.step()
                loss_sum += per_model.detach() * r.shape[1]
                bar.update(1)
            history["loss"].append((loss_sum / n).cpu().tolist())
            if after_epoch is not None and after_epoch(len(history["loss"]) - 1, layers, params, buffers):
                break
    finally:
        bar.close()
    history["seconds"] = time.perf_counter() - t0
    params = {k: (v.detach().transpose(1, 2) if k in lin else v.detach()).contiguous() for k, v in params.items()}
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


def finetune_ensemble(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, *,
                      seeds: Sequence[int], epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                      weight_decay: float = 0.0, device: torch.device | str | None = None,
                      progress: bool = True) -> Ensemble:
    """M copies of a trained `model`, each fine-tuned end to end on its own rows, at once.

    Copy m starts from `model`'s weights and trains every parameter like
    ``models.train(copy, x[indices[m]], y[indices[m]], seed=seeds[m])`` (Adam, mean
    cross-entropy, the same batch order): the end-to-end regime of Poison Frogs (Shafahi
    et al. 2018, arXiv 1804.00792), one copy per target, run as one stacked ensemble
    (see `train_ensemble`) instead of a loop of M trainings. `model` is left unchanged.

    Args: as `train_ensemble`, with `model` (a `models.Classifier` or an nn.Sequential of
    stackable layers) in place of arch / arch_params.
    Returns an `Ensemble`; ``.model(m)`` is copy m as an ordinary module.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    # `_check`'s arch test does not apply to a given model ("mlp" passes it);
    # `_layers` checks that this model can be stacked.
    _check("mlp", x, y, indices, seeds, epochs, batch_size, lr, weight_decay)
    _layers(model)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    nets = []
    for _ in seeds:
        net = copy.deepcopy(model).to(dev)
        for p in net.parameters():
            p.requires_grad_(True)
        nets.append(net)
    return _fit_stacked(nets, x, y, indices, seeds=seeds, epochs=epochs, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, device=dev, progress=progress,
                        desc=f"fine-tune {len(seeds)} copies")


__all__ += ["finetune_ensemble"]


# ------------------------------------------- rule G1 for many victims at once (issue #30)


@torch.no_grad()
def _stacked_loss(layers, params, buffers, x, y, rows: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Mean cross-entropy [M] of the M stacked models, model m on ``x[rows[m]]``."""
    m_count, n = rows.shape
    total = torch.zeros(m_count, device=x.device)
    for i in range(0, n, batch_size):
        r = rows[:, i:i + batch_size]
        logits = _stacked_forward(layers, params, buffers, x[r])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[r].reshape(-1),
                                 reduction="none").view(m_count, -1).sum(1)
    return total / n


def train_ensemble_early_stopping(arch: str, sets: Sequence[tuple[torch.Tensor, torch.Tensor]], *, seed: int,
                                  holdout: int = 1000, patience: int = 3, min_epochs: int = 3,
                                  max_epochs: int = 15, batch_size: int = 64, lr: float = 1e-3,
                                  num_classes: int = 10, device: torch.device | str | None = None,
                                  progress: bool = True) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """M victims of one architecture, one per training set of equal size, trained at once
    under rule G1's early stopping: what ``models.train_early_stopping`` does to each,
    as one stacked ensemble.

    Every model is ``models.build(arch, seed=seed)``; set m's rows split by
    ``models.holdout_split(n, holdout, seed)`` (the same rows for every set); model m trains
    on its fit rows (Adam, batch order from ``Generator().manual_seed(seed)``, exactly as
    `models.train`), its mean held-out loss is measured after every epoch, and
    `models.stopping_epoch` decides per model; a model's best epoch's weights are kept. The
    ensemble runs until every model has stopped (a stopped model keeps training, but its
    kept weights and loss history no longer change). Returns (models in eval mode,
    histories with "holdout_loss", "epochs_run", "best_epoch", ...).

    Poisoned training sets of notebook 03 share an architecture and a size: this trains
    them in one pass (tests/test_ensemble_early_stopping.py checks it against the loop).
    """
    if isinstance(sets, (str, bytes)) or not isinstance(sets, Sequence) or not sets:
        raise ConfigError("sets must be a non-empty list of (x, y) training sets")
    n = sets[0][0].shape[0]
    if any(x.shape != sets[0][0].shape or y.shape != (n,) for x, y in sets):
        raise ConfigError("every training set must have the same shape (stack only equal sizes)")
    models._check_early_stop(holdout, patience, min_epochs, max_epochs)
    fit, held = models.holdout_split(n, holdout, seed)
    m_count = len(sets)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    x_pool = torch.cat([x for x, _ in sets]).to(dev)
    y_pool = torch.cat([y for _, y in sets]).to(dev, dtype=torch.long)
    offs = (torch.arange(m_count) * n).unsqueeze(1)
    fit_rows, held_rows = (offs + fit.unsqueeze(0)), (offs + held.unsqueeze(0)).to(dev)
    nets = [models.build(arch, in_shape=tuple(x_pool.shape[1:]), num_classes=num_classes, seed=int(seed)).to(dev)
            for _ in range(m_count)]
    rule = dict(patience=patience, min_epochs=min_epochs, max_epochs=max_epochs)
    losses: list[list[float]] = [[] for _ in range(m_count)]
    stopped = [False] * m_count
    best: dict[int, dict[str, torch.Tensor]] = {}

    def after_epoch(epoch, layers, params, buffers):
        lin = set(_linear_keys(layers))
        held_loss = _stacked_loss(layers, params, buffers, x_pool, y_pool, held_rows).cpu().tolist()
        for m in range(m_count):
            if stopped[m]:
                continue
            losses[m].append(held_loss[m])
            stop, b = models.stopping_epoch(losses[m], **rule)
            if b == len(losses[m]):
                best[m] = {k: (v[m].detach().transpose(0, 1) if k in lin else v[m].detach()).clone()
                           for k, v in params.items()}
            stopped[m] = stop is not None
        return all(stopped)

    ens = _fit_stacked(nets, x_pool, y_pool, fit_rows, seeds=[int(seed)] * m_count, epochs=max_epochs,
                       batch_size=batch_size, lr=lr, weight_decay=0.0, device=dev, progress=progress,
                       desc=f"{m_count} {arch} (early stopping)", after_epoch=after_epoch)
    out, histories = [], []
    for m in range(m_count):
        net = nets[m]
        state = dict(net.state_dict())
        state.update(best[m])
        net.load_state_dict(state)
        out.append(net.eval())
        b = models.stopping_epoch(losses[m], **rule)[1]
        histories.append({"holdout_loss": losses[m], "epochs_run": len(losses[m]), "epochs": len(losses[m]),
                          "best_epoch": b, "holdout": holdout, **rule, "stacked": m_count,
                          "seconds": ens.history["seconds"] / m_count})
    return out, histories


def cached_many(arch: str, dataset_name: str, sets: Sequence[tuple[torch.Tensor, torch.Tensor]], *, seed: int,
                num_classes: int = 10, device: torch.device | str | None = None, stacked: bool = True,
                holdout: int = 1000, cache_dir=None, progress: bool = False) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """`models.cached(arch, dataset_name, x, y, seed=seed, early_stop={"holdout": holdout})`
    (rule G1; holdout 1,000 unless a tiny test set needs fewer) for many sets:
    cached ones are loaded; the rest train at once (`train_ensemble_early_stopping`) when
    `stacked` and they share a size (groups by size), else one by one via `models.cached`.
    Stacked models are stored under their own name (``dataset_name + "-stacked-<hash of
    this file>"``), so the
    cache never mixes models of the two paths, which agree to float tolerance only.
    Returns (models, infos) with info = {"key", "path", "from_cache", "train_seconds",
    "history"} as `models.cached` gives."""
    if not stacked:
        res = [models.cached(arch, dataset_name, x, y, seed=seed, num_classes=num_classes, device=device,
                             progress=progress, early_stop={"holdout": holdout}, cache_dir=cache_dir) for x, y in sets]
        return [m for m, _ in res], [i for _, i in res]
    name = f"{dataset_name}-stacked-{_SOURCE_VERSION[:12]}"   # this file's code is in the key too
    dev = torch.device(device) if device is not None else torch.device("cpu")
    es = models.resolve_early_stop({"holdout": holdout})
    out: list[Any] = [None] * len(sets)
    infos: list[Any] = [None] * len(sets)
    todo: dict[int, list[int]] = {}
    for i, (x, y) in enumerate(sets):
        key = models.checkpoint_key(arch, name, x, y, train_params=None, seed=seed, in_shape=tuple(x.shape[1:]),
                                    num_classes=num_classes, early_stop=es)
        path = models.checkpoint_dir(cache_dir) / f"{arch}-{models._slug(name)}-{key[:20]}.safetensors"
        infos[i] = {"key": key, "path": path, "from_cache": False, "train_seconds": None, "history": None}
        if path.exists():
            net = models.build(arch, in_shape=tuple(x.shape[1:]), num_classes=num_classes, seed=seed).to(dev)
            try:
                meta = models.load_checkpoint(net, path, key=key)
            except (models.IntegrityError, OSError):
                pass
            else:
                out[i] = net.eval()
                infos[i].update(from_cache=True, history=json.loads(meta.get("history", "null")))
                continue
        todo.setdefault(int(x.shape[0]), []).append(i)
    for idx in todo.values():
        nets, hist = train_ensemble_early_stopping(arch, [sets[i] for i in idx], seed=seed, num_classes=num_classes,
                                                   device=dev, progress=progress, **es)
        for i, net, h in zip(idx, nets, hist):
            stored = {k: v for k, v in h.items() if k != "seconds"}
            models.save_checkpoint(net, infos[i]["path"], key=infos[i]["key"], arch=arch,
                                   extra={"dataset": name, "code_version": models.CODE_VERSION,
                                          "history": json.dumps(stored, sort_keys=True)})
            out[i] = net
            infos[i].update(train_seconds=h["seconds"], history=h)
    return out, infos


__all__ += ["cached_many", "train_ensemble_early_stopping"]
