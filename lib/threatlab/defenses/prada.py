"""PRADA: detect model-extraction query streams by the shape of their distances.

Juuti, Szyller, Marchal, Asokan (2019), "PRADA: Protecting against DNN Model Stealing
Attacks", IEEE EuroS&P, arXiv 1805.02628. Threat model: the defender runs the API and
sees every query of one client, in order; the attacker queries to train a substitute.
Natural queries (a benign client's images) lie at distances from each other that are
roughly normally distributed; synthetic extraction queries (Jacobian augmentation,
Papernot et al. 2017, steps of lam * sign(gradient) from earlier queries) sit at a few
fixed, small distances from their parents, which bends the distribution far from
normal.

The detector keeps, per class the victim predicts, a *growing set* G_c of earlier
queries. For each new query x with predicted class c it records the minimum L2 distance
d_min from x to G_c (the first query of a class only starts G_c), and adds x to G_c when
d_min exceeds the class threshold T_c; T_c is then raised to max(T_c, mean - std of the
distances that admitted G_c's members). Every `test_every` queries it pools the recorded
distances of the classes that have at least `min_per_class` of them, drops those more
than `outlier_std` standard deviations from their mean, and, once more than
`min_samples` remain, applies the Shapiro-Wilk test (scipy.stats.shapiro): W < delta
flags the client as an attacker. The paper sets delta per data set from benign streams'
false-positive rate; it is a parameter here.

    >>> from threatlab.oracle import BlackBox
    >>> oracle = BlackBox(victim, mode="probs", keep_log=True)
    >>> ...                                   # the client's queries
    >>> res = prada(*oracle.query_log(), delta=0.95)
    >>> res.detected, res.queries_to_detection
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from .. import validate
from ..errors import ConfigError


@dataclass
class PradaResult:
    """What PRADA saw in one client's stream.

    detected:             True when some test gave W < delta.
    queries_to_detection: queries answered when the first test flagged the stream
                          (1-based count), None when it never did.
    shapiro_w:            float64 [t], W at each test.
    tested_at:            int64 [t], the query count at which each test ran.
    min_distances:        float64 [N], d_min of each query to its class's growing set
                          (NaN for the first query of each class).
    growing_set_size:     queries kept in all growing sets at the end.
    queries:              N, the stream's length.
    delta:                the threshold used.
    """

    detected: bool
    queries_to_detection: int | None
    shapiro_w: np.ndarray
    tested_at: np.ndarray
    min_distances: np.ndarray
    growing_set_size: int
    queries: int
    delta: float


def _check(x, labels, delta, test_every, min_samples, min_per_class, outlier_std):
    if not torch.is_tensor(x) or x.dim() < 2 or not x.is_floating_point():
        raise ConfigError(f"x must be a floating tensor of shape [n, ...] (the query stream); got "
                          f"{type(x).__name__}{tuple(x.shape) if torch.is_tensor(x) else ''}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ConfigError("x holds NaN or inf: a query stream is made of real inputs")
    if not torch.is_tensor(labels) or labels.is_floating_point() or labels.shape != (x.shape[0],):
        raise ConfigError(f"labels must be an integer tensor of shape ({x.shape[0]},): the victim's "
                          "top-1 label on each query (BlackBox.query_log gives both)")
    validate.number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    validate.positive("test_every", test_every, integer=True)
    validate.number("min_samples", min_samples, low=3, integer=True)
    validate.positive("min_per_class", min_per_class, integer=True)
    validate.number("outlier_std", outlier_std, low=0, low_open=True)


def shapiro_w(distances: np.ndarray, *, outlier_std: float = 3.0) -> tuple[float, int]:
    """Shapiro-Wilk W of `distances` after dropping values more than `outlier_std`
    standard deviations from their mean (PRADA's outlier rule), and how many were used.

    A set with zero spread (every distance equal) is as far from normal as a sample can
    be; scipy returns W = 1 for it (with a warning), so it is given W = 0 here.
    """
    d = np.asarray(distances, dtype=np.float64)
    sd = d.std()
    if sd == 0:
        return 0.0, int(d.size)
    kept = d[np.abs(d - d.mean()) < outlier_std * sd]
    if kept.size < 3 or kept.std() == 0:
        return 0.0, int(kept.size)
    return float(stats.shapiro(kept).statistic), int(kept.size)


def prada(x: torch.Tensor, labels: torch.Tensor, *, delta: float = 0.95, test_every: int = 10,
          min_samples: int = 100, min_per_class: int = 10, outlier_std: float = 3.0) -> PradaResult:
    """Run PRADA over one client's query stream, in order.

    Juuti et al. (2019), arXiv 1805.02628, Algorithm 1 (see the module docstring).

    Args:
        x: the client's queries [N, ...] in arrival order (any range; flattened, L2).
        labels: the victim's top-1 label on each query, Long [N].
        delta: Shapiro-Wilk threshold in (0, 1): W < delta flags the client.
        test_every: queries between tests (the authors' code tests every 10th).
        min_samples: the test needs more than this many pooled distances (default 100).
        min_per_class: a class's distances join the pool once it has this many (10).
        outlier_std: distances beyond this many standard deviations are dropped (3).
    Returns a `PradaResult`.

    The stream is processed one query at a time (the growing sets depend on every earlier
    decision); each step is one matrix-vector product against the class's set.

    Example:
        >>> res = prada(x_stream, victim_labels, delta=0.95)
        >>> res.detected, res.queries_to_detection
    """
    _check(x, labels, delta, test_every, min_samples, min_per_class, outlier_std)
    pts = x.detach().to("cpu", torch.float64).flatten(1).numpy()
    lab = labels.detach().cpu().numpy().astype(np.int64)
    n = pts.shape[0]
    sq = (pts ** 2).sum(1)
    members: dict[int, list[int]] = {}        # class -> rows of its growing set
    admitted: dict[int, list[float]] = {}     # class -> distances that admitted members
    threshold: dict[int, float] = {}
    dmin = np.full(n, np.nan)
    per_class_count: dict[int, int] = {}
    w_all, tested, first = [], [], None
    for i in range(n):
        c = int(lab[i])
        if c not in members:
            members[c], admitted[c], threshold[c] = [i], [0.0], 0.0
        else:
            g = members[c]
            # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, clipped at 0 against rounding.
            d2 = sq[g] + sq[i] - 2.0 * (pts[g] @ pts[i])
            d = float(np.sqrt(max(float(d2.min()), 0.0)))
            dmin[i] = d
            per_class_count[c] = per_class_count.get(c, 0) + 1
            if d > threshold[c]:
                g.append(i)
                admitted[c].append(d)
                a = np.asarray(admitted[c])
                threshold[c] = max(threshold[c], float(a.mean() - a.std()))
        t = i + 1
        if t % test_every:
            continue
        ok = [cl for cl, k in per_class_count.items() if k >= min_per_class]
        if not ok:
            continue
        seen = dmin[:t]
        pool = seen[np.isin(lab[:t], ok) & ~np.isnan(seen)]
        w, used = shapiro_w(pool, outlier_std=outlier_std)
        if used <= min_samples:
            continue
        w_all.append(w)
        tested.append(t)
        if first is None and w < delta:
            first = t
    return PradaResult(first is not None, first, np.asarray(w_all, dtype=np.float64),
                       np.asarray(tested, dtype=np.int64), dmin, sum(len(g) for g in members.values()),
                       n, float(delta))
