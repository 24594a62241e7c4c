"""Small image classifiers, a deterministic training loop and a checkpoint cache.

Every model takes images in [0, 1] shaped [n, C, H, W] and returns logits. Each one is
split into ``model.features`` (input -> last hidden representation) and ``model.head``
(the final ``nn.Linear``), and ``forward(x) == head(features(x))``; poisoning defenses
and feature-collision attacks work on ``model.features``.

    >>> from threatlab import models
    >>> net = models.build("lenet5", in_shape=(1, 28, 28), num_classes=10, seed=0)
    >>> hist = models.train(net, x, y, epochs=2, seed=0)
    >>> models.accuracy(net, x_test, y_test)
    >>> hist = models.train_early_stopping(net, x, y, seed=0)   # rule G1: converged victims
    >>> hist["epochs_run"], hist["best_epoch"], hist["holdout_loss"]

`cached` trains a model once per (architecture, data set, training data, training
parameters, seed, shapes, code version) and keeps it as a safetensors file; a file that
is corrupt or belongs to another configuration is detected and retrained, never used.
Nothing here is unpickled and `torch.load` is never called.

This module does not import `threatlab.data` at import time; only the convenience
`load_or_train` does, lazily.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import stat
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
from safetensors.torch import load as safetensors_from_bytes  # bytes in, tensors out: no pickle
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from tqdm.auto import tqdm

from . import io as tio
from . import paths, runtime, validate
from .errors import ConfigError, IntegrityError
from .runtime import progress_disabled

__all__ = [
    "ARCHITECTURES", "CODE_VERSION", "CheckpointWarning", "Classifier", "LeNet5", "MLP",
    "Normalize", "SmallCNN", "accuracy", "build", "cached", "checkpoint_dir", "checkpoint_key",
    "load_checkpoint", "load_or_train", "predict", "save_checkpoint", "tensor_digest", "train",
    "EARLY_STOP_DEFAULTS", "holdout_split", "resolve_early_stop", "stopping_epoch", "train_early_stopping",
]

#: sha256 of this file's source: any change to architectures or training invalidates
#: every cached checkpoint.
CODE_VERSION: str = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

#: Written into every checkpoint's metadata; bump if the layout of the file changes.
CHECKPOINT_FORMAT = "threatlab-checkpoint-1"

#: Environment variable naming the cache root (checkpoints go to <root>/models).
CACHE_ENV = paths.CACHE_ENV



#: Default input centring: MNIST's pixel mean and standard deviation. Centring on the
#: data's own statistics (not mid-grey 0.5) matters for the MLP on MNIST's mostly black
#: images: with (x - 0.5) / 0.5 it reached 88.7 % test accuracy after 5 epochs on 10k
#: examples (Adam 1e-3, batch 64); with these statistics, 89.9 % after 2 (batch 128).
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081


class CheckpointWarning(UserWarning):
    """A cached checkpoint was corrupt or mismatching and is being retrained."""


# --------------------------------------------------------------------------- layers

class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std stored as buffers.

    Normalization lives inside the model, not in the data pipeline, so that everything
    outside the model -- attack budgets (eps), clipping to [0, 1], black-box queries,
    reconstructions from inversion -- works in plain pixel space. An attack never needs
    to know a data set's statistics, and a checkpoint carries its own.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], channels: int):
        super().__init__()
        m = _per_channel("mean", mean, channels)
        s = _per_channel("std", std, channels)
        if bool((s <= 0).any()):
            raise ConfigError(f"std={std!r} must be > 0 in every channel")
        self.register_buffer("mean", m.view(1, channels, 1, 1))
        self.register_buffer("std", s.view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _per_channel(name: str, value: float | Sequence[float], channels: int) -> torch.Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((channels,), float(value))
    vals = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if vals is None or len(vals) != channels or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        raise ConfigError(f"{name}={value!r} must be a number or {channels} numbers (one per channel)")
    return torch.tensor([float(v) for v in vals])


# --------------------------------------------------------------------- architectures

class Classifier(nn.Module):
    """Base class: ``forward(x) = head(features(x))`` on inputs in [0, 1].

    Subclasses set ``self.features`` (an ``nn.Sequential`` starting with `Normalize`,
    ending at the last hidden representation, shape [n, feature_dim]) and ``self.head``
    (``nn.Linear(feature_dim, num_classes)``).
    """

    arch: str = ""
    features: nn.Sequential
    head: nn.Linear

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes

    @property
    def feature_dim(self) -> int:
        """Width of the penultimate representation (input size of ``head``)."""
        return self.head.in_features

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden representation, [n, feature_dim] (same as ``features(x)``)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [n, num_classes] for images x [n, C, H, W] in [0, 1]."""
        return self.head(self.features(x))


def _flat_size(trunk: nn.Module, in_shape: tuple[int, int, int], arch: str) -> int:
    """Output width of `trunk` for one input of `in_shape` (a dummy forward on zeros)."""
    try:
        with torch.no_grad():
            out = trunk(torch.zeros(1, *in_shape))
    except RuntimeError as e:
        raise ConfigError(f"in_shape={tuple(in_shape)!r} is too small for arch={arch!r} ({e})") from None
    if out.numel() == 0:
        raise ConfigError(f"in_shape={tuple(in_shape)!r} is too small for arch={arch!r}")
    return out.shape[1]


