"""Notebook 02's protocols on tiny data: the row bookkeeping that decides F05-F08.

Shokri's protocol must keep the attacker's rows apart from the candidates at every
step; LiRA's turns must pool scores with the right membership; the DP table's
accountants must agree where they should; the inversion and leakage sweeps must return
what the notebook records.
"""
from __future__ import annotations

import pytest
import torch

from threatlab import ensemble, models
from threatlab.errors import ConfigError
from threatlab.protocols import inversion as proto


@pytest.fixture(scope="module")
def pool():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(240, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (240,), generator=g)
    return x, y


@pytest.fixture(scope="module")
def pools(pool):
    x, y = pool
    return proto.membership_pools(x, y, n_candidates=120, n_models=4, epochs=40, arch_params={"hidden": [64]},
                                  num_classes=10, seed=0, batch_size=30, lr=3e-3)


def test_pools_keep_the_attacker_rows_apart(pools):
    sp = pools.splits
    a, b = set(sp.candidates.tolist()), set(sp.attacker.tolist())
    assert a.isdisjoint(b) and len(a | b) == 240
    assert pools.reference.size == 5 and pools.shadows.size == 4
    assert pools.reference_in.shape == (5, 120) and (pools.reference_in.sum(1) == 60).all()
    assert set(sp.shadow_indices().flatten().tolist()) <= b


def test_membership_scores_pool_every_turn_with_its_own_truth(pools):
    scores, truth = proto.membership_scores(pools, n_targets=2, seed=0)
    assert set(scores) == set(proto.ATTACKS)
    assert truth.shape == (240,) and torch.equal(truth[:120], pools.reference_in[0]) \
        and torch.equal(truth[120:], pools.reference_in[1])
    for k, s in scores.items():
        assert s.shape == (240,) and torch.isfinite(s).all(), k
    rows = proto.membership_table(scores, truth)
    by = {r["attack"]: r for r in rows}
    # Random labels: only memorisation fits them, so calibrated and metric attacks both see it.
    assert by["loss"]["auc"] > 0.8 and by["lira"]["auc"] > 0.8 and by["shadow"]["auc"] > 0.7
    assert 0 <= by["label_only"]["tpr_at_0.1%"] <= 1
    with pytest.raises(ConfigError, match="n_targets=5"):
        proto.membership_scores(pools, n_targets=5)


def test_dp_epsilons_rdp_agrees_with_opacus_and_prv_is_tighter():
    e = proto.dp_epsilons(0.1, 1.0, 100, 1e-5)
    assert e["rdp"] == pytest.approx(e["rdp_opacus"], rel=0.02) and e["rdp"] >= e["rdp_opacus"] * (1 - 1e-9)
    assert 0 < e["prv"] < e["rdp_opacus"]


def test_overfit_sweep_rows(digits):
    x, y = digits
    rows = proto.overfit_sweep(x[:1000], y[:1000], x[1000:1200], y[1000:1200], sizes=[200, 50], epochs=30,
                               n_eval=40, holdout=(800, 1000), dataset="digits", seed=0,
                               arch_params={"hidden": [32]}, num_classes=10)
    assert [r["n_train"] for r in rows] == [200, 50]
    assert rows[1]["gap"] > rows[0]["gap"] - 0.05 and all(0 <= r["auc"] <= 1 for r in rows)
    with pytest.raises(ConfigError, match="holdout"):
        proto.overfit_sweep(x, y, x, y, sizes=[900], epochs=1, n_eval=5, holdout=(800, 1000), dataset="digits",
                            seed=0, arch_params={}, num_classes=10)


def test_invert_classes_and_leakage_sweep(digits):
    from threatlab.attacks import inversion

    x, y = digits
    lin = models.build("mlp", in_shape=(1, 8, 8), hidden=[], seed=0)
    models.train(lin, x, y, epochs=5, seed=0, progress=False)
    means = inversion.class_means(x, y, 10)
    out = proto.invert_classes({"shallow": lin}, lin, means, restarts=1, steps=20, lr=0.5, samples=4, sigma=0.1,
                               seed=0)
    assert set(out) == {"confidences/shallow", "label/shallow"}
    conf = out["confidences/shallow"]
    assert conf["evaluator_acc"] >= 0.9 and conf["images"].shape == (10, 1, 8, 8)
    assert conf["queries_per_image"] == 20 * 8 + 1 and 0 <= conf["prototype_match"] <= 1
    net = models.build("lenet_sigmoid", in_shape=(1, 8, 8), seed=0)
    leak = proto.leakage_sweep(net, x[:8], y[:8], clients=2, batch_sizes=[1, 2], noise=[0.0, 10.0], clip=10.0,
                               steps=30, restarts=1, seed=0)
    assert len(leak["psnr_vs_batch"]) == 2 and len(leak["psnr_vs_noise"]) == 2
    assert leak["label_acc_batch1"] == 1.0 and leak["psnr_vs_noise"][0] > leak["psnr_vs_noise"][1]
    assert set(leak["images"]) == {"original", "sigma=0.0", "sigma=10.0"}
