"""One name -> kernel registry per attack family.

Notebooks choose attacks by name (`threatlab.attacks.get("pgd_linf")`); tests
parametrize over `names(family)`. An unknown name raises `ConfigError` listing the valid
ones, so a typo in a profile fails before any compute.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

FAMILIES = ("extraction", "inversion", "poisoning", "adversarial")

_REGISTRY: dict[str, tuple[str, Callable[..., Any]]] = {}


def register(family: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `fn` under `name` in `family`."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not allowed; choose one of {list(FAMILIES)}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name][1] is not fn:
            raise ValueError(f"attack name {name!r} is registered twice")
        _REGISTRY[name] = (family, fn)
        fn.attack_name = name  # type: ignore[attr-defined]
        fn.family = family  # type: ignore[attr-defined]
        return fn

    return deco


def names(family: str | None = None) -> list[str]:
    """Sorted names of the registered attacks (of one family, or all)."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not allowed; choose one of {list(FAMILIES)}")
    return sorted(n for n, (f, _) in _REGISTRY.items() if family is None or f == family)


def get(name: str, family: str | None = None) -> Callable[..., Any]:
    """The kernel registered as `name`; ConfigError listing valid names otherwise."""
    valid = names(family)
    if name not in valid:
        where = f" in family {family!r}" if family else ""
        raise ConfigError(f"attack={name!r} is not a registered attack{where}; choose one of {valid}")
    return _REGISTRY[name][1]
