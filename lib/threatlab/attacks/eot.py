"""Expectation over transformation (EOT): PGD on the average loss over random transformations.

    >>> t = RandomTransform(max_shift=3, max_angle=20)
    >>> res = attacks.get("eot_pgd")(model, x, y, eps=0.2, transform=t, samples=8, generator=g)
"""
from __future__ import annotations

import torch

from .. import runtime, validate
from ..errors import ConfigError
from ..transforms import RandomTransform
from .adversarial import _check_batch, _check_loss, _positive, _step_size, _success, attack_loss
from .norms import LinfBall
from .registry import register
from .result import AttackResult


@register("adversarial", "eot_pgd", channels_last=True)
def eot_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
            transform: RandomTransform | None = None, samples: int = 8, steps: int = 40,
            step_size: float | None = None, random_start: bool = True, loss: str = "ce", confidence: float = 0.0,
            targeted: bool = False, target: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> AttackResult:
    """L-inf PGD whose gradient is the mean over `samples` random transformations.

    Athalye, Engstrom, Ilyas, Kwok (2018), "Synthesizing Robust Adversarial Examples",
    arXiv 1707.07397 (EOT), on top of Madry et al. (2018) PGD, arXiv 1706.06083.
    Threat model: white-box, L-inf ball of radius eps; the input then goes through a
    transformation drawn from `transform` before the model sees it. Each step draws
    `samples` transformations per example (all from `generator`) and ascends the summed
    loss of the transformed copies: cross-entropy, or (loss="margin") the logit margin
    capped at `confidence`, under which copies already fooled by `confidence` stop
    steering the step (cross-entropy keeps weighting them). With the identity
    transformation and the same loss, steps and budget it is `pgd_linf` exactly.

    Args:
        eps: L-inf budget in input units, > 0. Required.
        transform: a threatlab.transforms.RandomTransform; default RandomTransform().
        samples: transformations per example per step (int > 0), default 8.
        steps: PGD steps (int > 0), default 40. step_size: default 2.5 * eps / steps.
        random_start: uniform start in the ball, default True.
        loss, confidence: "ce" or "margin" and the margin's cap (>= 0), as for pgd_linf.
        targeted, target: as for pgd_linf.
        generator: torch.Generator for the start and every transformation.
    Shapes: x [n, C, H, W] in [0, 1], y [n] Long -> x_adv like x, success [n] bool
        (the model's verdict on the untransformed x_adv; use
        transforms.success_under_transforms for the expectation); extra["diverged"] [n]
        int64: steps a row skipped because its gradient was non-finite.

    Example:
        >>> res = eot_pgd(model, x, y, eps=0.2, transform=RandomTransform(), generator=g)
        >>> success_under_transforms(model, res.x_adv, y, RandomTransform(), generator=g2).mean()
        >>> res.success_rate
    """
    _positive("eps", eps)
    _positive("samples", samples, integer=True)
    _positive("steps", steps, integer=True)
    step_size = _step_size(step_size, eps, steps)
    validate.of_type("random_start", random_start, bool)
    _check_loss(loss, confidence)
    if transform is None:
        transform = RandomTransform()
    if not isinstance(transform, RandomTransform):
        raise ConfigError(f"transform must be a threatlab.transforms.RandomTransform; got {type(transform).__name__}")
    _check_batch(x, y, targeted, target, attack="eot_pgd")
    if x.dim() != 4:
        raise ConfigError(f"x must be images [n, C, H, W] for eot_pgd; got shape {tuple(x.shape)}")
    ball = LinfBall(eps)
    labels = (target if targeted else y).repeat(samples)
    x_adv = ball.random_init(x, generator) if random_start else x.clone()
    diverged = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    rows = runtime.rows_requested()  # the caller's batch_size=, else one model call per step
    for _ in range(steps):
        xa = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            # Transformations are drawn for the whole batch, so the chunking cannot change them.
            copies = transform(xa.repeat(samples, 1, 1, 1), generator)
            if rows is None:
                value = attack_loss(model(copies), labels, targeted, loss, confidence)
                (grad,) = torch.autograd.grad(value, xa)
            else:
                # The copies' gradient chunk by chunk (the summed loss keeps rows apart),
                # then back through the transformation in one pass.
                parts = []
                for r in runtime.row_slices(copies.shape[0], copies.device):
                    leaf = copies[r].detach().requires_grad_(True)
                    value = attack_loss(model(leaf), labels[r], targeted, loss, confidence)
                    parts.append(torch.autograd.grad(value, leaf)[0])
                (grad,) = torch.autograd.grad(copies, xa, grad_outputs=torch.cat(parts))
        # The summed loss keeps rows apart; a row whose gradient is non-finite (the model
        # overflowed on one of its copies) stays put this step instead of taking
        # sign(NaN) = NaN, and the step is counted. Masked on the device: no host read.
        finite = torch.isfinite(grad).flatten(1).all(1)
        diverged += (~finite).long()
        grad = torch.where(finite.view(-1, 1, 1, 1), grad, 0.0)
        x_adv = ball.project(ball.step(x_adv, grad, step_size), x).detach()
    return AttackResult(x_adv, _success(model, x_adv, y, target, targeted), extra={"diverged": diverged})
