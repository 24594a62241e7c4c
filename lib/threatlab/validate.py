"""Small checks that turn a bad parameter into a `ConfigError` before any compute.

Every message names the parameter, the bad value and what is allowed, so a typo in a
profile or a notebook's parameters cell is fixed from the message alone.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError


def choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return `value` if it is one of `allowed`, else raise ConfigError listing them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {allowed}")
    return value


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, integer: bool = False) -> Any:
    """Check that `value` is a real number (an int when `integer`) inside [low, high].

    `low_open` / `high_open` exclude the bound itself (e.g. eps > 0).
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise ConfigError(f"{name}={value!r} must be {kind}")
    if value != value:  # NaN
        raise ConfigError(f"{name}={value!r} must be {kind}, not NaN")
    lo = "(" if low_open or low is None else "["
    hi = ")" if high_open or high is None else "]"
    rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(f"{name}={value!r} is outside the allowed range {rng}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(f"{name}={value!r} is outside the allowed range {rng}")
    return value


def positive(name: str, value: Any, *, integer: bool = False) -> Any:
    """Check value > 0."""
    return number(name, value, low=0, low_open=True, integer=integer)


def non_negative(name: str, value: Any, *, integer: bool = False) -> Any:
    """Check value >= 0."""
    return number(name, value, low=0, integer=integer)


def fraction(name: str, value: Any) -> Any:
    """Check 0 <= value <= 1."""
    return number(name, value, low=0, high=1)


def of_type(name: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    """Check isinstance(value, expected); bools are not accepted as numbers."""
    exp = expected if isinstance(expected, tuple) else (expected,)
    ok = isinstance(value, exp) and not (isinstance(value, bool) and bool not in exp)
    if not ok:
        names = " or ".join(t.__name__ for t in exp)
        raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected {names}")
    return value


def params(values: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Validate a notebook's parameters against `schema` (name -> callable(name, value)).

    A callable is a checker like `lambda n, v: positive(n, v)`; a type or tuple of types
    means `of_type`. Unknown names are not checked here (the runner rejects those).
    """
    for key, rule in schema.items():
        if key not in values:
            raise ConfigError(f"parameter {key!r} is missing")
        if isinstance(rule, (type, tuple)):
            of_type(key, values[key], rule)
        else:
            rule(key, values[key])
    return values
