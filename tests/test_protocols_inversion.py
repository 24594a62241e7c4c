"""Notebook 02's protocols on tiny data: the row bookkeeping that decides F05-F08.

Shokri's protocol must keep the attacker's rows apart from the candidates at every
step; LiRA's turns must pool scores with the right membership; the DP table's
accountants must agree where they should; the inversion and leakage sweeps must return
what the notebook records.
"""
from __future__ import annotations

import importlib
import math

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
    assert leak["no_reconstruction_vs_batch"] == [0, 0] and leak["diverged_vs_noise"] == [0, 0]


def test_leakage_sweep_leaves_clients_without_reconstruction_out_of_the_psnr(digits, monkeypatch):
    # A stand-in DLG (the kernel's own divergence tests are in test_inversion.py): client
    # 0 is reconstructed exactly in the batch sweep, client 1 never (every restart
    # diverged), and no client at all in the noise sweep (the runs with a clip).
    from threatlab import attacks
    from threatlab.attacks import inversion

    x, y = digits
    x, y = x[:4], y[:4]

    def fake_dlg(model, xl, yl, *, batch_size, clip=None, restarts, **_):
        k = xl.shape[0] // batch_size
        ok = torch.zeros(k, dtype=torch.bool) if clip is not None else torch.arange(k) == 0
        rec = torch.where(ok.repeat_interleave(batch_size).view(-1, 1, 1, 1), xl, torch.full_like(xl, math.nan))
        return inversion.LeakageResult(rec, yl.clone(), torch.zeros(k), torch.zeros(k, dtype=torch.int64),
                                       diverged=torch.where(ok, 0, restarts), reconstructed=ok)

    monkeypatch.setattr(attacks, "get", lambda name: fake_dlg)
    leak = proto.leakage_sweep(None, x, y, clients=2, batch_sizes=[1, 2], noise=[0.0, 1.0], clip=1.0, steps=1,
                               restarts=3, seed=0)
    assert leak["psnr_vs_batch"] == [120.0, 120.0]          # client 0 only: exact (PSNR capped at 120 dB)
    assert leak["no_reconstruction_vs_batch"] == [1, 1] and leak["diverged_vs_batch"] == [3, 3]
    assert leak["psnr_vs_noise"] == [None, None] and leak["no_reconstruction_vs_noise"] == [2, 2]
    assert leak["diverged_vs_noise"] == [6, 6] and leak["label_acc_batch1"] == 1.0


# ---------------------------------------------------------------- notebook 02's cells as protocols


def test_check_split_fits_names_every_range():
    proto.check_split_fits(100, overfit_sizes=[40, 20], n_eval=10, n_pool=25, inv_train=50, leak_train=100,
                           dataset="mnist")  # 40 + 10 + 50 = 100 rows exactly: fits
    with pytest.raises(ConfigError, match=r"= 101, 2 \* inv_train = 100 and leak_train = 100 must be <= 100 "
                                          r"\(mnist training split\)"):
        proto.check_split_fits(100, overfit_sizes=[41, 20], n_eval=10, n_pool=25, inv_train=50, leak_train=100,
                               dataset="mnist")
    with pytest.raises(ConfigError, match="inv_train = 102"):
        proto.check_split_fits(100, overfit_sizes=[1, 1], n_eval=1, n_pool=1, inv_train=51, leak_train=1,
                               dataset="mnist")
    with pytest.raises(ConfigError, match="n_rows=-1"):
        proto.check_split_fits(-1, overfit_sizes=[1, 1], n_eval=1, n_pool=1, inv_train=1, leak_train=1,
                               dataset="mnist")


MC_KW = dict(n_candidates=120, n_models=2, epochs=5, arch_params={"hidden": [16]}, num_classes=10, seed=3)


def test_membership_comparison_is_pools_then_scores_then_table(pool):
    x, y = pool
    mc = proto.membership_comparison(x, y, n_targets=2, **MC_KW)
    assert [r["attack"] for r in mc.rows] == list(proto.ATTACKS) and set(mc.scores) == set(proto.ATTACKS)
    assert mc.shadow_disjoint is True and mc.seconds > 0
    assert mc.truth.shape == (240,) and torch.equal(mc.truth[:120], mc.pools.reference_in[0]) \
        and torch.equal(mc.truth[120:], mc.pools.reference_in[1])
    # The same numbers as the three steps called one by one (same seed, same streams).
    pools = proto.membership_pools(x, y, **MC_KW)
    scores, truth = proto.membership_scores(pools, n_targets=2, seed=3)
    assert torch.equal(truth, mc.truth)
    for k in proto.ATTACKS:
        assert torch.equal(scores[k], mc.scores[k]), k
    assert proto.membership_table(scores, truth) == mc.rows
    for r in mc.rows:
        assert 0 <= r["auc"] <= 1 and 0 <= r["tpr_at_0.1%"] <= r["tpr_at_1%"] <= 1


