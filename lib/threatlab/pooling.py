"""Exact, faster CPU evaluation of non-overlapping max-pooling in NCHW memory.

Black-box attacks spend most of their time in the victim's forward pass: every query
is one. On the CPU, with one thread, PyTorch's max-pooling of an NCHW (contiguous)
tensor runs a per-window loop that takes as long as the convolution before it: on the
MNIST CNNs of the benchmarks (SmallCNN; advertorch's LeNet-5 as its authors wrote it),
2x2 pooling of a [100, 32, 28, 28] activation takes ~10x longer than the same pooling
written as three element-wise maxima of its four strided sub-grids
(benchmarks/PROFILING.md, "Black-box kernels"). The channels-last view of the white-box
kernels (`threatlab.attacks.layout`) avoids it too, but it changes the convolution sums
in their last bits and cannot run models that flatten with ``.view``; this rewrite needs
neither.

`fast_max_pool()` is a context manager (a ``torch.overrides.TorchFunctionMode``) under
which ``F.max_pool2d`` calls (``nn.MaxPool2d`` included) that satisfy all of

- no autograd (``torch.is_grad_enabled()`` is False, or the input needs no gradient):
  the rewrite's backward would split ties between windows' elements, max-pooling's
  sends them to one;
- a 4-D (or 3-D) floating CPU tensor in NCHW-contiguous memory (channels-last inputs
  already run PyTorch's fast kernel);
- non-overlapping windows: stride equal to the kernel size (or not given), kernel
  sides of at most `MAX_SIDE`, no padding, dilation 1, ``ceil_mode=False``,
  ``return_indices=False``;

are computed as the maximum of the kernel's k_h * k_w strided sub-grids. The result is
bit-identical to ``F.max_pool2d``: the maximum of a set of floats does not depend on the
order it is taken in, and NaN propagates in both. Any other call runs unchanged. Nothing
of the model is modified; the mode only affects calls made while it is active.

    >>> with fast_max_pool():
    ...     logits = model(x)      # same bits as model(x), less time on the CPU
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["fast_max_pool", "max_pool2d_exact", "MAX_SIDE"]

#: Largest window side rewritten: a k x k window costs k*k - 1 element-wise maxima,
#: which stay cheaper than PyTorch's NCHW loop for small k only.
MAX_SIDE = 3


def _pair(v) -> tuple[int, int] | None:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(e, int) for e in v):
        return (int(v[0]), int(v[1]))
    if isinstance(v, (tuple, list)) and len(v) == 1 and isinstance(v[0], int):
        return (int(v[0]), int(v[0]))
    return None


def _plan(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,  # noqa: A002 (F's name)
          return_indices=False):
    """(k_h, k_w) when the call can be rewritten exactly and pays off, else None."""
    x = input
    if not (torch.is_tensor(x) and x.device.type == "cpu" and x.is_floating_point() and x.dim() in (3, 4)):
        return None
    if return_indices or ceil_mode or (x.requires_grad and torch.is_grad_enabled()):
        return None
    if not x.is_contiguous():  # channels-last (or strided) input: PyTorch's kernel is fast there
        return None
    k = _pair(kernel_size)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pair(stride)
    if k is None or s != k or _pair(padding) != (0, 0) or _pair(dilation) != (1, 1):
        return None
    if not (1 <= k[0] <= MAX_SIDE and 1 <= k[1] <= MAX_SIDE) or k == (1, 1):
        return None
    if x.shape[-2] < k[0] or x.shape[-1] < k[1]:
        return None  # max_pool2d's own error message for an input smaller than the window
    return k


def max_pool2d_exact(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """``F.max_pool2d(x, (kh, kw))`` (stride = kernel, no padding, floor mode) as the
    maximum of the kh * kw strided sub-grids of x; same values, NCHW-contiguous output."""
    ho, wo = x.shape[-2] // kh, x.shape[-1] // kw
    grids = [x[..., i:i + ho * kh:kh, j:j + wo * kw:kw] for i in range(kh) for j in range(kw)]
    out = torch.maximum(grids[0], grids[1])
    for g in grids[2:]:
        torch.maximum(out, g, out=out)
    return out


class _FastMaxPool(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.max_pool2d or func is F._max_pool2d:
            k = _plan(*args, **kwargs)
            if k is not None:
                return max_pool2d_exact(args[0] if args else kwargs["input"], *k)
        return func(*args, **kwargs)


def fast_max_pool() -> TorchFunctionMode:
    """Context manager: exact rewrite of eligible ``F.max_pool2d`` calls (module doc)."""
    return _FastMaxPool()
