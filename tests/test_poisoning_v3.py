"""Oracles for register v3's poisoning pieces (F09 label budgets, F11 Poison Frogs):
exact counts, hand-made feature geometries, one forward-backward step computed by hand
on a linear feature map, and the collision on a small trained network.
"""
from __future__ import annotations

import pytest
import torch

from threatlab import models
from threatlab.attacks import poisoning as P
from threatlab.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def toy():
    """1,000 labels: class 0 has 12 examples, classes 1..4 the rest (so min(B, n_source) bites)."""
    y = torch.cat([torch.zeros(12, dtype=torch.long), 1 + torch.arange(988) % 4])
    y = y[torch.randperm(1000, generator=gen(3))]
    x = torch.rand(1000, 1, 4, 4, generator=gen(4))
    return x, y


# ------------------------------------------------------------------ F09 budgets


@pytest.mark.parametrize("n,f,expect", [(1000, 0.02, 20), (1000, 0.05, 50), (1000, 0.10, 100),
                                        (50, 0.05, 3), (30, 0.05, 2), (10000, 0.05, 500), (7, 0.0, 0)])
def test_label_budget_exact(n, f, expect):
    # 50 * 0.05 = 2.5 -> 3 (halves up, not to even); 30 * 0.05 = 1.5 -> 2.
    assert P.label_budget(n, f) == expect


@pytest.mark.parametrize("budget", [0, 5, 12, 20, 100])
def test_targeted_flip_spends_min_budget_source(toy, budget):
    x, y = toy
    ps = P.targeted_flip(x, y, budget=budget, source=0, target=3, num_classes=5, generator=gen())
    assert ps.n_poison == min(budget, 12)
    assert ps.extra["unspent"] == budget - min(budget, 12)
    assert bool((y[ps.poison_idx] == 0).all()) and bool((ps.y[ps.poison_idx] == 3).all())
    assert torch.equal(ps.y[~ps.is_poison], y[~ps.is_poison]) and torch.equal(ps.x, x)
    assert int((ps.y != y).sum()) == ps.n_poison


@pytest.mark.parametrize("budget", [0, 20, 50, 100])
def test_random_flip_spends_exact_budget(toy, budget):
    x, y = toy
    ps = P.random_flip(x, y, budget=budget, num_classes=5, generator=gen())
    assert ps.n_poison == budget == int((ps.y != y).sum())     # every drawn label really changes
    assert bool(((ps.y >= 0) & (ps.y < 5)).all())


def test_flips_deterministic_from_generator(toy):
    x, y = toy
    for fn, kw in ((P.random_flip, {}), (P.targeted_flip, {"source": 1, "target": 2})):
        a = fn(x, y, budget=50, num_classes=5, generator=gen(7), **kw)
        b = fn(x, y, budget=50, num_classes=5, generator=gen(7), **kw)
        c = fn(x, y, budget=50, num_classes=5, generator=gen(8), **kw)
        assert torch.equal(a.y, b.y) and torch.equal(a.poison_idx, b.poison_idx)
        assert not torch.equal(a.poison_idx, c.poison_idx)


def test_flip_bad_input(toy):
    x, y = toy
    with pytest.raises(ConfigError, match="budget"):
        P.random_flip(x, y, budget=1001, generator=gen())
    with pytest.raises(ConfigError, match="budget"):
        P.targeted_flip(x, y, budget=-1, source=0, target=1)
    with pytest.raises(ConfigError, match="equals source"):
        P.targeted_flip(x, y, budget=5, source=2, target=2)
    with pytest.raises(ConfigError, match="fraction"):
        P.label_budget(100, float("nan"))


# ------------------------------------------------------------------ F11 selection


def test_nearest_class_hand_made():
    # Class means: 0 -> (0, 0), 1 -> (5, 0), 2 -> (0, 2), 3 -> (0, -2): 2 and 3 tie for class 0.
    f = torch.tensor([[0., 1], [0, -1], [5, 0], [5, 0], [0, 2], [0, -2]])
    y = torch.tensor([0, 0, 1, 1, 2, 3])
    assert P.nearest_class(f, y, 0) == 2                       # tie -> lower class id
    assert P.nearest_class(f, y, 1) == 0                       # (0,0) at 5 beats (0,+-2) at sqrt(29)
    with pytest.raises(ConfigError):
        P.nearest_class(f, y, 7)