def test_membership_comparison_rejects_bad_input_before_training(pool, monkeypatch):
    x, y = pool

    def boom(*a, **k):
        raise AssertionError("trained before validating")
    monkeypatch.setattr(ensemble, "train_ensemble", boom)
    with pytest.raises(ConfigError, match=r"n_targets=3 is outside the allowed range \[1, 2\]"):
        proto.membership_comparison(x, y, n_targets=3, **MC_KW)
    with pytest.raises(ConfigError, match="label_shift=-1"):
        proto.membership_comparison(x, y, n_targets=1, label_shift=-1, **MC_KW)
    with pytest.raises(ConfigError, match="n_candidates=239"):
        proto.membership_comparison(x, y, n_targets=1, **{**MC_KW, "n_candidates": 239})


DP_KW = dict(arch_params={"hidden": [64]}, num_classes=10, epochs=2, lot_size=20, lr=0.5, clip=1.0,
             noise_multiplier=1.0, delta=1e-5, seed=0)


def test_dp_membership_rows(pools, pool):
    from threatlab import metrics

    x, y = pool
    dp = proto.dp_membership(pools, x[:50], y[:50], **DP_KW)
    assert [r["target"] for r in dp.rows] == ["non-private", "DP-SGD"] and dp.seconds > 0
    plain, private = dp.rows
    assert plain["epsilon_rdp"] is None and plain["epsilon_prv"] is None and plain["epsilon_rdp_opacus"] is None
    assert (private["epsilon_rdp"], private["epsilon_rdp_opacus"], private["epsilon_prv"]) == \
        (dp.epsilon["rdp"], dp.epsilon["rdp_opacus"], dp.epsilon["prv"])
    assert 0 < dp.epsilon["prv"] < dp.epsilon["rdp"] and plain["delta"] == private["delta"] == 1e-5
    # 60 members, expected lot 20: q = 1/3, 2 epochs of 3 lots.
    assert dp.epsilon == proto.dp_epsilons(20 / 60, 1.0, 6, 1e-5)
    # The non-private row is reference model 0 attacked alone, truth = its membership.
    s0, _ = proto.membership_scores(pools, n_targets=1, seed=0)
    assert plain["auc_loss"] == metrics.auc(s0["loss"], pools.reference_in[0])
    assert plain["tpr_at_0.1%_lira"] == metrics.tpr_at_fpr(s0["lira"], pools.reference_in[0], 0.001)
    assert private["test_acc"] == models.accuracy(dp.model, x[:50], y[:50])
    assert proto.dp_membership(pools, x[:50], y[:50], **DP_KW).rows == dp.rows      # same seed, same numbers


def test_dp_membership_rejects_bad_input_before_training(pools, pool, monkeypatch):
    # The module itself: threatlab.defenses.dp_sgd (the attribute) is the registered function.
    dp_sgd = importlib.import_module("threatlab.defenses.dp_sgd")

    x, y = pool

    def boom(*a, **k):
        raise AssertionError("trained before validating")
    monkeypatch.setattr(dp_sgd, "dp_sgd_train", boom)
    with pytest.raises(ConfigError, match="lot_size=0"):
        proto.dp_membership(pools, x, y, **{**DP_KW, "lot_size": 0})
    with pytest.raises(ConfigError, match=r"lot_size=61 must be <= 60"):
        proto.dp_membership(pools, x, y, **{**DP_KW, "lot_size": 61})
    with pytest.raises(ConfigError, match="noise_multiplier=0"):
        proto.dp_membership(pools, x, y, **{**DP_KW, "noise_multiplier": 0})


INV_KW = dict(n_train=300, epochs=2, dataset="digits", num_classes=10, restarts=1, steps=5, lr=0.5, samples=2,
              sigma=0.1, seed=0, target_params={"shallow": {"hidden": []}, "deep": {"hidden": [16]}})


