"""Attack kernels, one module per family, one registry for all.

    >>> from threatlab import attacks
    >>> pgd = attacks.get("pgd_linf")
    >>> res = pgd(model, x, y, eps=0.3, steps=40)
"""
from .registry import FAMILIES, get, names, register
from .result import AttackResult
from . import adversarial, blackbox, eot, extraction, inversion, poisoning  # noqa: F401  (registers the kernels)

__all__ = ["FAMILIES", "AttackResult", "get", "names", "register"]