def test_nearest_rows_hand_made():
    pool = torch.tensor([[3., 0], [1, 0], [-1, 0], [0, 5], [2, 0]])
    q = torch.tensor([[0., 0], [2.1, 0]])
    idx = P.nearest_rows(q, pool, k=3)
    assert idx.tolist() == [[1, 2, 4], [4, 0, 1]]             # rows 1 and 2 tie at 1: lower index first
    with pytest.raises(ConfigError):
        P.nearest_rows(q, torch.tensor([[float("nan"), 0.]]), k=1)


# ------------------------------------------------------------------ F11 collision


class Linear(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def test_one_forward_backward_step_by_hand():
    torch.manual_seed(0)
    w = torch.randn(3, 8) * 0.3
    b = 0.3 + 0.4 * torch.rand(2, 1, 2, 4, generator=gen(1))
    t = 0.3 + 0.4 * torch.rand(2, 1, 2, 4, generator=gen(2))
    beta, mult = 0.5, 0.3
    res = P.poison_frogs(Linear(w), b, torch.tensor([0, 1]), target=t, steps=1, step_size=mult, beta=beta)
    bf, tf = b.flatten(1), t.flatten(1)
    grad = 2 * (bf - tf) @ w.T @ w                             # grad of ||W p - W t||^2 at p = b
    # The first step is `mult` x the Polyak step dist^2 / ||grad||^2.
    lam = (mult * ((bf - tf) @ w.T).pow(2).sum(1) / grad.pow(2).sum(1)).unsqueeze(1)
    expect = ((bf - lam * grad) + lam * beta * bf) / (1 + lam * beta)
    assert torch.allclose(res.x_poison.flatten(1), expect, atol=1e-6)
    assert torch.allclose(res.dist_before, ((bf - tf) @ w.T).norm(dim=1), atol=1e-6)
    assert res.extra["steps_run"].tolist() == [1, 1]


def test_watermark_start_and_default_beta():
    w = torch.randn(3, 8, generator=gen(5))
    b = torch.rand(4, 1, 2, 4, generator=gen(1))
    t = torch.rand(4, 1, 2, 4, generator=gen(2))
    plain = P.poison_frogs(Linear(w), b, torch.zeros(4, dtype=torch.long), target=t, steps=1)
    wm = P.poison_frogs(Linear(w), b, torch.zeros(4, dtype=torch.long), target=t, steps=1, opacity=0.3)
    # A linear f: the watermarked base's feature distance is 0.7 x the base's.
    assert torch.allclose(wm.dist_before, 0.7 * plain.dist_before, rtol=1e-5)
    assert plain.extra["beta"] == pytest.approx(0.25 * (3 / 8) ** 2)
    assert torch.equal(P.watermark(b, t, 0.3), 0.7 * b + 0.3 * t)


def test_huge_beta_pins_poison_to_base():
    w = torch.randn(3, 8, generator=gen(5))
    b = torch.rand(3, 1, 2, 4, generator=gen(1))
    t = torch.rand(3, 1, 2, 4, generator=gen(2))
    res = P.poison_frogs(Linear(w), b, torch.zeros(3, dtype=torch.long), target=t, steps=50, beta=1e6)
    assert (res.x_poison - b).abs().max() < 1e-3
    assert bool((res.dist_after > 0.5 * res.dist_before).all())


@pytest.fixture(scope="module")
def digits_mlp():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    m = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=(32,))
    models.train(m, x[:1200], y[:1200], epochs=15, batch_size=64, lr=3e-3, progress=False)
    return m.eval(), x, y


