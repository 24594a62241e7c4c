"""Activation clustering, a poisoning defense: split each class's activations in two.

`activation_clustering` (Chen et al. 2018) reduces the penultimate activations of the
training examples of each labelled class to a few dimensions (PCA), clusters
them with k-means, k = 2, and calls a cluster poisonous when it is small: a backdoor
makes the poisons of the target label a separate, compact mode of that label's
activations, while a clean class has no such split.

    >>> reps = spectral_signatures.representations(model, x_poisoned)
    >>> res = activation_clustering(reps, y_poisoned, n_dims=10)
    >>> recall, precision = spectral_signatures.detection_scores(res.flagged, poisoned.is_poison)

Reference behaviour: IBM's Adversarial Robustness Toolbox (ART) implements the method as
``art.defences.detector.poison.ActivationDefence`` (PCA or FastICA to ``nb_dims=10``,
scikit-learn k-means with 2 clusters per class, then a cluster analysis: "smaller"
flags the smaller cluster of every class, "relative-size" the clusters holding less
than 35 % of their class, compared after rounding to 2 decimals). This module follows
the same steps in torch; the tests check the flagged indices against that algorithm on
a planted case.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import validate
from ..errors import ConfigError
from .spectral_signatures import check_features

__all__ = ["ClusteringResult", "ANALYSES", "REDUCTIONS", "activation_clustering", "kmeans2"]

#: Dimension reductions: "pca" (top principal components, deterministic, any device).
#: Chen et al. also used ICA; FastICA whitens every component to unit variance, and on
#: the tests' planted case k-means then splits along noise components (recall 0 at 2-10
#: components, measured with scikit-learn's FastICA under ART's settings), so it is
#: left out.
REDUCTIONS = ("pca",)
#: Cluster analyses: "relative_size" (Chen et al.'s: a cluster with less than
#: `size_threshold` of its class is poisonous) and "smaller" (ART's default: the smaller
#: cluster of every class is).
ANALYSES = ("relative_size", "smaller")


@dataclass
class ClusteringResult:
    """flagged: bool [n], the examples in poisonous clusters; cluster: Long [n], each
    example's cluster (0/1) within its class; sizes: Long [classes, 2] cluster sizes;
    poisonous: bool [classes, 2]; removed_per_class: Long [classes]."""

    flagged: torch.Tensor
    cluster: torch.Tensor
    sizes: torch.Tensor
    poisonous: torch.Tensor
    removed_per_class: torch.Tensor


def kmeans2(z: torch.Tensor, *, iters: int = 100) -> torch.Tensor:
    """Lloyd's k-means with k = 2 on z [n, d]; returns the cluster (0/1) of each row.

    Deterministic start (no random draw): the two halves of the data split by the sign
    of their projection on the first principal direction (Boley's principal-direction
    split), the usual good start for k = 2. Iterates until no row changes cluster, or
    `iters` times. Cluster 0 is the side of the negative projections.
    """
    validate.positive("iters", iters, integer=True)
    n = z.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.long, device=z.device)
    zc = z - z.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(zc, full_matrices=False)
    assign = (zc @ vh[0] > 0).long()
    for _ in range(iters):
        n1 = assign.sum()
        if int(n1) in (0, n):  # one cluster is empty: the data have no second mode to split
            break
        w1 = assign.to(z.dtype).unsqueeze(1)
        c1 = (z * w1).sum(0) / n1
        c0 = (z * (1 - w1)).sum(0) / (n - n1)
        new = ((z - c1).pow(2).sum(1) < (z - c0).pow(2).sum(1)).long()
        if torch.equal(new, assign):
            break
        assign = new
    return assign


def _reduce(r: torch.Tensor, n_dims: int, reduce: str) -> torch.Tensor:
    """r [m, d] -> [m, min(d, n_dims)]; no reduction when d <= n_dims (as ART)."""
    if r.shape[1] <= n_dims or r.shape[0] <= n_dims:
        return r
    if reduce == "pca":
        rc = r - r.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(rc, full_matrices=False)
        return rc @ vh[:n_dims].T
    raise ConfigError(f"reduce={reduce!r} is not allowed; choose one of {list(REDUCTIONS)}")


def activation_clustering(features: torch.Tensor, labels: torch.Tensor, *, n_dims: int = 10,
                          reduce: str = "pca", analysis: str = "relative_size",
                          size_threshold: float = 0.35, num_classes: int | None = None,
                          iters: int = 100, seed: int = 0) -> ClusteringResult:
    """Activation-clustering filtering of a (possibly) poisoned training set.

    Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava (2018),
    "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering",
    arXiv 1811.03728. Threat model of the defender: it holds the training set (with the
    attacker's poisons, labelled as the attacker chose) and the model trained on it, and
    knows neither which class is targeted nor how many poisons there are. For each
    labelled class: reduce its activations to `n_dims` dimensions, split them with
    k-means (k = 2, `kmeans2`) and flag the poisonous cluster(s) per `analysis`.

    Args:
        features: activations [n, d] (e.g. ``spectral_signatures.representations``).
        labels: the training labels [n] (as poisoned).
        n_dims: dimensions kept (> 0; Chen et al. and ART: 10).
        reduce: "pca" (the only one; ART's ActivationDefence default; see `REDUCTIONS`).
        analysis: "relative_size" (default; flag a cluster holding less than
            `size_threshold` of its class, the fraction rounded to 2 decimals as ART does)
            or "smaller" (flag the smaller cluster of every class; equal sizes flag
            cluster 0, as ART's argmin).
        size_threshold: in (0, 0.5], default 0.35 (Chen et al.'s and ART's).
        num_classes: number of classes (default max(labels) + 1).
        iters: k-means iteration cap. seed: kept for the common signature (PCA and the
            k-means start are deterministic).
    Returns ClusteringResult (flagged, cluster, sizes, poisonous, removed_per_class).

    Example:
        >>> res = activation_clustering(reps, y, n_dims=10)
        >>> res.poisonous.any(1)      # classes found to hold a poisonous cluster
        >>> x_kept, y_kept = x[~res.flagged], y[~res.flagged]
    """
    validate.positive("n_dims", n_dims, integer=True)
    validate.choice("reduce", reduce, REDUCTIONS)
    validate.choice("analysis", analysis, ANALYSES)
    validate.number("size_threshold", size_threshold, low=0, high=0.5, low_open=True)
    validate.non_negative("seed", seed, integer=True)
    validate.positive("iters", iters, integer=True)
    n, c = check_features(features, labels, num_classes)

    feats = features.detach().double()  # SVDs of near-degenerate classes are steadier in float64
    flagged = torch.zeros(n, dtype=torch.bool, device=features.device)
    cluster = torch.zeros(n, dtype=torch.long, device=features.device)
    sizes = torch.zeros(c, 2, dtype=torch.long)
    poisonous = torch.zeros(c, 2, dtype=torch.bool)
    # One reduction and one 2-means per class (a handful), each batched over the class.
    for k in range(c):
        idx = (labels == k).nonzero().squeeze(1)
        if idx.numel() < 2:
            continue
        z = _reduce(feats[idx], n_dims, reduce)
        a = kmeans2(z, iters=iters)
        cluster[idx] = a
        sz = torch.bincount(a.cpu(), minlength=2)
        sizes[k] = sz
        if analysis == "smaller":
            poisonous[k, int(torch.argmin(sz))] = True
        else:
            share = torch.round(sz.double() / idx.numel() * 100) / 100
            poisonous[k] = share < size_threshold
        bad = poisonous[k].to(a.device)[a]
        flagged[idx[bad]] = True
    removed = torch.zeros(c, dtype=torch.long)
    removed.index_add_(0, labels[flagged].cpu().long(), torch.ones(int(flagged.sum()), dtype=torch.long))
    return ClusteringResult(flagged, cluster, sizes, poisonous, removed)
