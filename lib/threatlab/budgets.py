"""Attack budgets per data set, in one table (the findings' general rule G2).

Wherever a finding uses "the" L-inf budget -- F04's transfer through a stolen copy,
F16's transfer between architectures, F18's adversarial training and the top of F14's
eps grid -- it is the data set's: 0.3 on MNIST and 0.1 on Fashion-MNIST, the usual
budgets in the literature (Madry et al. 2018, arXiv 1706.06083, train and evaluate at
0.3 on MNIST; 0.1 is the common choice for Fashion-MNIST, whose textured images are
changed visibly by 0.3). Notebooks take ``eps = None`` as "the data set's budget" and
resolve it here, so a run records which budget it used and whether it was overridden.

    >>> from threatlab import budgets
    >>> budgets.eps_linf("fashion_mnist")
    (0.1, False)
    >>> budgets.eps_linf("mnist", 0.2)
    (0.2, True)
    >>> budgets.eps_grid("mnist")[-1], len(budgets.eps_grid("mnist"))
    (0.3, 12)
"""
from __future__ import annotations

from typing import Any

from . import validate
from .errors import ConfigError

__all__ = ["EPS_GRID_STEP", "EPS_LINF", "eps_grid", "eps_linf", "fractions_of"]

#: "The" L-inf budget of each data set (rule G2).
EPS_LINF: dict[str, float] = {"mnist": 0.3, "fashion_mnist": 0.1}

#: Step of F14's eps grid per data set (F14's protocol: steps of 0.025 up to
#: 0.3 on MNIST, 0.0125 up to 0.1 on Fashion-MNIST).
EPS_GRID_STEP: dict[str, float] = {"mnist": 0.025, "fashion_mnist": 0.0125}

#: Decimals budgets derived from the table are rounded to, so that 0.3 * 2 / 3 reads 0.2
#: and a grid's last point is the budget itself, bit for bit.
_DECIMALS = 6


def _dataset(dataset: Any) -> str:
    if dataset not in EPS_LINF:
        raise ConfigError(f"dataset={dataset!r} has no L-inf budget; allowed: {sorted(EPS_LINF)} "
                          "(or set eps explicitly)")
    return dataset


def eps_linf(dataset: str, override: float | None = None) -> tuple[float, bool]:
    """The L-inf budget to use on `dataset` and whether it was overridden.

    ``override=None`` gives the table's budget and False; a number in (0, 1] is used as
    given (True), even if it equals the table's, so a run that pins its eps says so.
    ConfigError for a data set outside the table when no override is given, and for an
    override that is not a finite number in (0, 1] (NaN and inf included).
    """
    if override is None:
        return EPS_LINF[_dataset(dataset)], False
    validate.number("eps", override, low=0, high=1, low_open=True)
    return float(override), True


def eps_grid(dataset: str, top: float | None = None) -> list[float]:
    """F14's L-inf grid on `dataset`: even steps of about `EPS_GRID_STEP[dataset]` from one
    step up to `top` (default the data set's budget), the last point exactly `top`.

    MNIST: 0.025, 0.05, ..., 0.3 (12 points); Fashion-MNIST: 0.0125, ..., 0.1 (8 points).
    A `top` that is not a multiple of the step is reached in round(top / step) equal
    steps (at least one). A data set outside the table needs `top` and gets 12 steps.
    """
    if top is None:
        _dataset(dataset)
    top = eps_linf(dataset, top)[0]
    step = EPS_GRID_STEP.get(dataset, top / 12)
    k = max(1, round(top / step))
    return [round(top * i / k, _DECIMALS) for i in range(1, k)] + [top]


def fractions_of(eps: float, fractions: Any = (1 / 3, 2 / 3, 1.0)) -> list[float]:
    """``[eps * f for f in fractions]``, rounded to 6 decimals: a sweep that ends at the
    budget (F16's transfer sweep: a third, two thirds and all of it, i.e. 0.1, 0.2, 0.3 on
    MNIST). Each fraction in (0, 1]; eps in (0, 1]."""
    validate.number("eps", eps, low=0, high=1, low_open=True)
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__"):
        raise ConfigError(f"fractions={fractions!r} must be a list of numbers in (0, 1]")
    fr = list(fractions)
    if not fr:
        raise ConfigError("fractions=[] must name at least one fraction in (0, 1]")
    for i, f in enumerate(fr):
        validate.number(f"fractions[{i}]", f, low=0, high=1, low_open=True)
    return [float(eps) if f == 1 else round(eps * f, _DECIMALS) for f in fr]  # the budget itself, unrounded


def resolve_evasion(params: dict[str, Any]) -> tuple[float, list[float], list[float], float]:
    """Notebook 04's budgets from its parameters (None: the data set's, rule G2): eps,
    F14's grid (`eps_grid`), F16's transfer sweep (`fractions_of`, must include eps:
    F16 is judged there) and the adversarial-training budget (eps_at, default eps).
    Records them in ``params["budget"]`` (with whether eps was overridden) and returns
    (eps, eps_grid, transfer_eps, eps_at)."""
    eps, overridden = eps_linf(params["dataset"], params["eps"])
    grid = eps_grid(params["dataset"], eps) if params["eps_grid"] is None else list(params["eps_grid"])
    transfer = fractions_of(eps) if params["transfer_eps"] is None else list(params["transfer_eps"])
    eps_at = eps if params["eps_at"] is None else params["eps_at"]
    if eps not in transfer:
        raise ConfigError(f"transfer_eps={transfer!r} must include eps={eps} (F16 is judged there)")
    params["budget"] = {"eps_linf": eps, "overridden": overridden, "eps_grid": grid, "transfer_eps": transfer,
                        "eps_at": eps_at}
    return eps, grid, transfer, eps_at
