"""Defenses against evasion: PGD adversarial training and input quantization.

Named robust_training.py (not defenses.py) so that a branch adding other defenses
(DP-SGD, output perturbation) merges without touching this file.

- `adversarial_train` (Madry et al. 2018, arXiv 1706.06083): minimise the loss on PGD
  adversarials of each batch, found afresh for the current parameters.
- `cached_adversarial`: the same, once per configuration, kept in the checkpoint cache
  (`models.save_checkpoint` / `load_checkpoint`, content-addressed key).
- `InputQuantization`: round every input to `levels` grey levels before the model
  (bit-depth reduction; Xu, Evans, Qi 2018, arXiv 1704.01155). Rounding has a zero
  gradient almost everywhere, so gradient attacks see no signal: it masks gradients
  (Athalye, Carlini, Wagner 2018, arXiv 1802.00420). `InputQuantization.bpda()` is the
  same model with the straight-through (identity) gradient of BPDA, the adaptive attack.

    >>> robust, info = cached_adversarial("lenet5", "mnist", x, y, eps=0.3, steps=5, epochs=2)
    >>> defended = InputQuantization(model, levels=8)
    >>> pgd_linf(defended, ...)          # masked: finds nothing
    >>> pgd_linf(defended.bpda(), ...)   # adaptive: gradients of the identity
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import models, validate
from .attacks.norms import LinfBall
from .errors import IntegrityError
from .runtime import progress_disabled

__all__ = ["InputQuantization", "adversarial_train", "cached_adversarial"]


def _pgd_batch(model, xb, yb, eps, steps, step_size, gen):
    """PGD-L-inf adversarials of one batch, parameters frozen (autograd.grad on x only)."""
    ball = LinfBall(eps)
    xa = ball.random_init(xb, gen)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), yb, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = ball.project(ball.step(xa, g, step_size), xb)
    return xa.detach()


def adversarial_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 5,
                      step_size: float | None = None, epochs: int = 1, batch_size: int = 128,
                      lr: float = 1e-3, warmup: float = 0.0, seed: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """Train `model` in place on PGD-L-inf adversarials of every batch (Madry et al. 2018).

    Args:
        model: maps x in [0, 1] to logits; trained with Adam on its own device.
        x, y: training inputs [n, ...] in [0, 1] and integer labels [n].
        eps: L-inf training budget in input units, in (0, 1].
        steps: PGD steps per batch (int > 0), default 5. step_size: default 2.5 * eps / steps.
        epochs, batch_size, lr: as `models.train`. seed: shuffling and PGD random starts.
        warmup: fraction of all training batches over which the training eps (and the
            step size) ramps linearly from eps / n_warmup_batches up to eps, in [0, 1),
            default 0 (Madry et al.'s constant eps). Small models trained briefly from
            scratch at MNIST's eps 0.3 otherwise collapse to a constant prediction.
        progress: tqdm bar (also off when THREATLAB_NO_PROGRESS=1).
    Returns {"loss": [per epoch], "train_acc": [adversarial accuracy per epoch], "seconds"}.
    The model is left in eval mode.
    """
    validate.number("eps", eps, low=0, high=1, low_open=True)
    validate.positive("steps", steps, integer=True)
    step_size = 2.5 * eps / steps if step_size is None else validate.positive("step_size", step_size)
    validate.positive("epochs", epochs, integer=True)
    validate.positive("batch_size", batch_size, integer=True)
    validate.positive("lr", lr)
    validate.number("warmup", warmup, low=0, high=1, high_open=True)
    validate.non_negative("seed", seed, integer=True)
    models._check_xy(x, y)
    device = models._device_of(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    hist: dict[str, Any] = {"loss": [], "train_acc": []}
    start = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc="adversarial training", unit="batch",
               disable=(not progress) or progress_disabled(), leave=False)
    total = epochs * steps_per_epoch
    ramp = max(1, int(warmup * total))
    done = 0
    try:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                xb, yb = x[idx].to(device), y[idx].to(device, dtype=torch.long)
                # Attack in eval mode (no batch-statistics drift), learn in train mode.
                model.eval()
                done += 1
                frac = min(1.0, done / ramp)
                xa = _pgd_batch(model, xb, yb, eps * frac, steps, step_size * frac, gen)
                model.train()
                logits = model(xa)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * yb.shape[0]
                correct += (logits.detach().argmax(1) == yb).sum()
                bar.update(1)
            hist["loss"].append(loss_sum.item() / n)
            hist["train_acc"].append(correct.item() / n)
    finally:
        bar.close()
        model.eval()
    hist["seconds"] = time.perf_counter() - start
    return hist


def cached_adversarial(arch: str, dataset_name: str, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                       steps: int = 5, epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
                       warmup: float = 0.0, seed: int = 0, num_classes: int = 10, cache_dir: str | os.PathLike | None = None,
                       progress: bool = True) -> tuple[models.Classifier, dict[str, Any]]:
    """`adversarial_train` a fresh `models.build(arch, seed=seed)` once per configuration.

    The key hashes the architecture, data set name and tensors, every training
    parameter, the seed, and the sources of models.py and this file, so a hit is always
    the model this call would train. A corrupt or mismatching file is retrained.
    Returns (model in eval mode, {"key", "path", "from_cache", "train_seconds" (None
    when loaded), "history"}).
    """
    models._check_xy(x, y)
    validate.choice("arch", arch, sorted(models.ARCHITECTURES))
    in_shape = tuple(x.shape[1:])
    record = {"arch": arch, "dataset": dataset_name, "data": models.tensor_digest(x, y), "eps": eps,
              "steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "warmup": warmup, "seed": seed,
              "num_classes": num_classes, "in_shape": list(in_shape), "models": models.CODE_VERSION,
              "code": hashlib.sha256(open(__file__, "rb").read()).hexdigest()}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    path = models.checkpoint_dir(cache_dir) / f"{arch}-at-{models._slug(dataset_name)}-{key[:20]}.safetensors"
    model = models.build(arch, in_shape=in_shape, num_classes=num_classes, seed=seed)
    if path.exists():
        try:
            meta = models.load_checkpoint(model, path, key=key)
            return model.eval(), {"key": key, "path": path, "from_cache": True, "train_seconds": None,
                                  "history": json.loads(meta.get("history", "null"))}
        except (IntegrityError, OSError, ValueError):
            model = models.build(arch, in_shape=in_shape, num_classes=num_classes, seed=seed)
    hist = adversarial_train(model, x, y, eps=eps, steps=steps, epochs=epochs, batch_size=batch_size,
                             lr=lr, warmup=warmup, seed=seed, progress=progress)
    stored = {k: v for k, v in hist.items() if k != "seconds"}
    models.save_checkpoint(model, path, key=key, arch=arch,
                           extra={"dataset": dataset_name, "history": json.dumps(stored, sort_keys=True)})
    return model, {"key": key, "path": path, "from_cache": False, "train_seconds": hist["seconds"],
                   "history": hist}


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward: BPDA's approximation g(x) ~ x."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class InputQuantization(nn.Module):
    """`model` behind bit-depth reduction: x -> round(x * (levels - 1)) / (levels - 1).

    Args:
        model: the classifier to defend (inputs in [0, 1]).
        levels: grey levels kept (int >= 2), e.g. 2 (binarize), 8 (3 bits).
        straight_through: False = the true (zero almost everywhere) gradient, what a
            naive attacker differentiates; True = BPDA's identity gradient. Both give the
            same outputs.
    """

    def __init__(self, model: nn.Module, levels: int = 8, *, straight_through: bool = False):
        super().__init__()
        validate.number("levels", levels, low=2, integer=True)
        validate.of_type("straight_through", straight_through, bool)
        self.model = model
        self.levels = levels
        self.straight_through = straight_through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.levels - 1
        q = _RoundSTE.apply(x * k) if self.straight_through else torch.round(x * k)
        return self.model(q / k)

    def bpda(self) -> "InputQuantization":
        """The same defended model, differentiated with the straight-through gradient."""
        return InputQuantization(self.model, self.levels, straight_through=True).eval()
