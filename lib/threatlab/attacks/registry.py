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
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
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

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                call = sig.bind(*args, **kwargs)
            except TypeError:
                return fn(*args, **kwargs)  # a malformed call: let Python word the error
            checks.entry(call.arguments.get(first), call.arguments)
            if channels_last and first in call.arguments:
                call.arguments[first] = layout.channels_last(call.arguments[first])
                return fn(*call.args, **call.kwargs)
            return fn(*args, **kwargs)

        _REGISTRY[name] = (family, checked)
        checked.attack_name = name  # type: ignore[attr-defined]
        checked.family = family  # type: ignore[attr-defined]
        checked.channels_last = channels_last  # type: ignore[attr-defined]
        return checked

    return deco


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
