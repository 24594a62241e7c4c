"""Input checks every attack family shares, run once before any compute.

Each raises `ConfigError` naming the argument, what it got and what is allowed. The
tensor checks themselves live in `threatlab.validate` (one implementation for the
kernels, `models.train` / `cached` and the oracle); this module adapts them to the
kernel contract: `entry` is what the registry runs before every registered kernel.
"""
from __future__ import annotations

from typing import Any

import torch

from .. import validate
from ..errors import ConfigError
from ..oracle import BlackBox


def images(x: Any, *, unit_range: bool = True, nonempty: bool = False) -> None:
    """x is a floating tensor [n, ...] (n > 0 when `nonempty`) of finite values, inside
    [0, 1] when `unit_range` (NaN and +-inf are refused either way)."""
    # One host sync, before any loop: a batch outside [0, 1] means the caller normalized
    # outside the model, which silently breaks every eps and the box projection; a NaN
    # pixel would fail both comparisons and come back counted as a success.
    validate.images("x", x, unit_range=unit_range, nonempty=nonempty)


def labels(name: str, t: Any, n: int, *, num_classes: int | None = None) -> None:
    """t is an integer (not bool) tensor of shape [n], values in [0, num_classes)."""
    validate.labels(name, t, n, num_classes=num_classes)


#: Arguments that hold class ids; `long_labels` converts them.
LABEL_ARGUMENTS = ("y", "target", "shadow_y", "y_ref")


def long_labels(arguments: dict[str, Any]) -> None:
    """Class-id tensors among the bound `arguments` (`LABEL_ARGUMENTS`) of any integer
    dtype (int8/16/32, uint8, ...) become int64, in place in `arguments`: cross_entropy,
    gather and scatter take int64 indices only, so an int32 y that passed the checks
    would otherwise fail deep inside PyTorch. Run after `entry` (which refuses floating
    and bool labels, wrong shapes and classes out of range); the device stays x's."""
    for name in LABEL_ARGUMENTS:
        t = arguments.get(name)
        if torch.is_tensor(t) and t.dtype != torch.int64 and not t.is_floating_point() \
                and not t.is_complex() and t.dtype != torch.bool:
            arguments[name] = t.long()


def oracle(obj: Any, *, modes: tuple[str, ...] | None = None, attack: str = "this attack") -> None:
    """obj is a `BlackBox` whose output mode is one of `modes` (any mode when None)."""
    if not isinstance(obj, BlackBox):
        raise ConfigError(f"oracle must be a threatlab.oracle.BlackBox for {attack}; got "
                          f"{type(obj).__name__} (wrap the model: BlackBox(model, mode=...))")
    if modes is not None and obj.mode not in modes:
        raise ConfigError(f"oracle.mode={obj.mode!r} is not allowed for {attack}; choose one of {list(modes)}")


def model_of(obj: Any) -> Any:
    """The model behind a kernel's first argument: the module itself, or a BlackBox's
    model (the defender's object: the attacker never reads it, the check only does)."""
    return obj.model if isinstance(obj, BlackBox) else obj


def entry(first: Any, arguments: dict[str, Any]) -> None:
    """The checks the registry runs before a registered kernel whose first argument is a
    model or a `BlackBox` (`first`), on the bound `arguments` of the call:

    - ``x`` (when a tensor): non-empty, finite, in [0, 1], the model's input shape,
      dtype and device (`validate.batch`). Empty batches raise ConfigError at every
      kernel entry; attack an empty selection by not calling the kernel.
    - ``y`` and an integer ``target``: Long [n], class ids inside the model's classes,
      on x's device.
    - a floating ``target`` (images, e.g. feature collision's targets): the same image
      checks as x.

    Kernels whose first argument is data (label flipping, BadNets) check their own
    inputs. Facts a model does not declare (a plain nn.Sequential has no in_shape) are
    not checked; see `validate.model_facts`.
    """
    if not isinstance(first, (torch.nn.Module, BlackBox)):
        return
    x = arguments.get("x")
    if not torch.is_tensor(x):
        return  # the kernel's own checks name the argument
    model = model_of(first)
    y = arguments.get("y")
    target = arguments.get("target")
    label_target = target if torch.is_tensor(target) and not target.is_floating_point() else None
    validate.batch(model, x, y if torch.is_tensor(y) else None, target=label_target)
    if torch.is_tensor(target) and target.is_floating_point():
        validate.images("target", target)
        validate.model_input(model, target, name="target")
