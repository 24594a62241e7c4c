"""Statistics over seeds for the verdicts (the findings' general rule G3): intervals and exact tests.

Every interval or test here is scipy.stats': the Student-t interval of a mean
(`t_interval`), the bootstrap percentile interval that stays inside the data's range
(`bootstrap_interval`, for rates, accuracies and correlations), Clopper-Pearson on
pooled counts (`clopper_pearson`), Fisher's exact test (`fisher_one_sided`) and the
exact binomial test. This module imports nothing from the rest of `report`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

#: Confidence level of every interval (G3.1).
CONFIDENCE = 0.95
#: Significance level of the exact tests on pooled counts (G3.3).
ALPHA = 0.05
#: Bootstrap resamples and its fixed seed (the same numbers give the same interval).
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def _values(values: Sequence[float]):
    import numpy as np

    v = np.asarray([float(x) for x in values], dtype=float)
    if v.size == 0:
        raise ValueError("an interval needs at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"an interval needs finite values, got {v.tolist()}")
    return v


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean (scipy.stats.t.interval).

    One value has no interval: (value, -inf, inf), which straddles every bar and so
    decides nothing. Identical values give a zero-width interval at their mean.
    """
    from scipy import stats

    v = _values(values)
    mean = float(v.mean())
    if v.size < 2:
        return mean, -math.inf, math.inf
    sem = float(stats.sem(v))
    if sem == 0.0:
        return mean, mean, mean
    lo, hi = stats.t.interval(confidence, df=v.size - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the bootstrap percentile interval of the mean (scipy.stats.bootstrap).

    Percentile bounds are means of resampled seeds, so they stay within the values'
    range: an accuracy's interval never passes 1, a correlation's never passes +-1
    (G3.4). Fixed random_state: the same values give the same bounds. One value gives
    (value, -inf, inf); identical values a zero-width interval.
    """
    import numpy as np
    from scipy import stats

    v = _values(values)
    mean = float(v.mean())
    if v.size < 2:
        return mean, -math.inf, math.inf
    if np.all(v == v[0]):
        return mean, mean, mean
    res = stats.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                          method="percentile", random_state=BOOTSTRAP_SEED)
    ci = res.confidence_interval
    # Rounding in the resampled means can put a bound a hair outside the values' range.
    return mean, max(float(ci.low), float(v.min())), min(float(ci.high), float(v.max()))


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(k / n, low, high): the exact binomial (Clopper-Pearson) interval of a pooled count."""
    from scipy import stats

    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a count needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return k / n, float(ci.low), float(ci.high)


def fisher_one_sided(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(p greater, p less): Fisher's exact test of success rate 1 > rate 2 and of < on the
    2 x 2 table [[k1, n1 - k1], [k2, n2 - k2]] (scipy.stats.fisher_exact)."""
    from scipy import stats

    table = [[int(k1), int(n1 - k1)], [int(k2), int(n2 - k2)]]
    if min(min(r) for r in table) < 0:
        raise ValueError(f"counts out of range: {k1} of {n1}, {k2} of {n2}")
    return (float(stats.fisher_exact(table, alternative="greater").pvalue),
            float(stats.fisher_exact(table, alternative="less").pvalue))


def direction(p_claimed: float, p_opposite: float, alpha: float = ALPHA) -> int:
    """+1 when the test is significant in the claimed direction, -1 in the opposite one,
    0 when neither (the intersection-union reading of a one-sided exact test, G3.3)."""
    if p_claimed < alpha:
        return 1
    if p_opposite < alpha:
        return -1
    return 0
