"""PRADA (Juuti et al. 2019, arXiv 1805.02628) and the oracle's query log it reads.

Known answers: a hand-worked growing set on five points; a synthetic Jacobian-
augmentation stream (Papernot et al. 2017) asked through a logging BlackBox is flagged
within its first tests; a stream of natural digits the victim never saw is not.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from threatlab import models
from threatlab.attacks import extraction as ex
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox
from threatlab.defenses.prada import prada, shapiro_w


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def digits_victim(digits):
    x, y = digits
    perm = torch.randperm(x.shape[0], generator=gen(0))
    xtr, ytr = x[perm[:1000]], y[perm[:1000]]
    victim = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=[64])
    opt = torch.optim.Adam(victim.parameters(), 1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(victim(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return victim.eval(), x[perm[1000:]]


# ------------------------------------------------------------------- the query log


def test_blackbox_keeps_a_query_log_only_when_asked():
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval()
    x1, x2 = torch.rand(4, 1, 2, 3, generator=gen(1)), torch.rand(3, 1, 2, 3, generator=gen(2))
    bb = BlackBox(net, mode="label", keep_log=True, max_batch=2)
    a1, a2 = bb(x1), bb(x2, ids=torch.tensor([0, 1, 9]))
    xs, ys = bb.query_log()
    assert torch.equal(xs, torch.cat([x1, x2])) and torch.equal(ys, torch.cat([a1, a2]))
    assert bb.total == 7                               # counting is unchanged
    # Scores modes log the victim's top-1 label, not the (rounded) scores.
    bp = BlackBox(net, mode="rounded", decimals=0, keep_log=True)
    bp(x1)
    assert torch.equal(bp.query_log()[1], net(x1).argmax(1))
    bb.reset()
    assert bb.query_log()[0].shape[0] == 0 and bb.query_log()[1].dtype == torch.long
    plain = BlackBox(net)
    plain(x1)
    assert plain._log == []
    with pytest.raises(ValueError, match="keep_log=False"):
        plain.query_log()
    with pytest.raises(ConfigError, match="keep_log"):
        BlackBox(net, keep_log=1)


def test_a_refused_query_is_not_logged():
    from threatlab.errors import QueryBudgetExceeded

    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval()
    bb = BlackBox(net, keep_log=True, total_budget=5)
    bb(torch.rand(4, 1, 2, 3))
    with pytest.raises(QueryBudgetExceeded):
        bb(torch.rand(2, 1, 2, 3))
    assert bb.query_log()[0].shape[0] == 4


# ------------------------------------------------------------------ the algorithm


def test_growing_set_and_thresholds_by_hand():
    # One class, points on a line: 0, 1, 3, 3.5, 3.6.
    # x1: d=1 > T=0, joins; admitted [0, 1] -> T = max(0, 0.5 - 0.5) = 0.
    # x2: d=2 > 0, joins; admitted [0, 1, 2] -> T = 1 - sqrt(2/3) = 0.1835.
    # x3: d=0.5 > T, joins; admitted [0, 1, 2, .5] -> mean - std = 0.1355 < T: T stays.
    # x4: d=0.1 < T: recorded, not added.
    pts = torch.tensor([[0.0, 0], [1, 0], [3, 0], [3.5, 0], [3.6, 0]])
    res = prada(pts, torch.zeros(5, dtype=torch.long), min_samples=3, min_per_class=1, test_every=100)
    assert math.isnan(res.min_distances[0])
    assert np.allclose(res.min_distances[1:], [1, 2, 0.5, 0.1], atol=1e-9)
    assert res.growing_set_size == 4 and res.queries == 5 and res.tested_at.size == 0
    # Distances are per predicted class: a second class starts its own set.
    res = prada(pts, torch.tensor([0, 1, 0, 1, 0]), min_samples=3, test_every=100)
    assert math.isnan(res.min_distances[1]) and res.min_distances[2] == pytest.approx(3.0)
    assert res.min_distances[3] == pytest.approx(2.5) and res.min_distances[4] == pytest.approx(0.6)


def test_shapiro_statistic_separates_normal_from_clustered_distances():
    rng = np.random.default_rng(0)
    normal = rng.normal(5.0, 1.0, 500)
    w, used = shapiro_w(normal)
    assert w > 0.99 and used >= 495
    # Jacobian-like: most distances at one small step size, a few natural ones.
    clustered = np.r_[np.full(400, 0.8) + rng.normal(0, 0.01, 400), rng.normal(5.0, 1.0, 100)]
    assert shapiro_w(clustered)[0] < 0.7
    assert shapiro_w(np.full(200, 0.8)) == (0.0, 200)          # zero spread: not normal


def test_tests_start_after_enough_distances_and_run_every_k_queries():
    x = torch.rand(400, 16, generator=gen(3))
    lab = torch.arange(400) % 4
    res = prada(x, lab, test_every=10, min_samples=100, min_per_class=10)
    # 4 classes: query t has t - 4 distances; the first test with > 100 of them is t = 110.
    assert res.tested_at[0] == 110 and np.all(np.diff(res.tested_at) == 10)
    assert res.shapiro_w.shape == res.tested_at.shape


# --------------------------------------------------------------- known answers


def test_flags_a_jacobian_augmentation_stream_and_passes_natural_digits(digits):
    victim, x_unseen = digits_victim(digits)
    # Benign client: natural test digits in their own order, labels from the victim.
    benign = prada(x_unseen, victim(x_unseen).argmax(1), delta=0.9)
    assert not benign.detected and benign.tested_at.size > 50
    assert benign.shapiro_w.min() > 0.93
    # Attacker: Jacobian augmentation from 20 seed digits, asked through a logging oracle.
    bb = BlackBox(victim, mode="label", keep_log=True)
    ex.jacobian_augmentation(bb, x_unseen[:20], budgets=[20, 40, 80, 160, 320, 640], lam=0.1,
                             arch_params={"hidden": [32]}, max_epochs=5, min_steps=20, generator=gen())
    xs, ys = bb.query_log()
    assert xs.shape[0] == bb.total == 640
    attack = prada(xs, ys, delta=0.9)
    # Flagged at its very first test (W about 0.66 there). Later rounds augment
    # augmented points and W drifts back up (about 0.96 at 640 queries): detection is
    # an early-stream property, which is why PRADA acts on the first flag.
    assert attack.detected and attack.queries_to_detection == attack.tested_at[0]
    assert attack.shapiro_w[0] < 0.8


@pytest.mark.parametrize("kwargs, match", [
    (dict(delta=1.0), "delta=1.0"),
    (dict(delta=0), "delta=0"),
    (dict(test_every=0), "test_every=0"),
    (dict(min_samples=2), "min_samples=2"),
    (dict(outlier_std=0), "outlier_std=0"),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        prada(torch.rand(5, 3), torch.zeros(5, dtype=torch.long), **kwargs)


def test_registered_as_a_defense():
    from threatlab import defenses

    assert defenses.get("prada") is prada and "prada" in defenses.names()


def test_bad_streams_are_refused():
    with pytest.raises(ConfigError, match="labels"):
        prada(torch.rand(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="labels"):
        prada(torch.rand(5, 3), torch.zeros(5))
    with pytest.raises(ConfigError, match="NaN"):
        prada(torch.full((5, 3), float("nan")), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ConfigError, match="floating"):
        prada(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long))