def test_class_inversion_trains_disjoint_models_and_inverts(digits):
    from threatlab.attacks import inversion

    x, y = digits
    xt, yt = x[1000:1200], y[1000:1200]
    ci = proto.class_inversion(x[:1000], y[:1000], xt, yt, **INV_KW)
    assert set(ci.results) == {"confidences/shallow", "label/shallow", "confidences/deep", "label/deep"}
    assert [r["api/target"] for r in ci.rows] == list(ci.results)
    for r in ci.rows:
        res = ci.results[r["api/target"]]
        assert (r["evaluator_acc"], r["prototype_match"], r["queries_per_image"]) == \
            (res["evaluator_acc"], res["prototype_match"], res["queries_per_image"])
        assert r["queries_per_image"] == 5 * 2 * 2 + 1 and res["images"].shape == (10, 1, 8, 8)
    assert set(ci.target_test_acc) == {"shallow", "deep"}
    assert ci.target_test_acc["shallow"] == models.accuracy(ci.targets["shallow"], xt, yt)
    assert ci.evaluator_acc == models.accuracy(ci.evaluator, xt, yt) and ci.evaluator.arch == "lenet5"
    # Class means of the targets' rows (the first n_train), not of the evaluator's.
    assert torch.equal(ci.means, inversion.class_means(x[:300], y[:300], 10))
    again = proto.invert_classes(ci.targets, ci.evaluator, ci.means, restarts=1, steps=5, lr=0.5, samples=2,
                                 sigma=0.1, seed=0)
    assert all(torch.equal(again[k]["images"], ci.results[k]["images"]) for k in again)
    assert proto.class_inversion(x[:1000], y[:1000], xt, yt, **INV_KW).rows == ci.rows   # same seed, same numbers


def test_class_inversion_rejects_bad_input_before_training(digits, monkeypatch):
    x, y = digits

    def boom(*a, **k):
        raise AssertionError("trained before validating")
    monkeypatch.setattr(models, "cached", boom)
    with pytest.raises(ConfigError, match=r"n_train=600 is outside the allowed range \[1, 500\]"):
        proto.class_inversion(x[:1000], y[:1000], x, y, **{**INV_KW, "n_train": 600})
    with pytest.raises(ConfigError, match="samples=0"):
        proto.class_inversion(x[:1000], y[:1000], x, y, **{**INV_KW, "samples": 0})
    with pytest.raises(ConfigError, match="target_params"):
        proto.class_inversion(x[:1000], y[:1000], x, y, **{**INV_KW, "target_params": {}})


LEAK_KW = dict(n_train=200, epochs=1, arch_params={"hidden": [16]}, num_classes=10, clients=2, batch_sizes=[1, 2],
               noise=[0.0, 10.0], clip=10.0, steps=10, restarts=1, seed=0)


def test_gradient_leakage_rows_and_baselines(digits):
    from threatlab.attacks import inversion

    x, y = digits
    gl = proto.gradient_leakage(x[:300], y[:300], x[300:400], y[300:400], **LEAK_KW)
    assert list(gl.sweeps) == list(proto.LEAKAGE_TARGETS) == list(gl.seconds)
    assert [r["target"] for r in gl.rows] == ["sigmoid_lenet", "relu_mlp", "baseline: black", "baseline: mean_image"]
    assert gl.baseline == inversion.baseline_psnr(x[300:302], x[:200])
    for r, name in zip(gl.rows[:2], proto.LEAKAGE_TARGETS):
        sw = gl.sweeps[name]
        assert (r["psnr_b1"], r["psnr_b2"]) == tuple(sw["psnr_vs_batch"])
        assert (r["psnr_sigma0.0"], r["psnr_sigma10.0"]) == tuple(sw["psnr_vs_noise"])
        assert r["label_acc_b1"] == sw["label_acc_batch1"] and 0 <= r["test_acc"] <= 1
        assert r["no_reconstruction"] == sum(sw["no_reconstruction_vs_batch"] + sw["no_reconstruction_vs_noise"])
        assert set(sw["images"]) == {"original", "sigma=0.0", "sigma=10.0"}
    for r, k in zip(gl.rows[2:], ("black", "mean_image")):
        assert r == {"target": f"baseline: {k}", "psnr_b1": gl.baseline[k], "psnr_b2": gl.baseline[k]}
    assert proto.gradient_leakage(x[:300], y[:300], x[300:400], y[300:400], **LEAK_KW).rows == gl.rows  # same seed


def test_gradient_leakage_rejects_bad_input_before_training(digits, monkeypatch):
    x, y = digits

    def boom(*a, **k):
        raise AssertionError("trained before validating")
    monkeypatch.setattr(models, "train", boom)
    with pytest.raises(ConfigError, match=r"batch_sizes\[1\]=0"):
        proto.gradient_leakage(x, y, x, y, **{**LEAK_KW, "batch_sizes": [1, 0]})
    with pytest.raises(ConfigError, match=r"noise\[0\]=-1"):
        proto.gradient_leakage(x, y, x, y, **{**LEAK_KW, "noise": [-1.0]})
    with pytest.raises(ConfigError, match="clients=2 x max"):
        proto.gradient_leakage(x, y, x[:3], y[:3], **LEAK_KW)
