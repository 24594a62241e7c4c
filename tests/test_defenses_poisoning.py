"""Oracles for the backdoor defenses (threatlab.defenses: spectral_signatures,
activation_clustering, neural_cleanse): planted clusters whose flagged indices are known
from the reference algorithm, and a backdoored digits model whose poisons and target
class are known.

Reference behaviour (read from IBM ART 1.20.1, art/defences/detector/poison/, not
copied): SpectralSignatureDefense takes the top right singular vector v of each
class's centred features, as Tran et al.'s Algorithm 1, but scores |v . r| on the
*uncentred* features r (the paper, and threatlab: ((r - mean) . v) ** 2; the two rank
alike when the class mean is orthogonal to v, so the planted case is centred per
class). It keeps the examples whose score is below ``np.quantile(score, 1 - eps_multiplier * expected_pp_poison)``, i.e. it flags
``1 + floor((n_c - 1) * f)`` examples of a class of n_c (ties aside), which equals our
``ceil(n_c * f)`` except when the fractional part of n_c * f lies in (0, f). The
ActivationDefence reduces each class with PCA to ``nb_dims`` (default 10), runs
scikit-learn k-means with 2 clusters and, for "smaller", flags the cluster argmin of
the cluster sizes; for "relative-size", the clusters whose share, rounded to 2
decimals, is below 0.35. The known-answer tests rebuild those steps with numpy and
scikit-learn; ART itself is compared where it is installed (the bench extra).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from threatlab import defenses, models
from threatlab.attacks import poisoning as P
from threatlab.defenses.activation_clustering import activation_clustering, kmeans2
from threatlab.defenses.neural_cleanse import anomaly_index, neural_cleanse, trigger_neuron_filter
from threatlab.defenses.spectral_signatures import detection_scores, removal_curve, representations, spectral_signatures
from threatlab.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered():
    assert set(defenses.names("poisoning")) >= {"spectral_signatures", "activation_clustering", "neural_cleanse"}
    assert defenses.get("activation_clustering") is activation_clustering
    assert defenses.get("neural_cleanse") is neural_cleanse


@pytest.fixture(scope="module")
def planted():
    """Features [300, 24] of 3 classes (100 each); class 2 holds 20 poisons, a compact
    cluster shifted by 8 along one direction (what a backdoor does to the target label).
    Classes 0 and 1 are clean but bimodal (40 / 60, a natural sub-style), so that
    k-means has one well-defined answer in every class and "smaller" and
    "relative_size" differ there."""
    g = gen(5)
    n, d = 300, 24
    feats = torch.randn(n, d, generator=g)
    labels = torch.arange(n) % 3
    for c in (0, 1):
        style = torch.randn(d, generator=g)
        feats[(labels == c).nonzero().squeeze(1)[:40]] += 7.0 * style / style.norm()
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    poison = (labels == 2).nonzero().squeeze(1)[-20:]
    feats[poison] = 0.3 * feats[poison] + 8.0 * direction
    is_poison = torch.zeros(n, dtype=torch.bool)
    is_poison[poison] = True
    # Centre every class (what the paper's scores do anyway): ART 1.20.1 projects the
    # *uncentred* features, which ranks the same examples only when the class mean is 0.
    for c in range(3):
        feats[labels == c] -= feats[labels == c].mean(0)
    return feats, labels, is_poison


# ------------------------------------------------------------- reference algorithms


def reference_spectral(feats: np.ndarray, labels: np.ndarray, frac: float) -> set[int]:
    """ART's SpectralSignatureDefense rule, rebuilt in numpy: flags per class."""
    out = set()
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        m = feats[idx] - feats[idx].mean(0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        score = (m @ vt[:1].T)[:, 0] ** 2
        cutoff = np.quantile(score, max(1 - frac, 0.0))
        out |= set(idx[~(score < cutoff)].tolist())
    return out


def reference_clustering(feats: np.ndarray, labels: np.ndarray, nb_dims: int, analysis: str) -> set[int]:
    """ART's ActivationDefence (reduce="PCA", KMeans, 2 clusters), rebuilt with sklearn."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    out = set()
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        act = feats[idx]
        red = PCA(n_components=nb_dims).fit_transform(act) if act.shape[1] > nb_dims else act
        clusters = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(red)
        sizes = np.bincount(clusters, minlength=2)
        if analysis == "smaller":
            bad = {int(np.argmin(sizes))}
        else:
            bad = set(np.nonzero(np.round(sizes / sizes.sum(), 2) < 0.35)[0].tolist())
        out |= set(idx[np.isin(clusters, list(bad))].tolist())
    return out


# ------------------------------------------------------------- spectral signatures


def test_spectral_signatures_match_reference_rule(planted):
    feats, labels, is_poison = planted
    frac = 1.5 * 20 / 100  # 1.5 x the poison share of the target class, as Tran et al.
    ours = spectral_signatures(feats, labels, remove_fraction=frac)
    expected = reference_spectral(feats.double().numpy(), labels.numpy(), frac)
    assert len(expected) == 90                       # 30 per class
    assert set(ours.flagged.nonzero().squeeze(1).tolist()) == expected
    assert detection_scores(ours.flagged, is_poison)[0] == 1.0


def test_spectral_removal_curve_matches_filter(planted):
    feats, labels, is_poison = planted
    res = spectral_signatures(feats, labels, remove_fraction=0.3)
    fr = [0.0, 0.1, 0.2, 0.3, 0.5]
    curve = removal_curve(res.scores, labels, is_poison, fr)
    assert curve["fraction"] == fr
    assert curve["removed"] == [0, 30, 60, 90, 150]
    # At 0.2 of each class (20 per class) the 20 poisons are exactly class 2's flags.
    assert curve["recall"][2] == 1.0 and curve["precision"][2] == pytest.approx(20 / 60)
    assert curve["recall"][0] == 0.0
    assert curve["recall"] == sorted(curve["recall"])
    again = spectral_signatures(feats, labels, remove_fraction=0.3)
    assert curve["recall"][3] == detection_scores(again.flagged, is_poison)[0]


# ------------------------------------------------------------- activation clustering


@pytest.mark.parametrize("analysis", ["relative_size", "smaller"])
def test_activation_clustering_matches_reference(planted, analysis):
    feats, labels, is_poison = planted
    ours = activation_clustering(feats, labels, n_dims=10, analysis=analysis)
    expected = reference_clustering(feats.double().numpy(), labels.numpy(), 10, analysis)
    assert set(ours.flagged.nonzero().squeeze(1).tolist()) == expected
    assert [sorted(s) for s in ours.sizes.tolist()] == [[40, 60], [40, 60], [20, 80]]
    if analysis == "relative_size":
        # Only class 2 splits off a cluster under 35 %: exactly the planted poisons.
        assert torch.equal(ours.flagged, is_poison)
        assert ours.poisonous.any(1).tolist() == [False, False, True]
        assert ours.removed_per_class.tolist() == [0, 0, 20]
    else:
        # The smaller cluster of every class: the clean sub-style too (ART's default).
        assert ours.removed_per_class.tolist() == [40, 40, 20]
        assert bool(ours.flagged[is_poison].all())


def test_kmeans2_separates_two_blobs_deterministically():
    g = gen(1)
    z = torch.cat([torch.randn(30, 3, generator=g), torch.randn(70, 3, generator=g) + 6.0])
    a = kmeans2(z)
    assert sorted(torch.bincount(a).tolist()) == [30, 70]
    assert len(set(a[:30].tolist())) == 1 and len(set(a[30:].tolist())) == 1
    assert torch.equal(a, kmeans2(z))


def test_art_agrees_on_planted_case(planted):
    """The same flagged indices as ART's own defences (only where ART is installed)."""
    pytest.importorskip("art")
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    feats, labels, _ = planted

    class Fixed:
        """An ART classifier stand-in whose last layer's activations are the planted features."""
        layer_names = ["features"]
        nb_classes = 3

        def get_activations(self, x, layer=None, batch_size=128, framework=False):
            return feats.double().numpy()[np.asarray(x, dtype=int).ravel()]

    x_ids = np.arange(len(labels)).reshape(-1, 1)
    onehot = np.eye(3)[labels.numpy()]
    frac = 1.5 * 20 / 100
    ssd = SpectralSignatureDefense(Fixed(), x_ids, onehot, expected_pp_poison=20 / 100, eps_multiplier=1.5)
    _, clean = ssd.detect_poison()
    ours = spectral_signatures(feats, labels, remove_fraction=frac)
    assert set(np.nonzero(np.asarray(clean) == 0)[0].tolist()) == set(ours.flagged.nonzero().squeeze(1).tolist())
    # "smaller" only: ART 1.20.1's "relative-size" analysis raises under numpy 2 for a
    # class with no small cluster (`cluster_id in poison_clusters` on an empty array).
    ad = ActivationDefence(Fixed(), x_ids, onehot)
    _, clean = ad.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller")
    ours = activation_clustering(feats, labels, n_dims=10, analysis="smaller")
    assert set(np.nonzero(np.asarray(clean) == 0)[0].tolist()) == set(ours.flagged.nonzero().squeeze(1).tolist())


# ------------------------------------------------------------- a backdoored digits model


def _backdoored_digits(source_class):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    x_tr, y_tr, x_cl, y_cl = x[:1400], y[:1400], x[1400:], y[1400:]
    trig = P.make_trigger(2, 1, "square")
    ps = P.badnets(x_tr, y_tr, rate=60 / 1400, target_class=0, source_class=source_class, trigger=trig,
                   num_classes=10, generator=gen(3))
    model = models.build("cnn", in_shape=(1, 8, 8), num_classes=10, seed=0)
    models.train(model, ps.x, ps.y, epochs=25, batch_size=32, lr=2e-3, seed=0, progress=False)
    return model.eval(), ps, trig, x_cl, y_cl


@pytest.fixture(scope="module")
def backdoored_digits():
    """A CNN trained on sklearn's digits with a source-specific BadNets trigger (2x2
    white square, bottom-right) on 60 images of class 7 relabelled 0, the variant Tran et
    al. and Chen et al. evaluate; a held-out clean split (397 images)."""
    return _backdoored_digits(7)


@pytest.fixture(scope="module")
def backdoored_digits_all_to_one():
    """The same with Gu et al.'s all-to-one trigger (60 images of any class but 0): the
    backdoor Neural Cleanse looks for, one patch that sends *every* input to 0. (A
    source-specific trigger only moves class 7, so every class's minimal trigger is
    about as small: Wang et al. leave such partial backdoors aside.)"""
    return _backdoored_digits(None)


def test_backdoor_took_on_digits(backdoored_digits):
    model, ps, trig, x_cl, y_cl = backdoored_digits
    assert models.accuracy(model, x_cl, y_cl) > 0.9
    assert P.backdoor_success(model, x_cl, y_cl, target_class=0, trigger=trig, source_class=7) > 0.9


def test_activation_clustering_finds_planted_poisons_on_digits(backdoored_digits):
    model, ps, *_ = backdoored_digits
    reps = representations(model, ps.x)
    res = activation_clustering(reps, ps.y, n_dims=10)
    recall, precision = detection_scores(res.flagged, ps.is_poison)
    assert bool(res.poisonous[0].any())         # the target label splits off a small cluster
    assert recall >= 0.9 and precision >= 0.5


def test_neural_cleanse_freezes_a_class_whose_loss_goes_non_finite():
    # From the optimiser's 15th forward call on, the rows stamped with class 0's trigger
    # (the first block of each batch) come back NaN: class 0 stops there with a finite
    # mask, the other classes are bit-equal to a healthy run, no L1 or index is NaN.
    healthy = models.build("mlp", in_shape=(1, 8, 8), num_classes=3, hidden=(16,), seed=0).eval()
    k, batch = 3, 8

    class Flaky(torch.nn.Module):
        calls = 0

        def forward(self, z):
            out = healthy(z)
            if z.shape[0] != k * batch:       # the final success check: healthy
                return out
            Flaky.calls += 1
            return torch.cat([out[:batch] * float("nan"), out[batch:]]) if Flaky.calls >= 15 else out

    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(num_classes=k, steps=40, batch_size=batch, window=10, success_threshold=0.5)
    nc = neural_cleanse(Flaky(), x, **kw)
    ref = neural_cleanse(healthy, x, **kw)
    assert nc.diverged.tolist() == [True, False, False] and not bool(ref.diverged.any())
    assert bool(torch.isfinite(nc.l1).all()) and bool(torch.isfinite(nc.anomaly_index).all())
    assert bool(torch.isfinite(nc.masks).all()) and not torch.equal(nc.masks[0], ref.masks[0])
    assert torch.equal(nc.masks[1:], ref.masks[1:]) and torch.equal(nc.patterns[1:], ref.patterns[1:])


def test_neural_cleanse_flags_the_planted_target_class(backdoored_digits_all_to_one):
    model, ps, trig, x_cl, y_cl = backdoored_digits_all_to_one
    assert P.backdoor_success(model, x_cl, y_cl, target_class=0, trigger=trig) > 0.9
    nc = neural_cleanse(model, x_cl, num_classes=10, steps=300, batch_size=32)
    assert 0 in nc.flagged_classes
    assert int(nc.l1.argmin()) == 0                   # the smallest reversed trigger is the backdoor's
    assert float(nc.l1[0]) < 3 * trig.numel()         # about the planted 3x3 patch, not a whole digit
    assert float(nc.success[0]) >= 0.9
    assert nc.masks.shape == (10, 8, 8) and nc.patterns.shape == (10, 1, 8, 8)
    assert float(nc.masks.min()) >= 0 and float(nc.masks.max()) <= 1
    filt = trigger_neuron_filter(model, ps.x, ps.y, x_cl, y_cl, nc, target_classes=[0])
    recall, precision = detection_scores(filt.flagged, ps.is_poison)
    # Calibrated to flag 5 % of clean class-0 images: most of what it flags are poisons,
    # and it finds far more than 5 % of them (the top 1 % of 128 neurons is 2 neurons).
    assert precision >= 0.5 and recall >= 0.3
    assert bool((ps.y[filt.flagged] == 0).all())       # only the flagged label's examples
    none = trigger_neuron_filter(model, ps.x, ps.y, x_cl, y_cl, nc, target_classes=[])
    assert not bool(none.flagged.any())


def test_anomaly_index_is_mad_scaled():
    l1 = torch.tensor([10.0, 50, 52, 48, 51, 49, 50, 53, 47, 50])
    idx = anomaly_index(l1)
    med = 50.0
    mad = 1.4826 * float(np.median(np.abs(l1.numpy() - med)))
    assert float(idx[0]) == pytest.approx(40 / mad, rel=1e-4)
    assert float(idx[1]) == pytest.approx(0.0)
    assert anomaly_index(torch.full((5,), 3.0)).tolist() == [0.0] * 5


# ------------------------------------------------------------- bad parameters


@pytest.mark.parametrize("call, needle", [
    (lambda f, y: activation_clustering(f, y, n_dims=0), "n_dims=0"),
    (lambda f, y: activation_clustering(f, y, reduce="tsne"), "reduce='tsne'"),
    (lambda f, y: activation_clustering(f, y, analysis="distance"), "analysis='distance'"),
    (lambda f, y: activation_clustering(f, y, size_threshold=0.7), "size_threshold=0.7"),
    (lambda f, y: activation_clustering(f, y, size_threshold=float("nan")), "size_threshold=nan"),
    (lambda f, y: activation_clustering(f.clone().fill_(float("inf")), y), "finite"),
    (lambda f, y: activation_clustering(f[:, 0], y), "features"),
    (lambda f, y: activation_clustering(f, y.float()), "labels"),
    (lambda f, y: neural_cleanse(None, torch.rand(4, 1, 8, 8), num_classes=1), "num_classes=1"),
    (lambda f, y: neural_cleanse(None, torch.rand(4, 1, 8, 8), num_classes=3, steps=0), "steps=0"),
    (lambda f, y: neural_cleanse(None, torch.rand(4, 1, 8, 8), num_classes=3, lr=float("inf")), "lr=inf"),
    (lambda f, y: neural_cleanse(None, torch.rand(4, 1, 8, 8) * 2, num_classes=3), r"\[0, 1\]"),
    (lambda f, y: neural_cleanse(None, torch.rand(4, 64), num_classes=3), "x must be"),
    (lambda f, y: removal_curve(f[:, 0], y, y == 0, [1.5]), "fractions"),
])
def test_bad_parameters_raise(planted, call, needle):
    feats, labels, _ = planted
    with pytest.raises(ConfigError, match=needle):
        call(feats, labels)

