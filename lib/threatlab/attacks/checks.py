"""Input checks every attack family shares, run once before any compute.

Each raises `ConfigError` naming the argument, what it got and what is allowed.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..oracle import BlackBox


def images(x: Any, *, unit_range: bool = True, nonempty: bool = False) -> None:
    """x is a floating tensor [n, ...] (n > 0 when `nonempty`), inside [0, 1] when `unit_range`."""
    if not torch.is_tensor(x) or x.dim() < 2 or not x.is_floating_point() or (nonempty and x.shape[0] == 0):
        raise ConfigError(f"x must be a floating tensor of shape [n, ...]{' with n > 0' if nonempty else ''}; "
                          f"got {type(x).__name__}{tuple(x.shape) if torch.is_tensor(x) else ''}")
    # One host sync, before any loop: a batch outside [0, 1] means the caller normalized
    # outside the model, which silently breaks every eps and the box projection.
    if unit_range and x.numel() and (bool(x.min() < 0) or bool(x.max() > 1)):
        raise ConfigError("x must lie in [0, 1]; put normalization inside the model")


def labels(name: str, t: Any, n: int) -> None:
    """t is an integer (not bool) tensor of shape [n]."""
    if not torch.is_tensor(t) or t.shape != (n,) or t.is_floating_point() or t.dtype == torch.bool:
        shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise ConfigError(f"{name} must be an integer (Long) tensor of shape ({n},); got {shape}")


def oracle(obj: Any, *, modes: tuple[str, ...] | None = None, attack: str = "this attack") -> None:
    """obj is a `BlackBox` whose output mode is one of `modes` (any mode when None)."""
    if not isinstance(obj, BlackBox):
        raise ConfigError(f"oracle must be a threatlab.oracle.BlackBox for {attack}; got "
                          f"{type(obj).__name__} (wrap the model: BlackBox(model, mode=...))")
    if modes is not None and obj.mode not in modes:
        raise ConfigError(f"oracle.mode={obj.mode!r} is not allowed for {attack}; choose one of {list(modes)}")
