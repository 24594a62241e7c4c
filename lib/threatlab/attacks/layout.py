"""White-box evasion kernels evaluate convolutional models in channels-last memory,
when the model allows it: the view is an optimisation with a fallback, never a requirement.

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

The fallback. Not every model runs on channels-last activations: a model written as
many third-party ones are (advertorch's LeNet-5 flattens with ``out.view(n, -1)``)
raises "view size is not compatible with input tensor's size and stride", and a custom
op that reads memory as if it were contiguous would compute something else. So the
first forward through a view probes: the model as given and the model under the view
each run forward and back (input gradient of a fixed weighting of the outputs) on the
first `PROBE_ROWS` rows of that call's input. The view is kept when the view's pass
raises nothing and its outputs agree with the model's within `PROBE_RTOL` of the
outputs' largest magnitude (channels-last rounding is ~1e-6 of it); otherwise, or
when the outputs are not finite, the kernel runs the model as given. Gradients are
not compared: a max-pool tie may legitimately send a gradient to another element of
its window in the other layout. When the model as given fails the probe itself, the
verdict is "as given", so the caller sees the model's own error.

The verdict is made once per model object and kept in `_VERDICTS`, a
``weakref.WeakKeyDictionary`` keyed by the module handed to the kernel (the outermost
one, wrappers included: a wrapper's own forward can be what breaks); every later view
of that model reads it, a model that fell back is then returned as it is (no weight
copies). The probe leaves no trace: it runs the model in eval mode, and afterwards
every module's training flag, buffers, plain attributes (numbers, lists, sets, dicts,
tensors, arrays, generators: pass counters such as `PassCounter` and the benchmark's
`Counting`) and the torch, NumPy and Python random states are put back as they were,
so counted passes and random draws of the attack are those of a run without it. What
the probe cannot put back is state kept outside the modules (a hook writing to a
closure or a global); such a counter sees the probe's two forwards of at most
`PROBE_ROWS` rows and, when the outputs are used for gradients, their backwards.
"""
from __future__ import annotations

import random
import weakref
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

__all__ = ["channels_last", "ChannelsLastView", "verdict", "PROBE_ROWS", "PROBE_RTOL"]

#: Rows of the caller's input the probe runs (a tiny slice: the probe costs two forward
#: and two backward passes on it, once per model).
PROBE_ROWS = 4
#: Largest output difference the view may show, relative to the outputs' largest
#: magnitude: channels-last rounding of the convolution sums is ~1e-6 of it on float32;
#: a layout-dependent bug changes the outputs at their own scale.
PROBE_RTOL = 1e-4

#: model -> True (run it through the view) / False (run it as given). See module doc.
_VERDICTS: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def verdict(model: nn.Module) -> bool | None:
    """Whether kernels run `model` through the channels-last view (True), as given
    (False), or have not probed it yet (None)."""
    try:
        return _VERDICTS.get(model)
    except TypeError:  # not weak-referenceable
        return None


