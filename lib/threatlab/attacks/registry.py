"""One name -> kernel registry per attack family.

Notebooks choose attacks by name (`threatlab.attacks.get("pgd_linf")`); tests
parametrize over `names(family)`. An unknown name raises `ConfigError` listing the valid
ones, so a typo in a profile fails before any compute.

`register` also puts the shared entry checks (`checks.entry`) in front of every kernel
whose first argument is a model or a `BlackBox`: x non-empty, finite, in [0, 1], of the
model's input shape, dtype and device; y (and an integer target) inside the model's
classes. One place, so a kernel added later is checked without a line of its own.
With ``register(..., channels_last=True)`` (the white-box evasion kernels) the model
then reaches the kernel as `layout.channels_last(model)`: convolutions run in
channels-last memory, the caller's model untouched, or, for a model that fails or
computes otherwise under that layout (a ``.view`` flatten), the model as given
(see `threatlab.attacks.layout`). Such kernels carry ``.channels_last = True``.

Three more things every kernel gets here, in one place rather than in each kernel:

- **Eval mode.** The model (a BlackBox's model too) runs in eval mode for the call, and
  afterwards every submodule gets back its own ``training`` flag, also when the kernel
  raises (`runtime.eval_mode`): a model left in ``train()`` is attacked as deployed
  (no dropout noise, batch norm on its running statistics, which it does not update).
- **batch_size=.** A kernel whose first argument is a model or a BlackBox and which
  takes a batch ``x`` (and has no ``batch_size`` of its own) takes ``batch_size=``
  (int > 0, or None for the default: 128 rows on a CPU, the whole batch elsewhere).
  At most that many rows go through the model per call (`runtime.rows_per_call`);
  random draws are made for the whole batch, and each example's computation does not
  depend on the rows beside it, so the result is the same bits as one batch, and query
  counts are those of one batch. The kernel's signature shows the parameter.
- **Labels** (``y``, an integer ``target``, ``shadow_y``, ``y_ref``) of any integer
  dtype are accepted and passed on as int64 (`checks.long_labels`).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from .. import runtime, validate
from ..errors import ConfigError
from ..oracle import BlackBox
from . import checks, layout

FAMILIES = ("extraction", "inversion", "poisoning", "adversarial")

_REGISTRY: dict[str, tuple[str, Callable[..., Any]]] = {}


def register(family: str, name: str, *, channels_last: bool = False
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `fn` under `name` in `family`; with `channels_last` a model
    given as the first argument is passed on as its channels-last view."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not allowed; choose one of {list(FAMILIES)}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name][1].__wrapped__ is not fn:
            raise ValueError(f"attack name {name!r} is registered twice")
        sig = inspect.signature(fn)
        first = next(iter(sig.parameters), None)
        batched = first in ("model", "oracle") and "x" in sig.parameters and "batch_size" not in sig.parameters

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            batch_size = kwargs.pop("batch_size", None) if batched else None
            try:
                call = sig.bind(*args, **kwargs)
            except TypeError:
                return fn(*args, **kwargs)  # a malformed call: let Python word the error
            if batch_size is not None:
                validate.positive("batch_size", batch_size, integer=True)
            target = call.arguments.get(first)
            checks.entry(target, call.arguments)
            checks.long_labels(call.arguments)
            model = checks.model_of(target) if isinstance(target, (torch.nn.Module, BlackBox)) else None
            # batch_size None: a kernel called from inside another keeps the outer call's rows.
            rows = runtime.rows_per_call(batch_size) if batch_size is not None else contextlib.nullcontext()
            with runtime.eval_mode(model), rows:
                if channels_last and first in call.arguments:
                    call.arguments[first] = layout.channels_last(call.arguments[first])
                return fn(*call.args, **call.kwargs)

        if batched:
            checked.__signature__ = _with_batch_size(sig)  # type: ignore[attr-defined]
        if first in ("model", "oracle"):  # help() of every kernel says what the wrapper adds
            checked.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + _EVAL_NOTE + (_BATCH_NOTE if batched else "")
        _REGISTRY[name] = (family, checked)
        checked.attack_name = name  # type: ignore[attr-defined]
        checked.family = family  # type: ignore[attr-defined]
        checked.channels_last = channels_last  # type: ignore[attr-defined]
        checked.batched = batched  # type: ignore[attr-defined]
        return checked

    return deco


_EVAL_NOTE = """
    Model mode: the model (a BlackBox's model too) runs in eval mode for this call; every
    submodule gets its own ``training`` flag back afterwards, also when the call raises.
"""
_BATCH_NOTE = """    batch_size: at most this many rows per model call (int > 0). None (default): 128 rows
        on a CPU, the whole batch on an accelerator. Random draws are made for the whole
        batch, so the result is the same bits as one batch wherever the model gives a row
        the same bits whatever rows surround it (nn.Linear on a CPU BLAS may not for small
        chunks); query counts are those of one batch.
"""


def _with_batch_size(sig: inspect.Signature) -> inspect.Signature:
    """`sig` with a keyword-only ``batch_size: int | None = None`` (before any **kwargs)."""
    params = list(sig.parameters.values())
    extra = inspect.Parameter("batch_size", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation="int | None")
    at = len(params) - (params and params[-1].kind is inspect.Parameter.VAR_KEYWORD)
    return sig.replace(parameters=[*params[:at], extra, *params[at:]])


def names(family: str | None = None) -> list[str]:
    """Sorted names of the registered attacks (of one family, or all)."""
    return names_in(_REGISTRY, family)


def get(name: str, family: str | None = None) -> Callable[..., Any]:
    """The kernel registered as `name`; ConfigError listing valid names otherwise."""
    return lookup(_REGISTRY, name, family, kind="attack", scope="in family")


# Shared with threatlab.defenses.registry, whose entries have the same (family, fn) shape.

def names_in(registry: dict[str, tuple[str, Any]], family: str | None) -> list[str]:
    """Sorted names in `registry` (of one family, or all); ConfigError for an unknown family."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not allowed; choose one of {list(FAMILIES)}")
    return sorted(n for n, (f, _) in registry.items() if family is None or f == family)


def lookup(registry: dict[str, tuple[str, Any]], name: str, family: str | None, *, kind: str,
           scope: str) -> Any:
    """registry[name]'s callable; ConfigError naming `kind` and the valid names otherwise."""
    valid = names_in(registry, family)
    if name not in valid:
        where = f" {scope} {family!r}" if family else ""
        raise ConfigError(f"{kind}={name!r} is not a registered {kind}{where}; choose one of {valid}")
    return registry[name][1]
