"""protocols.extraction: the data layout of notebook 01, matched queries, PRADA tables."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from threatlab.attacks import extraction as ex
from threatlab.defenses.prada import prada
from threatlab.errors import ConfigError
from threatlab.protocols import extraction as px

SHAPE = (1, 4, 5)
D, K = 20, 4
FIT = dict(arch="mlp", arch_params={"hidden": [8]}, max_epochs=2, min_steps=4, batch_size=16)


def small_mlp(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, K)).eval()


def random_lr(seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(D, K)
    with torch.no_grad():
        lin.weight.mul_(10)
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_other_dataset_is_the_knockoff_pool():
    assert px.other_dataset("mnist") == "fashion_mnist" and px.other_dataset("fashion_mnist") == "mnist"
    with pytest.raises(ConfigError, match="dataset='cifar10'"):
        px.other_dataset("cifar10")


def test_attacker_data_layout_is_disjoint():
    t = px.attacker_data("mnist", n_train=100, n_pool=50, n_eval=30, stream_length=20, calibration_clients=2,
                         benign_clients=2)
    from threatlab import data

    x_all, _ = data.load("mnist", "train")
    x_test, _ = data.load("mnist", "test")
    assert torch.equal(t.x_train, x_all[:100]) and torch.equal(t.pool, x_all[-50:])
    assert torch.equal(t.calibration_streams[0], x_all[100:120]) and torch.equal(t.calibration_streams[1], x_all[120:140])
    assert torch.equal(t.x_eval, x_test[:30]) and torch.equal(t.benign_streams[1], x_test[50:70])
    assert t.ood_dataset == "fashion_mnist" and t.x_ood.shape[0] == 50
    fash, _ = data.load("fashion_mnist", "train", n=50)
    assert torch.equal(t.x_ood, fash)


@pytest.mark.parametrize("kw, match", [
    (dict(n_train=40000, n_pool=10000, calibration_clients=1, stream_length=1000), "must be disjoint"),
    (dict(n_eval=9000, benign_clients=2, stream_length=1000), "test images"),
    (dict(n_pool=0), "n_pool=0"),
])
def test_attacker_data_refuses_overlaps(kw, match):
    base = dict(n_train=100, n_pool=50, n_eval=30, stream_length=20, calibration_clients=1, benign_clients=1)
    with pytest.raises(ConfigError, match=match):
        px.attacker_data("mnist", **{**base, **kw})


def test_equation_solving_evidence_on_a_linear_victim():
    pool = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(0))
    x_eval = torch.rand(100, *SHAPE, generator=torch.Generator().manual_seed(1))
    lr, mlp = random_lr(), small_mlp()
    labels = {"lr": lr(x_eval).argmax(1), "mlp": mlp(x_eval).argmax(1)}
    e = px.equation_solving_evidence(lr, mlp, pool, x_eval, labels, sub_kw=FIT, seeds=[1, 2, 3])
    assert e["lr_agreement"] == 1.0 and e["lr_queries"] == D + 1 == e["mlp_queries"] == e["mlp_substitute_queries"]
    assert e["lr_max_param_error"] < 1e-3 and e["lr_d"] == D
    assert e["mlp_shared_queries"] is True and e["mlp_distinct_queries"] == D + 1 == e["mlp_noise_queries"]


def _curve(agreement, budgets=(100, 200, 400)):
    return ex.ExtractionCurve(list(budgets), list(budgets), list(agreement), [], torch.zeros(0))


def test_matched_queries_reads_each_curve():
    q = px.matched_queries({"a": _curve([0.6, 0.7, 0.9]), "b": _curve([0.85, 0.9, 0.95]), "c": _curve([0.1] * 3)},
                           [0.8, 0.85])
    assert q["levels"] == [0.8, 0.85]
    assert q["queries"]["a"][0] == pytest.approx((200 * 400) ** 0.5) and q["reached"]["a"] == [True, True]
    assert q["queries"]["b"] == [100.0, 100.0]
    assert q["queries"]["c"] == [800.0, 800.0] and q["reached"]["c"] == [False, False]


def test_mode_curves_share_the_query_order_and_log_only_probs():
    pool = torch.rand(120, *SHAPE, generator=torch.Generator().manual_seed(2))
    x_eval = torch.rand(50, *SHAPE, generator=torch.Generator().manual_seed(3))
    victim = small_mlp()
    curves, oracles = px.mode_curves(victim, pool, [20, 40], eval_x=x_eval, eval_labels=victim(x_eval).argmax(1),
                                     decimals=1, seed=5, sub_kw=FIT)
    assert set(curves) == set(px.F02_MODES)
    assert torch.equal(curves["probs"].x_query, curves["label"].x_query)
    assert oracles["probs"].query_log()[0].shape[0] == 40 and not oracles["label"].keep_log


def test_strategy_curves_count_and_log_every_query():
    pool = torch.rand(120, *SHAPE, generator=torch.Generator().manual_seed(4))
    victim = small_mlp()
    x_eval = pool[:30]
    curves, oracles = px.strategy_curves(victim, {"noise": pool, "jacobian": pool, "active": pool}, [20, 40],
                                         eval_x=x_eval, eval_labels=victim(x_eval).argmax(1),
                                         seeds={"noise": 1, "jacobian": 2, "active": 3}, sub_kw=FIT,
                                         extra={"jacobian": {"lam": 0.1}})
    for name, o in oracles.items():
        xs, ys = o.query_log()
        assert xs.shape[0] == o.total == 40 and torch.equal(ys, victim(xs).argmax(1))
        assert torch.equal(xs, curves[name].x_query) or name == "active"


def test_calibrated_delta_flags_no_calibration_client_and_rows_agree_with_prada():
    victim = small_mlp()
    g = torch.Generator().manual_seed(6)
    streams = [torch.rand(300, *SHAPE, generator=g) for _ in range(3)]
    delta, mins = px.calibrate_delta(victim, streams)
    assert delta == min(mins) and len(mins) == 3
    for x in streams:
        assert not prada(*px.benign_stream(victim, x), delta=delta).detected
    rows, results = px.prada_rows({"c1": px.benign_stream(victim, streams[0])}, delta=delta)
    assert rows[0]["stream"] == "c1" and rows[0]["detected"] is False and rows[0]["queries"] == 300
    assert rows[0]["min_w"] == pytest.approx(mins[0])
    with pytest.raises(ConfigError, match="too short"):
        px.calibrate_delta(victim, [streams[0][:50]])
    with pytest.raises(ConfigError, match="at least one"):
        px.calibrate_delta(victim, [])


def test_transfer_evidence_has_equal_linf_norms():
    victim = small_mlp()
    x = torch.rand(30, *SHAPE, generator=torch.Generator().manual_seed(7)) * 0.5 + 0.25
    y = victim(x).argmax(1)
    e = px.transfer_evidence([victim, small_mlp(2)], victim, x, y, eps=0.2, pgd_steps=5, seeds=(1, 2))
    assert len(e["transfer_success"]) == 2 and e["transfer_success"][0] > 0.5    # white-box on the victim itself
    assert e["noise_linf_min"] == pytest.approx(0.2) and e["noise_linf_max"] == pytest.approx(0.2)
    assert max(e["transfer_linf_max"]) <= 0.2 + 1e-6 and e["victim_queries"] == 90 and e["n_examples"] == 30