class ChannelsLastView(nn.Module):
    """`model` evaluated with channels-last copies of its 4-D parameters (see module doc).

    The first forward decides, once per model, whether the view is used or the model
    runs as given (`_probe`); afterwards each forward reads the verdict from a Python
    attribute (no probe, no host sync). Attribute reads the view does not have
    (``num_classes``, ``in_shape``, ...) go to the model; ``parameters()`` are the
    model's own (device and dtype queries see them). The copies are detached: the view
    is for input gradients, not for training.
    """

    def __init__(self, model: nn.Module, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self._weights = weights
        self._fits: bool | None = verdict(model)

    def _viewed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # a 1-channel batch already is channels-last: no copy
            x = x.contiguous(memory_format=torch.channels_last)
        return functional_call(self.model, self._weights, (x,), strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fits is None and isinstance(x, torch.Tensor) and x.shape[0] > 0:
            self._fits = _VERDICTS[self.model] = _probe(self.model, self._viewed, x)
        if self._fits is False:
            return self.model(x)
        return self._viewed(x)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def channels_last(model: Any) -> Any:
    """A channels-last view of `model` when it has 4-D parameters in another layout and
    has not failed the probe before; `model` itself otherwise (and for anything that is
    not an ``nn.Module``)."""
    if not isinstance(model, nn.Module) or isinstance(model, ChannelsLastView):
        return model
    if verdict(model) is False:
        return model
    # clone, not contiguous: a [C_out, 1, k, k] weight counts as channels-last already
    # with NCHW strides, and convolution picks its layout from the strides, so the first
    # layer of a grey-scale model would stay NCHW and hand NCHW maps to the pooling.
    conv = {n: p for n, p in model.named_parameters() if p.dim() == 4}
    weights = {n: p.detach().clone(memory_format=torch.channels_last) for n, p in conv.items()}
    if all(weights[n].stride() == p.stride() for n, p in conv.items()):  # none, or all channels-last
        return model
    return ChannelsLastView(model, weights)


# ------------------------------------------------------------------------ the probe

def _probe(model: nn.Module, viewed: Any, x: torch.Tensor) -> bool:
    """True when `viewed` (the view's forward) runs on x's first rows and matches `model`
    there (module doc); every trace of the two runs on the model is undone."""
    with _untouched(model) as reset, torch.inference_mode(False), torch.enable_grad():
        xs = x[:PROBE_ROWS].detach().clone()  # clone: a normal tensor even from inference mode
        try:
            ref = _forward_backward(model, xs, backward=True, lenient=True)
        except Exception:  # noqa: BLE001 - the model's own error: let the real call raise it
            return False
        reset()
        try:
            out = _forward_backward(viewed, xs, backward=ref[1], lenient=False)
        except Exception:  # noqa: BLE001 - any failure under the view means: not for this model
            return False
    a, b = out[0], ref[0]
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    a, b = a.detach().double(), b.detach().double()
    # One host sync, once per model. NaN or inf anywhere makes the comparison False.
    return bool((a - b).abs().amax() <= PROBE_RTOL * b.abs().amax() + 1e-6)


def _forward_backward(fn: Any, xs: torch.Tensor, *, backward: bool, lenient: bool) -> tuple[Any, bool]:
    """fn(xs), and whether an input-gradient backward of a fixed weighting of its
    outputs ran. `lenient` (the model as given): a backward error only switches the
    backward off for both runs (the model may be used without gradients, that is not
    the view's business); otherwise (the view) it propagates."""
    xs = xs.clone().requires_grad_(True)
    out = fn(xs)
    if not (backward and isinstance(out, torch.Tensor) and out.requires_grad and out.dim() >= 1):
        return out, False
    w = torch.linspace(-1.0, 1.0, out.shape[-1], device=out.device, dtype=out.dtype)
    try:
        torch.autograd.grad((out * w).sum(), xs, allow_unused=True)
    except Exception:  # noqa: BLE001
        if not lenient:
            raise
        return out, False
    return out, True


_MODULE_SLOTS = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping
#: Tensors (attributes and buffers) larger than this are not copied by the probe:
#: counters and statistics are small, a stored data set is not updated by a forward.
_COPY_MAX = 1 << 20


@contextmanager
def _untouched(model: nn.Module):
    """Run `model`'s modules in eval mode; yield `reset()`, which puts back what a
    forward and backward may have changed: every module's plain attributes (rebinding
    and, for containers, tensors, arrays and generators, contents) and buffers, and the
    torch (CPU and the model's CUDA devices), NumPy and Python random states. Called
    once more on exit, where the training flags are restored too."""
    modules = list(model.modules())
    flags = [(m, m.training) for m in modules]
    for m in modules:  # before the snapshot: reset() keeps the probe in eval mode
        m.training = False
    attrs = [(m, dict(m.__dict__), {k: _copy(v) for k, v in m.__dict__.items() if k not in _MODULE_SLOTS})
             for m in modules]
    buffers = [(m, dict(m._buffers), {k: _copy(b) for k, b in m._buffers.items()}) for m in modules]
    cuda = sorted({t.device for m in modules for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
                   if t.device.type == "cuda"}, key=str)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
           [torch.cuda.get_rng_state(d) for d in cuda])

    def reset() -> None:
        for m, names, saved in attrs:
            for k in [k for k in m.__dict__ if k not in names]:
                del m.__dict__[k]
            m.__dict__.update(names)
            for k, v in saved.items():
                _put_back(names[k], v)
        for m, names, saved in buffers:
            m._buffers.clear()
            m._buffers.update(names)
            for k, v in saved.items():
                _put_back(names[k], v)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        for d, state in zip(cuda, rng[3]):
            torch.cuda.set_rng_state(state, d)

    try:
        yield reset
    finally:
        reset()
        for m, flag in flags:
            m.training = flag


def _copy(v: Any) -> Any:
    """What `_put_back` needs to restore `v`'s contents in place (None: rebinding `v`
    is enough, or it is too large to be a counter)."""
    if isinstance(v, torch.Tensor):
        return v.detach().clone() if v.numel() <= _COPY_MAX else None
    if isinstance(v, np.ndarray):
        return v.copy() if v.size <= _COPY_MAX else None
    if isinstance(v, torch.Generator):
        return v.get_state()
    if isinstance(v, (list, dict, set, bytearray)):
        return v.copy()
    return None


def _put_back(v: Any, saved: Any) -> None:
    if saved is None:
        return
    if isinstance(v, torch.Tensor):
        if v.shape == saved.shape:
            with torch.no_grad():
                v.copy_(saved)
    elif isinstance(v, np.ndarray):
        if v.shape == saved.shape:
            v[...] = saved
    elif isinstance(v, torch.Generator):
        v.set_state(saved)
    elif isinstance(v, (list, bytearray)):
        v[:] = saved
    elif isinstance(v, (dict, set)):
        v.clear()
        v.update(saved)
