"""Adversarial training, a defense against evasion (Madry et al. 2018; Wong et al. 2020).

- `adversarial_train` (Madry et al. 2018, arXiv 1706.06083): minimise the loss on PGD
  adversarials of each batch, found afresh for the current parameters; or, with
  method="fgsm_rs", on single FGSM steps from a uniform random start (Wong, Rice,
  Kolter 2020, "Fast is better than free", arXiv 2001.03994): one forward-backward
  pass per batch for the attack instead of `steps`, so thousands of optimiser steps fit
  a CPU budget.
- `cached_adversarial`: the same, once per configuration, kept in the checkpoint cache
  (`models.save_checkpoint` / `load_checkpoint`, content-addressed key).

The training loop is `models.train`'s; this module only supplies the per-batch PGD
perturbation through its `perturb` hook.

    >>> robust, info = cached_adversarial("lenet5", "mnist", x, y, eps=0.3, steps=5, epochs=2)
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import models, validate
from ..attacks.norms import LinfBall
from ..errors import IntegrityError

__all__ = ["F18_PGD", "METHODS", "adversarial_train", "cached_adversarial", "cached_madry", "eps_ramp"]

#: How each batch's adversarials are found: PGD (Madry et al.) or FGSM from a random start (Wong et al.).
METHODS = ("pgd", "fgsm_rs")


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


def _fgsm_rs_batch(model, xb, yb, eps, alpha, gen):
    """Wong et al.'s FGSM with random start: delta ~ U(-eps, eps), one signed step of
    size alpha, then back into the eps-ball and the box."""
    ball = LinfBall(eps)
    xa = ball.random_init(xb, gen).requires_grad_(True)
    loss = F.cross_entropy(model(xa), yb, reduction="sum")
    (g,) = torch.autograd.grad(loss, xa)
    return ball.project(ball.step(xa.detach(), g, alpha), xb).detach()


def eps_ramp(eps: float, total_steps: int, warmup: float) -> list[float]:
    """The training budget of each optimiser step: a linear ramp over the first
    `warmup` fraction of the `total_steps` steps, then `eps`.

    With r = max(1, int(warmup * total_steps)) the budget of step t (0-based) is
    eps * min(1, (t + 1) / r): eps / r at the first step, eps from step r - 1 on.
    warmup = 0 gives eps throughout (Madry et al.'s constant budget).

        >>> [round(e, 3) for e in eps_ramp(0.3, 10, 0.3)]
        [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    """
    validate.number("eps", eps, low=0, high=1, low_open=True)
    validate.positive("total_steps", total_steps, integer=True)
    validate.number("warmup", warmup, low=0, high=1, high_open=True)
    ramp = max(1, int(warmup * total_steps))
    return [eps * min(1.0, (t + 1) / ramp) for t in range(total_steps)]


def adversarial_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 5,
                      step_size: float | None = None, epochs: int = 1, batch_size: int = 128,
                      lr: float = 1e-3, warmup: float = 0.0, seed: int = 0, method: str = "pgd",
                      progress: bool = True) -> dict[str, Any]:
    """Train `model` in place on L-inf adversarials of every batch (Madry et al. 2018).

    Args:
        model: maps x in [0, 1] to logits; trained with Adam on its own device.
        x, y: training inputs [n, ...] in [0, 1] and integer labels [n].
        eps: L-inf training budget in input units, in (0, 1].
        steps: PGD steps per batch (int > 0), default 5. step_size: default 2.5 * eps / steps.
        method: "pgd" (Madry et al.) or "fgsm_rs" (Wong et al. 2020: one FGSM step of
            size step_size, default 1.25 * eps, from a uniform start in the ball; `steps`
            is then ignored). Default "pgd".
        epochs, batch_size, lr: as `models.train`. seed: shuffling and PGD random starts.
        warmup: fraction of all training batches over which the training eps (and the
            step size) ramps linearly from eps / n_warmup_batches up to eps, in [0, 1),
            default 0 (Madry et al.'s constant eps). Small models trained briefly from
            scratch at MNIST's eps 0.3 otherwise collapse to a constant prediction.
        progress: tqdm bar (also off when THREATLAB_NO_PROGRESS=1).
    Returns `models.train`'s history ("loss", "train_acc" on the adversarial batches,
    "seconds" wall time, ...) plus "optimizer_steps", "forward_per_step" and
    "backward_per_step" (the model's forward calls and gradient passes per optimiser
    step, attack included, counted by a hook: 8 and 8 for PGD-7, 2 and 2 for FGSM-RS).
    The model is left in eval mode.

    Example:
        >>> model = models.build("cnn", in_shape=(1, 28, 28), num_classes=10, seed=0)
        >>> hist = defenses.adversarial_training(model, x_train, y_train, eps=0.3, steps=7)
        >>> attacks.pgd_linf(model, x_test, y_test, eps=0.3).success_rate   # lower than before
    """
    validate.number("eps", eps, low=0, high=1, low_open=True)
    validate.positive("steps", steps, integer=True)
    validate.choice("method", method, METHODS)
    if step_size is None:
        # Wong et al.'s alpha = 1.25 eps; Madry et al.'s 2.5 eps / steps.
        step_size = 1.25 * eps if method == "fgsm_rs" else 2.5 * eps / steps
    else:
        validate.positive("step_size", step_size)
    validate.positive("epochs", epochs, integer=True)
    validate.positive("batch_size", batch_size, integer=True)
    validate.positive("lr", lr)
    validate.number("warmup", warmup, low=0, high=1, high_open=True)
    validate.non_negative("seed", seed, integer=True)
    models._check_xy(x, y)
    total = epochs * ((x.shape[0] + batch_size - 1) // batch_size)
    schedule = eps_ramp(eps, total, warmup)

    def perturb(model, xb, yb, step, gen):
        e = schedule[step]
        a = step_size * e / eps  # the step size ramps with the budget
        if method == "fgsm_rs":
            return _fgsm_rs_batch(model, xb, yb, e, a, gen)
        return _pgd_batch(model, xb, yb, e, steps, a, gen)

    # Count the model's forward calls and the gradient passes back through them (attack
    # and training alike): the method's cost per optimiser step, reported, never judged.
    counts = {"forward": 0, "backward": 0}

    def _backward(_grad):
        counts["backward"] += 1

    def _forward(_module, _inputs, out):
        counts["forward"] += 1
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(_backward)

    handle = model.register_forward_hook(_forward)
    try:
        hist = models.train(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            progress=progress, desc="adversarial training", perturb=perturb)
    finally:
        handle.remove()
    hist["optimizer_steps"] = total
    hist["forward_per_step"] = counts["forward"] / total
    hist["backward_per_step"] = counts["backward"] / total
    return hist


def cached_adversarial(arch: str, dataset_name: str, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                       steps: int = 5, epochs: int = 1, batch_size: int = 128, lr: float = 1e-3,
                       warmup: float = 0.0, seed: int = 0, num_classes: int = 10, cache_dir: str | os.PathLike | None = None,
                       method: str = "pgd", progress: bool = True) -> tuple[models.Classifier, dict[str, Any]]:
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
              "method": method, "num_classes": num_classes, "in_shape": list(in_shape), "models": models.CODE_VERSION,
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
                             lr=lr, warmup=warmup, seed=seed, method=method, progress=progress)
    stored = {k: v for k, v in hist.items() if k != "seconds"}
    models.save_checkpoint(model, path, key=key, arch=arch,
                           extra={"dataset": dataset_name, "history": json.dumps(stored, sort_keys=True)})
    return model, {"key": key, "path": path, "from_cache": False, "train_seconds": hist["seconds"],
                   "history": hist}


#: F18's protocol (Madry et al. 2018, arXiv 1706.06083): PGD-7 from a random
#: start, step 2.5 eps / 7, the budget ramped over the first 30 % of training, 16
#: epochs (of 20k examples in the quick profile) in batches of 64.
F18_PGD = {"method": "pgd", "steps": 7, "warmup": 0.3, "epochs": 16, "batch_size": 64}


def cached_madry(arch: str, dataset_name: str, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                 epochs: int = F18_PGD["epochs"], batch_size: int = F18_PGD["batch_size"], lr: float = 1e-3,
                 seed: int = 0, num_classes: int = 10, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> tuple[models.Classifier, dict[str, Any]]:
    """PGD adversarial training as F18's asks, cached: `cached_adversarial`
    with `F18_PGD` (Madry et al. 2018, arXiv 1706.06083; L-inf budget `eps` per G2).

    Args:
        arch, dataset_name, x, y, seed, num_classes, cache_dir, progress: as
            `cached_adversarial` (x: the training images [n, ...] in [0, 1], e.g. 20k).
        eps: L-inf training budget in input units, in (0, 1].
        epochs, batch_size: default 16 and 64 (the quick profile's). lr: Adam's, 1e-3.
    Returns (model in eval mode, info) as `cached_adversarial`, with info["cost"] =
    {"forward_per_step", "backward_per_step", "optimizer_steps", "train_seconds"}
    (None for seconds when the model came from the cache): reported, not judged.

    Example:
        >>> model, info = cached_madry("lenet5", "mnist", x[:20000], y[:20000], eps=0.3)
        >>> info["cost"]["forward_per_step"]   # 8.0: 7 attack steps + 1 training pass
        >>> models.accuracy(model, x_test, y_test)
    """
    model, info = cached_adversarial(arch, dataset_name, x, y, eps=eps, steps=F18_PGD["steps"], epochs=epochs,
                                     batch_size=batch_size, lr=lr, warmup=F18_PGD["warmup"], seed=seed,
                                     num_classes=num_classes, cache_dir=cache_dir, method=F18_PGD["method"],
                                     progress=progress)
    hist = info.get("history") or {}
    info["cost"] = {k: hist.get(k) for k in ("forward_per_step", "backward_per_step", "optimizer_steps")}
    info["cost"]["train_seconds"] = info["train_seconds"]
    return model, info