class MLP(Classifier):
    """Fully connected net: flatten -> [Linear -> ReLU] per hidden size -> Linear."""

    arch = "mlp"

    def __init__(self, in_shape=(1, 28, 28), num_classes=10, *, hidden: Sequence[int] = (256, 256),
                 mean=PIXEL_MEAN, std=PIXEL_STD):
        super().__init__(in_shape, num_classes)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise ConfigError(f"hidden={hidden!r} must be a sequence of positive integers")
        for h in hidden:
            validate.positive("hidden", h, integer=True)
        c, hh, ww = in_shape
        layers: list[nn.Module] = [Normalize(mean, std, c), nn.Flatten()]
        width = c * hh * ww
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)


def _conv_block(c_in: int, c_out: int, kernel: int, *, padding: int) -> tuple[nn.Module, ...]:
    """conv -> 2x2 max-pool -> ReLU: the conv -> ReLU -> pool block, reordered.

    ReLU is monotone, so max-pooling commutes with it: ``relu(max(window)) ==
    max(relu(window))`` exactly, and the gradient reaches the same element (the
    window's first maximum when it is positive, nothing when it is not). Pooling first
    runs the ReLU and its backward on a quarter of the elements; the numbers are
    bit-identical (tests/test_models.py compares outputs, input and parameter
    gradients and trained weights with the other order), and the parameter names stay
    those of the old order (ReLU and pooling have none). Training SmallCNN on the CPU
    takes 0.82x the time (benchmarks/PROFILING.md).
    """
    return nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.MaxPool2d(2), nn.ReLU()


