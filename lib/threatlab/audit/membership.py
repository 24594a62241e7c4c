"""Audit section "membership": does the model give away which records it trained on?

Candidates: `n` records of the split the user names as the training set (members) and
`n` test records (non-members), balanced. Attacks, all through a probabilities
`BlackBox` (Shokri et al. 2017, arXiv 1610.05820; survey: model inversion / membership
inference, He et al. arXiv 1911.12562):

* loss threshold (`mi_loss`; Yeom et al. 2018, arXiv 1709.01604): members have low loss;
* population-calibrated class threshold (`mi_class_threshold`; Ye et al. 2022, arXiv
  2111.09679, attack P): the loss relative to the median over the attacker's own labelled
  non-members of the same class (further test records, disjoint from the candidates);
* LiRA offline (`mi_lira_offline`; Carlini et al. 2022, arXiv 2112.03570), only when the
  user allows reference models (``--reference-models K``): K models from the user's own
  factory trained on random halves of training records that are not candidates, so no
  reference saw a candidate.

Each attack reports AUC and TPR at 0.1 % and 1 % FPR with 95 % bootstrap intervals
(`scipy.stats.bootstrap`, percentile, candidates resampled in pairs with their truth).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import attacks, metrics, models
from ..oracle import BlackBox
from ..runtime import progress_disabled, randperm

__all__ = ["FPRS", "THREAT_MODEL", "roc_summary", "run_membership", "train_references"]

THREAT_MODEL = ("Black-box attacker who sees the model's probabilities, knows a record and its label, owns "
                "labelled records from the same distribution, and guesses whether the record was in the "
                "training set.")
#: FPRs at which TPR is read (Carlini et al. 2022 argue for the low-FPR regime).
FPRS = (0.001, 0.01)
#: Bootstrap resamples per statistic (each resample recomputes an exact ROC curve).
RESAMPLES = 1000


def _auc_rows(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """AUC of each row of scores `s` [..., n] with truth `t` [..., n] (ties count one
    half): the Mann-Whitney form of `metrics.auc`, vectorised over bootstrap resamples."""
    from scipy.stats import rankdata

    r = rankdata(s, axis=-1)
    p = t.sum(-1)
    q = t.shape[-1] - p
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((r * t).sum(-1) - p * (p + 1) / 2) / (p * q)


def _tpr_rows(s: np.ndarray, t: np.ndarray, fpr_max: float) -> np.ndarray:
    """`metrics.tpr_at_fpr` per row: with N negatives, at most k = floor(fpr_max N)
    false positives are allowed, so the threshold sits just above the (k+1)-th highest
    negative score and TPR counts the positives strictly above it."""
    n_neg = (~t).sum(-1)
    k = np.floor(fpr_max * n_neg + 1e-12 * n_neg).astype(int)
    neg = np.where(t, -np.inf, s)
    neg_sorted = -np.sort(-neg, axis=-1)  # descending; positives (-inf) last
    kth = np.take_along_axis(neg_sorted, np.minimum(k, s.shape[-1] - 1)[..., None], -1)[..., 0]
    kth = np.where(k >= n_neg, -np.inf, kth)
    p = t.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((s > kth[..., None]) & t).sum(-1) / p


def roc_summary(scores: Any, truth: Any, *, seed: int, resamples: int = RESAMPLES) -> dict[str, Any]:
    """AUC and TPR at `FPRS` with 95 % percentile bootstrap intervals over candidates
    (`scipy.stats.bootstrap`, paired, vectorised statistics). Point values are
    `metrics.auc` / `metrics.tpr_at_fpr`."""
    from scipy import stats

    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=bool)
    def along(fn: Callable[..., np.ndarray], *extra: Any) -> Callable[..., np.ndarray]:
        # scipy hands a vectorised statistic resamples along `axis`.
        return lambda a, b, axis=-1: fn(np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1).astype(bool), *extra)

    stat_fns: dict[str, tuple[Callable[..., float], Callable[..., np.ndarray]]] = {
        "auc": (metrics.auc, along(_auc_rows))}
    for f in FPRS:
        stat_fns[f"tpr_at_{f * 100:g}%_fpr"] = (lambda a, b, f=f: metrics.tpr_at_fpr(a, b, f),
                                                along(_tpr_rows, f))
    out: dict[str, Any] = {}
    for name, (point, rows) in stat_fns.items():
        value = point(s, t)
        try:
            res = stats.bootstrap((s, t), rows, paired=True, vectorized=True, n_resamples=resamples,
                                  method="percentile", confidence_level=0.95,
                                  random_state=np.random.default_rng(seed))
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        except ValueError:
            low = high = float("nan")  # a sample scipy cannot resample: reported as no interval
        out[name] = {"value": value, "low": low if np.isfinite(low) else None,
                     "high": high if np.isfinite(high) else None}
    fpr, tpr = metrics.roc_curve(s, t)
    out["roc"] = {"fpr": fpr, "tpr": tpr}
    return out


def train_references(factory: Callable[[], torch.nn.Module], wrap: Callable[[torch.nn.Module], torch.nn.Module],
                     x: torch.Tensor, y: torch.Tensor, *, k: int, epochs: int, seed: int,
                     device: torch.device) -> list[torch.nn.Module]:
    """K reference models from the user's factory, each trained (Adam, `epochs`) on its
    own random half of (x, y); initialised under ``torch.manual_seed(seed + i)``."""
    gen = torch.Generator().manual_seed(seed)
    refs = []
    for i in tqdm(range(k), desc="audit membership: reference models", disable=progress_disabled(), leave=False):
        rows = randperm(x.shape[0], gen)[: x.shape[0] // 2]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            net = wrap(factory()).to(device)
        models.train(net, x[rows], y[rows], epochs=epochs, seed=seed + i, desc=f"reference {i + 1}/{k}")
        refs.append(net.eval())
    return refs


def run_membership(model: torch.nn.Module, x_mem: torch.Tensor, y_mem: torch.Tensor, x_non: torch.Tensor,
                   y_non: torch.Tensor, x_pop: torch.Tensor, y_pop: torch.Tensor, *, seed: int,
                   references: Callable[[], list[torch.nn.Module]] | None = None) -> dict[str, Any]:
    """Score the candidates (members first) with each attack; `references`, when given,
    trains the LiRA reference models (its time is reported on its own)."""
    x = torch.cat([x_mem, x_non])
    y = torch.cat([y_mem, y_non])
    truth = np.r_[np.ones(x_mem.shape[0], bool), np.zeros(x_non.shape[0], bool)]
    out: dict[str, Any] = {"threat_model": THREAT_MODEL, "n_members": int(x_mem.shape[0]),
                           "n_non_members": int(x_non.shape[0]), "n_population": int(x_pop.shape[0]),
                           "attacks": {}, "oracle_queries": {}}
    oracles = {}
    oracles["loss"] = BlackBox(model, mode="probs")
    res = attacks.get("mi_loss")(oracles["loss"], x, y)
    out["attacks"]["loss"] = roc_summary(res.scores, truth, seed=seed)
    oracles["population"] = BlackBox(model, mode="probs")
    res = attacks.get("mi_class_threshold")(oracles["population"], x, y, x_ref=x_pop, y_ref=y_pop)
    out["attacks"]["population"] = roc_summary(res.scores, truth, seed=seed)
    if references is not None:
        t0 = time.perf_counter()
        refs = references()
        out["reference_training_seconds"] = round(time.perf_counter() - t0, 2)
        out["reference_models"] = len(refs)
        with torch.no_grad():
            shadow = torch.stack([torch.softmax(r(x), 1) for r in refs]).cpu()
        oracles["lira_offline"] = BlackBox(model, mode="probs")
        res = attacks.get("mi_lira_offline")(oracles["lira_offline"], x, y, shadow_probs=shadow)
        out["attacks"]["lira_offline"] = roc_summary(res.scores, truth, seed=seed)
    else:
        out["reference_models"] = 0
        out["reference_training_seconds"] = None
    out["oracle_queries"] = {k: int(o.total) for k, o in oracles.items()}
    return out
