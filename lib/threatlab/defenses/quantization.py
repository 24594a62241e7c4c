"""Input quantization, a gradient-masking defense, and BPDA, the attack that breaks it.

`InputQuantization` rounds every input to `levels` grey levels before the model
(bit-depth reduction; Xu, Evans, Qi 2018, arXiv 1704.01155). Rounding has a zero
gradient almost everywhere, so gradient attacks see no signal: it masks gradients
(Athalye, Carlini, Wagner 2018, arXiv 1802.00420). `InputQuantization.bpda()` is the
same model with the straight-through (identity) gradient of BPDA, the adaptive attack.

    >>> defended = InputQuantization(model, levels=8)
    >>> pgd_linf(defended, ...)          # masked: finds nothing
    >>> pgd_linf(defended.bpda(), ...)   # adaptive: gradients of the identity
"""
from __future__ import annotations

import torch
from torch import nn

from .. import validate

__all__ = ["InputQuantization"]


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

    Example:
        >>> defended = defenses.input_quantization(model, levels=2)
        >>> attacks.pgd_linf(defended, x, y, eps=0.3).success_rate         # gradient masked
        >>> attacks.pgd_linf(defended.bpda(), x, y, eps=0.3).success_rate  # BPDA breaks it
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