class SmallCNN(Classifier):
    """Two 3x3 conv layers (32, 64 channels, padding 1), each followed by ReLU and 2x2
    max-pooling, then FC 128 + ReLU and the linear head.

    The FC input size comes from a dummy forward at build time, so 28x28 (MNIST) and
    8x8 (digits) inputs both work. Pooling after each conv (not only after the second)
    keeps the second conv 4x cheaper, which matters on the CPU profiles. The pooling
    runs before the ReLU (`_conv_block`): the same function and the same gradients, on
    a quarter of the elements.
    """

    arch = "cnn"

    def __init__(self, in_shape=(1, 28, 28), num_classes=10, *, mean=PIXEL_MEAN, std=PIXEL_STD):
        super().__init__(in_shape, num_classes)
        c = in_shape[0]
        trunk = nn.Sequential(
            Normalize(mean, std, c),
            *_conv_block(c, 32, 3, padding=1),
            *_conv_block(32, 64, 3, padding=1),
            nn.Flatten(),
        )
        flat = _flat_size(trunk, in_shape, self.arch)
        self.features = nn.Sequential(*trunk, nn.Linear(flat, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)


class LeNet5(Classifier):
    """LeNet-5-like (LeCun et al., 1998) with ReLU and max-pooling:
    conv 6@5x5 (padding 2) -> pool -> conv 16@5x5 -> pool -> FC 120 -> FC 84 -> head.

    On 28x28 inputs this is the classic 16x5x5 = 400 -> 120 layout. When the map after
    the first pooling is smaller than 6 pixels (e.g. 8x8 digits -> 4x4) the second conv
    is padded by 2 too so the spatial size stays positive.
    """

    arch = "lenet5"

    def __init__(self, in_shape=(1, 28, 28), num_classes=10, *, mean=PIXEL_MEAN, std=PIXEL_STD):
        super().__init__(in_shape, num_classes)
        c, h, w = in_shape
        pad2 = 0 if min(h, w) // 2 >= 6 else 2
        trunk = nn.Sequential(
            Normalize(mean, std, c),
            *_conv_block(c, 6, 5, padding=2),
            *_conv_block(6, 16, 5, padding=pad2),
            nn.Flatten(),
        )
        flat = _flat_size(trunk, in_shape, self.arch)
        self.features = nn.Sequential(*trunk, nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, num_classes)


#: name -> class; `build` chooses by name.
ARCHITECTURES: dict[str, type[Classifier]] = {cls.arch: cls for cls in (MLP, SmallCNN, LeNet5)}


# ------------------------------------------- twice-differentiable target (gradient leakage)

class SigmoidLeNet(Classifier):
    """The LeNet-style network deep leakage from gradients attacks: three 5x5 conv
    layers of 12 channels (stride 2, 2, 1; padding 2), each followed by a sigmoid, no
    pooling, then the linear head (Zhu, Liu, Han 2019, arXiv 1906.08935, their LeNet).

    Gradient matching differentiates the gradient itself, so the attack needs a network
    whose second derivatives exist and carry information everywhere: sigmoids, strided
    convolutions instead of max-pooling. ``init="dlg"`` draws every weight and bias from
    U(-0.5, 0.5) as the DLG reference code does (the scale at which the paper's
    reconstructions succeed); ``init="torch"`` keeps PyTorch's default. ``mean`` / ``std``
    default to 0 / 1: the reference feeds raw [0, 1] pixels. On 28x28 inputs the head
    reads 12 x 7 x 7 = 588 features.
    """

    arch = "lenet_sigmoid"

    def __init__(self, in_shape=(1, 28, 28), num_classes=10, *, init: str = "dlg", mean=0.0, std=1.0):
        super().__init__(in_shape, num_classes)
        validate.choice("init", init, ("dlg", "torch"))
        c = in_shape[0]
        trunk = nn.Sequential(
            Normalize(mean, std, c),
            nn.Conv2d(c, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
            nn.Flatten(),
        )
        flat = _flat_size(trunk, in_shape, self.arch)
        self.features = trunk
        self.head = nn.Linear(flat, num_classes)
        if init == "dlg":
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        m.weight.uniform_(-0.5, 0.5)
                        m.bias.uniform_(-0.5, 0.5)


ARCHITECTURES[SigmoidLeNet.arch] = SigmoidLeNet
__all__.append("SigmoidLeNet")


def _check_in_shape(in_shape: Any) -> tuple[int, int, int]:
    if (isinstance(in_shape, (str, bytes)) or not isinstance(in_shape, Sequence) or len(in_shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in in_shape)):
        raise ConfigError(f"in_shape={in_shape!r} must be three positive integers (C, H, W)")
    return tuple(int(v) for v in in_shape)  # type: ignore[return-value]


def build(arch: str, *, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
          seed: int | None = None, **arch_params: Any) -> Classifier:
    """Build architecture `arch` for inputs [n, *in_shape] in [0, 1] and `num_classes` logits.

    Args:
        arch: one of ``ARCHITECTURES`` ("mlp", "cnn" = SmallCNN, "lenet5").
        in_shape: (C, H, W) of one input, e.g. (1, 28, 28) for MNIST, (1, 8, 8) for digits.
        num_classes: number of output logits (>= 2).
        seed: if given, parameters are initialised from ``torch.manual_seed(seed)`` inside
            a forked RNG (the global RNG is left as it was); if None, from the global RNG
            (deterministic after ``seed_everything``).
        **arch_params: passed to the class, e.g. ``hidden=(512,)`` for "mlp", and
            ``mean`` / ``std`` (number or one per channel, default 0.5 / 0.5) for all.

    Returns the model on the CPU. Unknown `arch` raises ConfigError listing the names.
    """
    validate.choice("arch", arch, sorted(ARCHITECTURES))
    shape = _check_in_shape(in_shape)
    validate.number("num_classes", num_classes, low=2, integer=True)
    cls = ARCHITECTURES[arch]
    if seed is None:
        return _construct(cls, shape, num_classes, arch_params)
    validate.non_negative("seed", seed, integer=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(cls, shape, num_classes, arch_params)


def _construct(cls, shape, num_classes, arch_params) -> Classifier:
    try:
        return cls(shape, num_classes, **arch_params)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise ConfigError(f"arch={cls.arch!r} does not take parameters {sorted(arch_params)} ({e})") from None
        raise


# -------------------------------------------------------------------------- training

_OPTIMIZERS = ("adam", "sgd")

#: Training parameters `train` accepts through `cached(train_params=...)`, with defaults.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "optimizer": "adam", "momentum": 0.9,
}


def _check_train_params(epochs, batch_size, lr, weight_decay, optimizer, momentum, seed) -> None:
    validate.positive("epochs", epochs, integer=True)
    validate.positive("batch_size", batch_size, integer=True)
    validate.positive("lr", lr)
    validate.non_negative("weight_decay", weight_decay)
    validate.choice("optimizer", optimizer, _OPTIMIZERS)
    validate.number("momentum", momentum, low=0, high=1, high_open=True)
    validate.non_negative("seed", seed, integer=True)


def _check_xy(x: Any, y: Any, model: nn.Module | None = None, num_classes: int | None = None) -> None:
    """x: floating [n > 0, ...] of finite values in [0, 1]; y: integer [n] labels >= 0.

    With `model`: x has its input shape and dtype (not its device: `train` moves each
    batch), and y stays below its number of classes (or `num_classes` when given).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError(f"x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ConfigError(f"x has shape {tuple(x.shape)}; expected [n, C, H, W] with n > 0")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ConfigError(f"y has shape {tuple(y.shape)}; expected [{x.shape[0]}] (one label per row of x)")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ConfigError(f"y has dtype {y.dtype}; expected integer class labels")
    # NaN pixels train a NaN model; pixels in 0..255 train one that every attack's eps
    # and [0, 1] box then misread. Both are refused before the first step.
    validate.images("x", x)
    if model is not None:
        validate.model_input(model, x, device=False)
        if num_classes is None:
            num_classes = validate.model_facts(model)["num_classes"]
    validate.labels("y", y, x.shape[0], num_classes=num_classes)


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


#: The batch hook of `train`: (model, xb, yb, global step, generator) -> inputs to learn on.
Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 1, batch_size: int = 128,
          lr: float = 1e-3, weight_decay: float = 0.0, optimizer: str = "adam", momentum: float = 0.9,
          seed: int = 0, progress: bool = True, desc: str | None = None,
          perturb: "Perturb | None" = None,
          after_epoch: "Callable[[int, dict[str, Any]], bool] | None" = None) -> dict[str, Any]:
    """Train `model` in place with cross-entropy on (x, y); return the history.

    Args:
        model: any module mapping x to logits; it trains on its own device and the data
            is moved there one batch at a time (x, y may stay on the CPU).
        x: inputs [n, ...] in [0, 1], finite, of the model's ``in_shape`` and dtype when
            it declares them; y: integer labels [n] inside the model's classes
            (ConfigError before the first step otherwise).
        epochs: passes over the data (> 0). batch_size: examples per step (> 0; the last
            batch of an epoch may be smaller).
        lr: learning rate (> 0). weight_decay: L2 penalty (>= 0).
        optimizer: "adam" or "sgd" (SGD uses `momentum`, ignored by Adam).
        seed: seeds this call's own ``torch.Generator`` that shuffles the data; the global
            RNG is not used, so the same model initialisation + seed give bit-identical
            parameters. (Initialisation is seeded where the model is built: ``build(seed=)``
            or ``seed_everything`` beforehand.)
        progress: show a tqdm bar over batches (off as well when THREATLAB_NO_PROGRESS=1).
        desc: label of the bar (default "train <ClassName>").
        perturb: optional hook ``perturb(model, xb, yb, step, generator) -> xb'`` that
            replaces each batch before the forward pass (adversarial training). It runs
            with the model in eval mode (no batch-statistics drift while attacking) and
            receives the global batch index and this call's shuffling generator, so one
            seed fixes both the batch order and the hook's random draws.
        after_epoch: optional ``after_epoch(epoch, history) -> stop`` called after each
            epoch (0-based index, the history so far) with the model in train mode;
            returning True ends training there (`train_early_stopping` uses it). The
            optimiser keeps its state across epochs, as without the hook.

    Returns ``{"loss": [mean loss per epoch], "train_acc": [accuracy during each epoch],
    "seconds": wall time, "epochs", "batch_size"}``. The model is left in eval mode.
    """
    _check_train_params(epochs, batch_size, lr, weight_decay, optimizer, momentum, seed)
    _check_xy(x, y, model)
    if perturb is not None and not callable(perturb):
        raise ConfigError(f"perturb={perturb!r} is not allowed; expected None or a callable "
                          "(model, xb, yb, step, generator) -> xb")
    if after_epoch is not None and not callable(after_epoch):
        raise ConfigError(f"after_epoch={after_epoch!r} is not allowed; expected None or a callable "
                          "(epoch, history) -> bool")
    device = _device_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps = (n + batch_size - 1) // batch_size
    history: dict[str, Any] = {"loss": [], "train_acc": [], "seconds": 0.0, "epochs": epochs,
                               "batch_size": batch_size}
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=epochs * steps, desc=desc or f"train {type(model).__name__}", unit="batch",
               disable=(not progress) or progress_disabled(), leave=False)
    try:
        for epoch in range(epochs):
            perm = runtime.randperm(n, gen, device=x.device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            for i in range(steps):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                xb = x[idx].to(device, non_blocking=True)
                yb = y[idx].to(device, dtype=torch.long, non_blocking=True)
                if perturb is not None:
                    model.eval()
                    xb = perturb(model, xb, yb, epoch * steps + i, gen)
                    model.train()
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * yb.shape[0]
                correct += (logits.detach().argmax(1) == yb).sum()
                bar.update(1)
            history["loss"].append(loss_sum.item() / n)
            history["train_acc"].append(correct.item() / n)
            stop = bool(after_epoch(epoch, history)) if after_epoch is not None else False
            extra = {"held_out": f"{history['holdout_loss'][-1]:.4f}"} if history.get("holdout_loss") else {}
            bar.set_postfix(epoch=epoch + 1, loss=f"{history['loss'][-1]:.4f}",
                            acc=f"{history['train_acc'][-1]:.3f}", **extra)
            if stop:
                break
    finally:
        bar.close()
        model.eval()
    history["seconds"] = time.perf_counter() - start
    return history


# ------------------------------------------------------------- early stopping (rule G1)

#: The early-stopping rule every converged victim trains under (the findings' general rule G1):
#: held-out loss on 1,000 training images kept out of training, patience 3 epochs, at
#: least 3 and at most 15 epochs, the best epoch's weights kept.
EARLY_STOP_DEFAULTS: dict[str, int] = {"holdout": 1000, "patience": 3, "min_epochs": 3, "max_epochs": 15}

#: Training parameters of an early-stopped model where the caller gives none: Adam 1e-3,
#: batch 64, the recipe under which G1's power-check bars were measured.
EARLY_STOP_TRAIN_DEFAULTS: dict[str, Any] = {**TRAIN_DEFAULTS, "batch_size": 64}


def _check_early_stop(holdout, patience, min_epochs, max_epochs) -> None:
    validate.positive("holdout", holdout, integer=True)
    validate.positive("patience", patience, integer=True)
    validate.positive("min_epochs", min_epochs, integer=True)
    validate.positive("max_epochs", max_epochs, integer=True)
    if min_epochs > max_epochs:
        raise ConfigError(f"min_epochs={min_epochs!r} is more than max_epochs={max_epochs!r}; "
                          "allowed: 1 <= min_epochs <= max_epochs")


def resolve_early_stop(early_stop: "bool | Mapping[str, Any] | None") -> dict[str, int] | None:
    """``None`` / ``False`` -> None (fixed epochs); ``True`` -> `EARLY_STOP_DEFAULTS`; a
    mapping -> those defaults updated by it (keys holdout, patience, min_epochs,
    max_epochs). ConfigError on unknown keys or bad values."""
    if early_stop is None or early_stop is False:
        return None
    if early_stop is True:
        return dict(EARLY_STOP_DEFAULTS)
    if not isinstance(early_stop, Mapping):
        raise ConfigError(f"early_stop={early_stop!r} is not allowed; expected None, True or a dict with keys "
                          f"{sorted(EARLY_STOP_DEFAULTS)}")
    unknown = sorted(set(early_stop) - set(EARLY_STOP_DEFAULTS))
    if unknown:
        raise ConfigError(f"early_stop has unknown keys {unknown}; allowed: {sorted(EARLY_STOP_DEFAULTS)}")
    full = {**EARLY_STOP_DEFAULTS, **early_stop}
    _check_early_stop(**full)
    return full


def stopping_epoch(losses: Sequence[float], *, patience: int = 3, min_epochs: int = 3,
                   max_epochs: int = 15) -> tuple[int | None, int]:
    """The early-stopping rule as a pure function of held-out losses (rule G1).

    `losses[i]` is the held-out loss after epoch i + 1. Returns ``(stop, best)``: `stop`
    is the 1-based epoch after which training stops (None if the rule has not stopped
    within the losses given), `best` the 1-based epoch of the lowest loss among the
    epochs run (up to `stop`, else all given). A tie is not an improvement (the earlier
    epoch stays best) and NaN never is. Training stops after epoch e when
    e >= min_epochs and either e - best >= patience (no improvement for `patience`
    epochs) or e == max_epochs. So a loss that rises after epoch k stops training at
    max(k + patience, min_epochs) with best k.
    """
    _check_early_stop(1, patience, min_epochs, max_epochs)
    best, best_loss = 0, math.inf
    for e, loss in enumerate(losses, start=1):
        value = math.inf if math.isnan(loss) else loss  # a NaN loss never improves
        if best == 0 or value < best_loss:  # strict: a tie keeps the earlier epoch
            best, best_loss = e, value
        if e >= min_epochs and (e - best >= patience or e >= max_epochs):
            return e, best
    return None, best


def holdout_split(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split rows 0..n-1 into (training rows, held-out rows), both sorted, disjoint,
    together all n rows; `holdout` rows are drawn by a permutation seeded with `seed`
    (its own generator: the global RNG is untouched). ConfigError unless
    1 <= holdout < n (at least one row must be left to train on)."""
    validate.positive("n", n, integer=True)
    validate.positive("holdout", holdout, integer=True)
    validate.non_negative("seed", seed, integer=True)
    if holdout >= n:
        raise ConfigError(f"holdout={holdout!r} must be smaller than the training set ({n} rows); "
                          "allowed: 1 <= holdout < n")
    perm = runtime.randperm(n, torch.Generator().manual_seed(seed))
    held = perm[:holdout].sort().values
    fit = perm[holdout:].sort().values
    return fit, held


@torch.no_grad()
def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Mean cross-entropy of `model` on (x, y) in eval mode, as a 0-d tensor on the model's
    device (batched; the caller decides when to read it)."""
    device = _device_of(model)
    total = torch.zeros((), device=device)
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device)
        yb = y[i:i + batch_size].to(device, dtype=torch.long)
        total += F.cross_entropy(model(xb), yb, reduction="sum")
    return total / x.shape[0]


def train_early_stopping(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, holdout: int = 1000,
                         patience: int = 3, min_epochs: int = 3, max_epochs: int = 15, batch_size: int = 64,
                         lr: float = 1e-3, weight_decay: float = 0.0, optimizer: str = "adam",
                         momentum: float = 0.9, seed: int = 0, progress: bool = True,
                         desc: str | None = None) -> dict[str, Any]:
    """Train `model` in place until its held-out loss stops improving; keep the best epoch.

    The findings' general rule G1 ("victims at convergence"): `holdout` rows of (x, y), drawn by
    `holdout_split(n, holdout, seed)`, are kept out of training; after every epoch the
    mean cross-entropy on them is measured (eval mode, one read per epoch), and
    `stopping_epoch` decides: stop after `patience` epochs without a lower held-out loss,
    never before `min_epochs`, never after `max_epochs`. The weights of the best epoch are
    loaded back at the end, so the model returned is the one whose held-out loss is
    ``history["holdout_loss"][best_epoch - 1]``. Training itself is `train` on the other
    rows (same optimiser, shuffling by `seed`, progress bar), with Adam 1e-3 and batch 64
    by default as G1's measurements used.

    Returns `train`'s history (loss and train_acc per epoch run, seconds) plus
    ``"holdout_loss"`` (per epoch run), ``"epochs_run"``, ``"best_epoch"``, ``"holdout"``,
    ``"patience"``, ``"min_epochs"``, ``"max_epochs"``. The model is left in eval mode.
    ConfigError before any compute on a bad argument (patience < 1, min_epochs >
    max_epochs, holdout >= number of rows, NaN or non-positive lr, ...).
    """
    _check_early_stop(holdout, patience, min_epochs, max_epochs)
    _check_train_params(max_epochs, batch_size, lr, weight_decay, optimizer, momentum, seed)
    _check_xy(x, y, model)
    fit, held = holdout_split(x.shape[0], holdout, seed)
    fit, held = fit.to(x.device), held.to(x.device)
    x_fit, y_fit, x_held, y_held = x[fit], y[fit], x[held], y[held]
    best_state: dict[str, torch.Tensor] = {}
    rule = dict(patience=patience, min_epochs=min_epochs, max_epochs=max_epochs)

    def after_epoch(epoch: int, history: dict[str, Any]) -> bool:
        model.eval()
        try:
            loss = _mean_loss(model, x_held, y_held).item()  # one read per epoch
        finally:
            model.train()
        history.setdefault("holdout_loss", []).append(loss)
        stop, best = stopping_epoch(history["holdout_loss"], **rule)
        if best == epoch + 1:  # this epoch is the best so far: keep its weights
            best_state.clear()
            best_state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return stop is not None

    history = train(model, x_fit, y_fit, epochs=max_epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, optimizer=optimizer, momentum=momentum, seed=seed,
                    progress=progress, desc=desc, after_epoch=after_epoch)
    best = stopping_epoch(history["holdout_loss"], **rule)[1]
    model.load_state_dict(best_state)
    model.eval()
    history.update({"epochs": len(history["holdout_loss"]), "epochs_run": len(history["holdout_loss"]),
                    "best_epoch": best, "holdout": holdout, **rule})
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels (argmax of the logits) as a LongTensor [n] on x's device.

    Runs in eval mode under ``torch.no_grad`` in batches of `batch_size`, moving each batch
    to the model's device; the model's train/eval mode is restored afterwards.
    """
    validate.positive("batch_size", batch_size, integer=True)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        out = [model(x[i:i + batch_size].to(device)).argmax(1).to(x.device)
               for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of examples of x whose predicted label equals y (batched, no grad)."""
    _check_xy(x, y, model)
    pred = predict(model, x, batch_size=batch_size)
    return (pred == y.to(pred.device)).float().mean().item()


# ----------------------------------------------------------------------- checkpoints

def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 over the dtype, shape and raw bytes of each tensor, in order.

    Used for the training data in the cache key (so the same data always gives the same
    key, and a different subset, order or dtype a different one).
    """
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_raw(t))
    return h.hexdigest()


def _raw(t: torch.Tensor):
    """The bytes of a contiguous CPU tensor, as a buffer (no copy for common dtypes)."""
    return t.reshape(-1).view(torch.uint8).numpy()


def _content_sha(state: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in state.values():
        h.update(_raw(t.detach().cpu().contiguous()))
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, key: str, arch: str,
                    extra: Mapping[str, str] | None = None) -> Path:
    """Write the model's state dict to `path` as safetensors, atomically.

    Metadata: ``key`` (the cache key), ``arch``, ``sha256`` of the concatenated tensor
    bytes in state-dict order, ``format``, plus `extra` (strings). The file is built in
    memory and renamed into place, so an interrupted save leaves any previous file intact.

    Safe under concurrent writers of the same key (sweep points share one cache): each
    writer fills its own temporary file and renames it over `path`, an atomic step, so a
    reader sees one complete file or the other, never a mix; the same key gives the same
    bytes, so which rename lands last does not matter. A writer that finds those exact
    bytes already in place leaves the file alone (readers keep their open inode).
    """
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {**(extra or {}), "key": key, "arch": arch, "sha256": _content_sha(state),
            "format": CHECKPOINT_FORMAT}
    data = _canonical_header(safetensors.torch.save(state, metadata=meta))
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
    except OSError:
        pass  # unreadable or vanished meanwhile: write it
    return tio.atomic_write(path, data)


def _canonical_header(data: bytes) -> bytes:
    """Rewrite a safetensors header with sorted keys so equal content gives equal bytes.

    safetensors serialises its header from a hash map, so the key order (and thus the
    file bytes) changes from process to process. The tensor data region is untouched;
    the header is re-padded with spaces to a multiple of 8 bytes as safetensors does.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-(8 + len(header)) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def _read_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise IntegrityError(f"file has {len(data)} bytes, too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise IntegrityError(f"header length {n} exceeds the file ({len(data)} bytes); truncated?")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, ValueError) as e:
        raise IntegrityError(f"header is not valid JSON ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise IntegrityError("no metadata in the header")
    return meta


#: Largest checkpoint `load_checkpoint` reads. The models here are well under 10 MB;
#: 1 GiB leaves room for any architecture added later and bounds what a swapped file
#: can make a reader allocate.
MAX_CHECKPOINT_BYTES = 1 << 30


def _read_regular(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`.

    Opened with O_NONBLOCK so that a FIFO at the path returns at once instead of waiting
    for a writer; the type and size come from fstat on the opened descriptor (no gap
    between the check and the read). IntegrityError for anything but a regular file or
    for a file over the bound; FileNotFoundError when nothing is there.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise IntegrityError(f"{path} is {kind}; a checkpoint must be a regular file")
        if st.st_size > max_bytes:
            raise IntegrityError(f"{path} has {st.st_size} bytes, more than the {max_bytes} a checkpoint may have")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew after fstat
        raise IntegrityError(f"{path} grew past {max_bytes} bytes while being read")
    return data


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, key: str) -> dict[str, str]:
    """Load a checkpoint written by `save_checkpoint` into `model`; return its metadata.

    The whole file is read and checked before the model is touched: it must parse as
    safetensors, carry metadata ``key == key`` and the expected format, hold exactly the
    model's state-dict names with the same shapes and dtypes, and its tensor bytes must
    hash to the recorded sha256. Otherwise IntegrityError says which check failed and the
    model is unchanged. Missing file: FileNotFoundError. Only a regular file of at most
    `MAX_CHECKPOINT_BYTES` is read (see `_read_regular`): a FIFO, device or directory at
    the path is an IntegrityError at once, never a read that blocks.
    """
    data = _read_regular(path, MAX_CHECKPOINT_BYTES)
    meta = _read_metadata(data)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise IntegrityError(f"format {meta.get('format')!r} is not {CHECKPOINT_FORMAT!r}")
    if meta.get("key") != key:
        raise IntegrityError(f"metadata key {str(meta.get('key'))[:16]}... is not the expected {key[:16]}...")
    try:
        tensors = safetensors_from_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise IntegrityError(f"safetensors could not parse it ({e})") from None
    expected = model.state_dict()
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise IntegrityError(f"tensor names differ (missing {missing}, unexpected {unexpected})")
    for name, ref in expected.items():
        got = tensors[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise IntegrityError(f"{name} is {got.dtype}{tuple(got.shape)}, expected {ref.dtype}{tuple(ref.shape)}")
    ordered = {name: tensors[name] for name in expected}
    digest = _content_sha(ordered)
    if digest != meta.get("sha256"):
        raise IntegrityError(f"content sha256 {digest[:16]}... differs from the recorded "
                             f"{str(meta.get('sha256'))[:16]}...")
    model.load_state_dict(ordered, strict=True)
    return meta


def checkpoint_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of model checkpoints: ``<root>/models`` with root = `cache_dir` if given,
    else `threatlab.paths.cache_dir()`: $THREATLAB_CACHE, else ``<repo>/data/cache``
    (git-ignored) in a source checkout, else the user's cache folder."""
    root = cache_dir if cache_dir is not None else paths.cache_dir()
    return Path(root) / "models"


def _canonical(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cache key parameters must be plain JSON values ({e})") from None


def _resolve_train_params(train_params: Mapping[str, Any] | None, seed: int,
                          early_stop: Mapping[str, int] | None = None) -> dict[str, Any]:
    """`train_params` with defaults filled in. Under early stopping (`early_stop` resolved)
    the defaults are `EARLY_STOP_TRAIN_DEFAULTS` and "epochs" is not a training parameter
    (the rule decides it, up to max_epochs), so it is refused and left out."""
    tp = dict(train_params or {})
    unknown = sorted(set(tp) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ConfigError(f"train_params has unknown keys {unknown}; allowed: {sorted(TRAIN_DEFAULTS)} "
                          "(seed and progress are separate arguments)")
    if early_stop is None:
        full = {**TRAIN_DEFAULTS, **tp}
        _check_train_params(seed=seed, **full)
        return full
    if "epochs" in tp:
        raise ConfigError(f"train_params epochs={tp['epochs']!r} is not allowed with early stopping; "
                          "set early_stop max_epochs instead")
    full = {k: v for k, v in {**EARLY_STOP_TRAIN_DEFAULTS, **tp}.items() if k != "epochs"}
    _check_train_params(seed=seed, epochs=early_stop["max_epochs"], **full)
    return full


def checkpoint_key(arch: str, dataset_name: str, x: torch.Tensor, y: torch.Tensor, *,
                   train_params: Mapping[str, Any] | None, seed: int, in_shape: Sequence[int],
                   num_classes: int, arch_params: Mapping[str, Any] | None = None,
                   early_stop: "bool | Mapping[str, Any] | None" = None) -> str:
    """The content-addressed cache key: sha256 of a canonical JSON of the architecture,
    data set name, sha256 of the training tensors, training parameters (defaults filled
    in), seed, input shape, number of classes, architecture parameters and CODE_VERSION;
    with `early_stop` (see `resolve_early_stop`), also the early-stopping rule, so an
    early-stopped model never shares a key with a fixed-epoch one."""
    validate.choice("arch", arch, sorted(ARCHITECTURES))
    validate.of_type("dataset_name", dataset_name, str)
    _check_xy(x, y)
    es = resolve_early_stop(early_stop)
    if es is not None and es["holdout"] >= x.shape[0]:
        raise ConfigError(f"early_stop holdout={es['holdout']!r} must be smaller than the training set "
                          f"({x.shape[0]} rows); allowed: 1 <= holdout < n")
    record = {
        "arch": arch,
        "arch_params": dict(arch_params or {}),
        "code_version": CODE_VERSION,
        "data_sha256": tensor_digest(x, y),
        "dataset": dataset_name,
        "in_shape": list(_check_in_shape(in_shape)),
        "num_classes": validate.number("num_classes", num_classes, low=2, integer=True),
        "seed": validate.non_negative("seed", seed, integer=True),
        "train_params": _resolve_train_params(train_params, seed, es),
    }
    if es is not None:  # absent for fixed epochs: those keys keep their old layout
        record["early_stop"] = es
    return hashlib.sha256(_canonical(record).encode()).hexdigest()


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", s).strip("._")[:40] or "data"


def cached(arch: str, dataset_name: str, x: torch.Tensor, y: torch.Tensor, *,
           train_params: Mapping[str, Any] | None = None, seed: int = 0,
           in_shape: Sequence[int] | None = None, num_classes: int = 10,
           cache_dir: str | os.PathLike | None = None, progress: bool = True,
           arch_params: Mapping[str, Any] | None = None,
           device: torch.device | str | None = None,
           early_stop: "bool | Mapping[str, Any] | None" = None) -> tuple[Classifier, dict[str, Any]]:
    """Return a model trained on (x, y), from the checkpoint cache when possible.

    The model is ``build(arch, in_shape=, num_classes=, seed=seed, **arch_params)`` then
    ``train(model, x, y, seed=seed, **train_params)``. Its cache key (`checkpoint_key`)
    covers everything that determines the result, including this file's source
    (CODE_VERSION), so a hit is always the model the call would have trained.

    Args:
        arch, dataset_name: architecture name and a label of the data set ("mnist").
        x, y: training inputs [n, C, H, W] in [0, 1] and labels [n].
        train_params: keys of ``TRAIN_DEFAULTS`` (epochs, batch_size, lr, weight_decay,
            optimizer, momentum); missing ones take the defaults.
        seed: initialisation and shuffling seed.
        in_shape: (C, H, W); default ``x.shape[1:]``. num_classes: number of logits.
        cache_dir: cache root (checkpoints go to ``<root>/models``); default
            `threatlab.paths.cache_dir()` ($THREATLAB_CACHE, else <repo>/data/cache in a
            checkout, else the user's cache folder).
        progress: training progress bar. arch_params: extra `build` arguments (in the key).
        device: where the model lives and trains (default CPU).
        early_stop: None (default) trains ``train_params["epochs"]`` epochs; True, or a
            dict overriding `EARLY_STOP_DEFAULTS` (holdout, patience, min_epochs,
            max_epochs), trains with `train_early_stopping` instead (rule G1: batch 64
            unless train_params says otherwise; "epochs" is then refused). The rule is in
            the cache key, and the stored history carries what a notebook reports:
            "epochs_run", "best_epoch", "holdout_loss" (per epoch).

    A missing file is trained and saved. A file that does not parse, has another key,
    other tensor names/shapes or a wrong content hash triggers a CheckpointWarning
    ("checkpoint X is corrupt/mismatching (reason), retraining") and is retrained and
    overwritten atomically. Save failures propagate (the previous file stays intact).

    Returns ``(model in eval mode, info)`` with info = {"key", "path", "from_cache",
    "train_seconds" (None when loaded), "history" (the training history; when loaded,
    without its "seconds")}. The same key always writes the same file bytes.
    """
    _check_xy(x, y)
    if in_shape is None:
        in_shape = tuple(x.shape[1:])
    if tuple(x.shape[1:]) != tuple(in_shape):
        raise ConfigError(f"in_shape={tuple(in_shape)!r} does not match the data, x has shape {tuple(x.shape)}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (isinstance(num_classes, int) and hi >= num_classes):
        raise ConfigError(f"num_classes={num_classes!r} does not cover the labels (y ranges over {lo}..{hi})")
    arch_params = dict(arch_params or {})
    key = checkpoint_key(arch, dataset_name, x, y, train_params=train_params, seed=seed, in_shape=in_shape,
                         num_classes=num_classes, arch_params=arch_params, early_stop=early_stop)
    es = resolve_early_stop(early_stop)
    full_tp = _resolve_train_params(train_params, seed, es)
    validate.of_type("progress", progress, bool)
    path = checkpoint_dir(cache_dir) / f"{arch}-{_slug(dataset_name)}-{key[:20]}.safetensors"
    dev = torch.device(device) if device is not None else torch.device("cpu")

    model = build(arch, in_shape=in_shape, num_classes=num_classes, seed=seed, **arch_params).to(dev)
    validate.model_input(model, x, device=False)  # e.g. float64 data for a float32 model
    if path.exists():
        try:
            meta = load_checkpoint(model, path, key=key)
        except (IntegrityError, OSError) as e:
            warnings.warn(f"checkpoint {path} is corrupt/mismatching ({e}), retraining",
                          CheckpointWarning, stacklevel=2)
            # Fresh initialisation: load_checkpoint never touches the model on failure,
            # but rebuilding keeps this path identical to a cold start by construction.
            model = build(arch, in_shape=in_shape, num_classes=num_classes, seed=seed, **arch_params).to(dev)
        else:
            model.eval()
            try:
                history = json.loads(meta.get("history", "null"))
            except ValueError:
                history = None
            return model, {"key": key, "path": path, "from_cache": True, "train_seconds": None,
                           "history": history}

    desc = f"train {arch} on {dataset_name}"
    if es is None:
        history = train(model, x, y, seed=seed, progress=progress, desc=desc, **full_tp)
    else:
        history = train_early_stopping(model, x, y, seed=seed, progress=progress, desc=desc, **es, **full_tp)
    # Wall time stays out of the file so that the same key always gives the same bytes.
    stored = {k: v for k, v in history.items() if k != "seconds"}
    save_checkpoint(model, path, key=key, arch=arch,
                    extra={"dataset": dataset_name, "code_version": CODE_VERSION,
                           "history": json.dumps(stored, sort_keys=True)})
    return model, {"key": key, "path": path, "from_cache": False, "train_seconds": history["seconds"],
                   "history": history}


def load_or_train(arch: str, dataset: str, *, n: int | None = None, split: str = "train",
                  train_params: Mapping[str, Any] | None = None, seed: int = 0,
                  num_classes: int | None = None, **kwargs: Any) -> tuple[Classifier, dict[str, Any]]:
    """Convenience: ``data.load(dataset, split, n=n)`` then `cached` on it.

    Imports `threatlab.data` only when called (models know nothing of data otherwise).
    `num_classes` defaults to ``data.info(dataset).num_classes``. Remaining keyword
    arguments (cache_dir, progress, arch_params, device, early_stop) go to `cached`.
    """
    data = importlib.import_module(f"{__package__}.data")
    x, y = data.load(dataset, split, **({} if n is None else {"n": n}))
    if num_classes is None:
        num_classes = data.info(dataset).num_classes
    return cached(arch, dataset, x, y, train_params=train_params, seed=seed, in_shape=tuple(x.shape[1:]),
                  num_classes=num_classes, **kwargs)
