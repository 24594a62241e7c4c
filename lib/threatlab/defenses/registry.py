"""One name -> defense registry, the mirror of `threatlab.attacks.registry`.

A defense is whatever the countermeasure is in code: a training routine (DP-SGD,
adversarial training), a model wrapper (input quantization) or a filter over training
data (spectral signatures). Notebooks and tests choose defenses by name
(`threatlab.defenses.get("dp_sgd")`); an unknown name raises `ConfigError` listing the
valid ones.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..attacks.registry import FAMILIES, lookup, names_in
from ..errors import ConfigError

_REGISTRY: dict[str, tuple[str, Callable[..., Any]]] = {}


def register(family: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register `fn` as the defense `name` against attacks of `family`; returns `fn`."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not allowed; choose one of {list(FAMILIES)}")
    if name in _REGISTRY and _REGISTRY[name][1] is not fn:
        raise ValueError(f"defense name {name!r} is registered twice")
    _REGISTRY[name] = (family, fn)
    return fn


def names(family: str | None = None) -> list[str]:
    """Sorted names of the registered defenses (against one family, or all)."""
    return names_in(_REGISTRY, family)


def get(name: str, family: str | None = None) -> Callable[..., Any]:
    """The defense registered as `name`; ConfigError listing valid names otherwise."""
    return lookup(_REGISTRY, name, family, kind="defense", scope="against")
