"""Measurement protocols the notebooks share: which examples count, which norms and
budgets are read, how time is measured, how a poisoning trial is run.

    >>> from threatlab.protocols import evasion, poisoning

Protocols call attacks/ and defenses/ and return plain numbers and tensors; they never
plot or write files (report/ does) and are tested like kernels.
"""
from . import evasion, inversion, poisoning, robustness

__all__ = ["evasion", "inversion", "poisoning", "robustness"]
