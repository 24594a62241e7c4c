"""White-box evasion kernels evaluate convolutional models in channels-last memory.

On the CPU, PyTorch's NCHW max-pooling (and the layout reorders oneDNN inserts around
NCHW convolutions) cost as much as the convolutions themselves on the attacked CNNs;
with the convolution weights in channels-last (NHWC) memory oneDNN keeps every
activation in that layout and pooling runs along contiguous channels. One forward plus
input-gradient backward then takes 0.6-0.8x the NCHW time on SmallCNN and LeNet-5 at
n = 100-500 (benchmarks/PROFILING.md, "PGD step"). The numbers are the same up to float
rounding of the convolution sums (largest input-gradient difference ~3e-7 on SmallCNN);
a sign step can turn such a difference at a near-zero gradient into a different pixel
(1 pixel in 392,000 after 10 PGD steps at n = 500, robust accuracy equal).

`channels_last(model)` gives a view of the caller's model: the same module, run through
``torch.func.functional_call`` with channels-last copies of its 4-D parameters. The
caller's model is not touched (no layout change leaks into its training), wrappers
around it (pass counters, defenses, transformations) run as they are, and a model
without 4-D parameters (an MLP) is returned as it is. The copies are taken once per
kernel call: a kernel never changes the model's weights while it attacks.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["channels_last", "ChannelsLastView"]


class ChannelsLastView(nn.Module):
    """`model` evaluated with channels-last copies of its 4-D parameters (see module doc).

    Attribute reads the view does not have (``num_classes``, ``in_shape``, ...) go to the
    model; ``parameters()`` are the model's own (device and dtype queries see them).
    The copies are detached: the view is for input gradients, not for training.
    """

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self._weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # a 1-channel batch already is channels-last: no copy
            x = x.contiguous(memory_format=torch.channels_last)
        return functional_call(self.model, self._weights, (x,), strict=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def channels_last(model: Any) -> Any:
    """A channels-last view of `model` when it has 4-D parameters in another layout;
    `model` itself otherwise (and for anything that is not an ``nn.Module``)."""
    if not isinstance(model, nn.Module) or isinstance(model, ChannelsLastView):
        return model
    # clone, not contiguous: a [C_out, 1, k, k] weight counts as channels-last already
    # with NCHW strides, and convolution picks its layout from the strides, so the first
    # layer of a grey-scale model would stay NCHW and hand NCHW maps to the pooling.
    conv = {n: p for n, p in model.named_parameters() if p.dim() == 4}
    weights = {n: p.detach().clone(memory_format=torch.channels_last) for n, p in conv.items()}
    if all(weights[n].stride() == p.stride() for n, p in conv.items()):  # none, or all channels-last
        return model
    return ChannelsLastView(model, weights)
