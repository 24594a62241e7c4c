"""Per-example gradients, and the clip-and-noise step of DP-SGD, shared by two sides.

A federated / distributed-training client shares the gradient of its batch; DP-SGD
(Abadi et al. 2016) clips every example's gradient to L2 norm `clip` and adds Gaussian
noise of standard deviation ``noise_multiplier * clip`` to their sum. The same two
functions serve the defense (`defenses.dp_sgd_train`) and the attack side that
simulates what a client shares (`attacks.inversion.dlg`), so both see one mechanism.

    >>> from threatlab import gradients
    >>> g = gradients.per_example(model, x, y)                  # name -> [n, *shape]
    >>> shared = gradients.clip_and_noise(g, clip=1.0, noise_multiplier=0.5, generator=gen)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from . import runtime, validate

__all__ = ["per_example", "clip_and_noise", "flat_norms"]


def _loss_one(model, params, buffers, x, y):
    # One example at a time under vmap: unsqueeze to a batch of one for the model.
    out = functional_call(model, (params, buffers), (x.unsqueeze(0),))
    return F.cross_entropy(out, y.unsqueeze(0))


def per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Cross-entropy gradient of every example separately: name -> [n, *param.shape].

    `params` (default: the model's own, detached) lets a caller differentiate through
    the result, e.g. an attacker matching gradients of dummy inputs (create_graph is
    implicit with torch.func).
    """
    if params is None:
        params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    g = grad(lambda p, xi, yi: _loss_one(model, p, buffers, xi, yi))
    return vmap(g, in_dims=(None, 0, 0))(params, x, y)


def flat_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """L2 norm of each example's whole gradient (all parameters together): [n]."""
    sq = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
    return sq.sqrt()


def clip_and_noise(grads: dict[str, torch.Tensor], *, clip: float | None, noise_multiplier: float = 0.0,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Sum per-example gradients [n, ...] after clipping each to L2 norm `clip`, plus noise.

    Args:
        grads: name -> [n, *shape] per-example gradients.
        clip: per-example L2 bound (> 0), or None for no clipping.
        noise_multiplier: sigma >= 0; adds N(0, (sigma * clip)^2) per coordinate to the
            sum (DP-SGD). With clip=None the noise scale is sigma * 1.
        generator: draws the noise (on the gradients' device).
    Returns name -> [*shape], the summed (clipped, noised) gradient.
    """
    if clip is not None:
        validate.positive("clip", clip)
    validate.non_negative("noise_multiplier", noise_multiplier)
    if clip is not None:
        norms = flat_norms(grads)
        factor = (clip / (norms + 1e-12)).clamp(max=1.0)
    out = {}
    scale = noise_multiplier * (1.0 if clip is None else clip)
    for k, g in grads.items():
        s = (g * factor.view(-1, *[1] * (g.dim() - 1))).sum(0) if clip is not None else g.sum(0)
        if scale > 0:
            # Drawn on the generator's device, so a CPU generator works for GPU gradients.
            s = s + scale * runtime.randn(s.shape, generator, device=s.device, dtype=s.dtype)
        out[k] = s
    return out