def test_collision_reaches_one_percent_on_small_network(digits_mlp):
    m, x, y = digits_mlp
    with torch.no_grad():
        feats = m.features(x[:1200])
    tc = 3
    bc = P.nearest_class(feats, y[:1200], tc)
    assert bc != tc
    targets = x[1200:][y[1200:] == tc][:4]
    pool_rows = (y[:1200] == bc).nonzero().squeeze(1)
    with torch.no_grad():
        idx = P.nearest_rows(m.features(targets), feats[pool_rows], k=2)     # [4, 2]
    bases = x[pool_rows[idx.flatten()]]
    res = P.poison_frogs(m.features, bases, torch.full((8,), bc), target=targets.repeat_interleave(2, 0))
    assert bool(res.extra["collided"].all())
    assert bool((res.dist_after <= 0.01 * res.dist_before).all())
    assert int(res.extra["steps_run"].max()) < 1000
    assert 0 <= float(res.x_poison.min()) and float(res.x_poison.max()) <= 1
    assert bool((res.y_poison == bc).all())
    # Batched = one at a time: each poison's trajectory is its own.
    one = P.poison_frogs(m.features, bases[3:4], torch.full((1,), bc), target=targets[1:2])
    assert torch.allclose(one.x_poison, res.x_poison[3:4], atol=1e-5)


def test_collision_bad_input():
    w = torch.randn(3, 8, generator=gen(5))
    b = torch.rand(2, 1, 2, 4, generator=gen(1))
    bad = b.clone()
    bad[0, 0, 0, 0] = float("nan")
    lab = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError):
        P.poison_frogs(Linear(w), bad, lab, target=b)
    with pytest.raises(ConfigError):
        P.poison_frogs(Linear(w), b, lab, target=bad)
    with pytest.raises(ConfigError, match="opacity"):
        P.poison_frogs(Linear(w), b, lab, target=b, opacity=1.0)
    with pytest.raises(ConfigError, match="steps"):
        P.poison_frogs(Linear(w), b, lab, target=b, steps=0)
    with pytest.raises(ConfigError, match="target"):
        P.poison_frogs(Linear(w), b, lab, target=b[:1])


# ------------------------------------------------------------------ F12 pooled binomial judge


def _f12_runs(k_pass, n=10):
    from threatlab.report.judges import poisoning as jp
    runs = [{"success_after": 0.05 if i < k_pass else 0.6} for i in range(n)]
    # five seeds, two poison draws each (G5)
    return jp._f12_pooled([{"runs": runs[i:i + 2]} for i in range(0, n, 2)])


@pytest.mark.parametrize("k_pass, decision", [(8, -1), (9, 1), (10, 1)])
def test_f12_binomial_rule_at_8_9_10_of_10(k_pass, decision):
    """'success after < 20 % in >= 9 of 10 runs': 8 / 10 fails, 9 / 10 and 10 / 10 pass;
    the Clopper-Pearson interval is the exact binomial one (scipy), and the binomial
    p-value of 'rate > 0.9' at 10 / 10 is 0.9^10 (why the rule is a count rule)."""
    from scipy.stats import binomtest
    (x,) = _f12_runs(k_pass)
    assert x.decision == decision
    assert x.value == pytest.approx(k_pass / 10)
    ci = binomtest(k_pass, 10).proportion_ci(method="exact")
    assert x.interval == pytest.approx((ci.low, ci.high))
    assert f"{k_pass} of 10 runs" in x.detail
    if k_pass == 10:
        assert f"{0.9 ** 10:.3g}" in x.detail


def test_f12_recall_pools_the_draws_of_a_seed():
    """A seed's recall is caught / planted over its two draws (hand count: 45 + 30 of 100)."""
    from threatlab.report import findings
    run = {"clean_acc_after": 0.98, "precision": 0.5, "success_before": 1.0, "success_after": 0.0}
    e = {"removal_multiple": 1.5, "runs": [{**run, "n_poison": 50, "recall": 0.9, "poisons_left": 5},
                                           {**run, "n_poison": 50, "recall": 0.6, "poisons_left": 20}]}
    v = findings.get("F12").judge_evidence(e, "mnist")
    assert v.conditions[0].value == pytest.approx(0.75)
    assert v.numbers["poisons left per run"] == [5, 20]
    assert v.status == "not supported"
