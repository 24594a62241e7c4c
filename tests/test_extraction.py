"""Oracles for the extraction kernels in threatlab.attacks.extraction.

A random multinomial logistic regression must be recovered exactly (up to the softmax
shift) by equation solving from d + 1 queries; Jacobian augmentation must double the
query set per round; every query number must equal the oracle's own counter; agreement
must be measured against the victim's labels, not the ground truth.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from threatlab import attacks
from threatlab.attacks import extraction as ex
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox

SHAPE = (1, 4, 5)          # d = 20
D, K = 20, 4
CHEAP = dict(arch="mlp", arch_params={"hidden": [16]}, max_epochs=3, min_steps=5, batch_size=16)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)



def random_lr(seed=0, scale=1.0):
    torch.manual_seed(seed)
    lin = nn.Linear(D, K)
    with torch.no_grad():
        lin.weight.mul_(scale * 10)
    return nn.Sequential(nn.Flatten(), lin).eval()


def small_mlp(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, K)).eval()


# ----------------------------------------------------------------- equation solving


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equation_solving_recovers_random_lr_exactly(seed):
    victim = random_lr(seed)
    oracle = BlackBox(victim, mode="probs")
    res = ex.equation_solving(oracle, in_shape=SHAPE, generator=gen(seed))
    lin = victim[1]
    w, b = ex.center(lin.weight.detach().double(), lin.bias.detach().double())
    assert res.queries == D + 1 == oracle.total
    assert (res.weight - w).abs().max() < 1e-4 and (res.bias - b).abs().max() < 1e-4
    # Identical predictions on points the solver never saw (except float32 near-ties of
    # the victim's own top-2 logits, where either answer is a rounding accident).
    x = torch.rand(2000, *SHAPE, generator=gen(99))
    top2 = victim(x).topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3
    assert clear.float().mean() > 0.99
    assert torch.equal(res.model(x).argmax(1)[clear], victim(x).argmax(1)[clear])
    # Centred: the softmax shift is removed.
    assert res.weight.sum(0).abs().max() < 1e-9


def test_linear_parameters_reads_the_affine_map_with_normalization_folded_in():
    from threatlab import models

    net = models.build("mlp", in_shape=SHAPE, num_classes=K, hidden=[], seed=0)
    w, b = ex.linear_parameters(net, SHAPE)
    x = torch.rand(5, *SHAPE)
    assert torch.allclose(x.flatten(1).double() @ w.T + b, net(x).double(), atol=1e-5)
    res = ex.equation_solving(BlackBox(net), in_shape=SHAPE, generator=gen())
    wc, bc = ex.center(w, b)
    assert (res.weight - wc).abs().max() < 1e-4


def test_equation_solving_fails_on_a_hidden_layer():
    victim = small_mlp()
    res = ex.equation_solving(BlackBox(victim), in_shape=SHAPE, n_queries=4 * (D + 1), generator=gen())
    # Overdetermined: the residual shows the victim is not linear in its logits.
    assert res.residual > 1e-3
    lr_res = ex.equation_solving(BlackBox(random_lr()), in_shape=SHAPE, n_queries=4 * (D + 1), generator=gen())
    assert lr_res.residual < 1e-5


def test_equation_solving_refuses_labels_and_bad_parameters():
    with pytest.raises(ConfigError, match="mode='label'"):
        ex.equation_solving(BlackBox(random_lr(), mode="label"), in_shape=SHAPE)
    with pytest.raises(ConfigError, match="n_queries=1"):
        ex.equation_solving(BlackBox(random_lr()), in_shape=SHAPE, n_queries=1)
    with pytest.raises(ConfigError, match="BlackBox"):
        ex.equation_solving(random_lr(), in_shape=SHAPE)


# ------------------------------------------------------------------ substitutes


def test_agreement_is_against_the_victims_labels_not_ground_truth():
    victim = random_lr()
    x = torch.rand(300, *SHAPE, generator=gen(3))
    truth = (victim(x).argmax(1) + 1) % K          # the victim is wrong everywhere
    vy = ex.victim_labels(BlackBox(victim, mode="label"), x)
    f = ex.fidelity(victim, x, vy, truth)          # a perfect copy of a wrong victim
    assert f["agreement"] == 1.0 and f["accuracy"] == 0.0
    curve = attacks.get("knockoff")(BlackBox(victim), x, budgets=[100, 300], eval_x=x, eval_labels=vy,
                                    generator=gen(), **CHEAP)
    for a, m in zip(curve.agreement, curve.substitutes):
        assert a == pytest.approx(ex.fidelity(m, x, vy)["agreement"])
        assert a != pytest.approx(ex.fidelity(m, x, truth)["agreement"])


def test_victim_labels_come_through_the_oracle_in_every_mode():
    victim = random_lr()
    x = torch.rand(50, *SHAPE)
    for mode in ("probs", "rounded", "label", "topk"):
        bb = BlackBox(victim, mode=mode)
        assert torch.equal(ex.victim_labels(bb, x), victim(x).argmax(1)) and bb.total == 50


@pytest.mark.parametrize("mode", ["probs", "rounded", "label"])
def test_substitute_counts_and_targets(mode):
    victim = small_mlp()
    x = torch.rand(64, *SHAPE, generator=gen())
    bb = ex.make_oracle(victim, mode, decimals=1)
    res = attacks.get("substitute")(bb, x, generator=gen(), **CHEAP)
    assert res.queries == bb.total == 64
    assert bb.queries.tolist() == [1] * 64          # each input asked once, its own id
    if mode == "label":
        assert res.targets.dtype == torch.long
    else:
        assert torch.allclose(res.targets.sum(1), torch.ones(64))


def test_answers_to_targets_renormalises_and_handles_all_zero_rows():
    a = torch.tensor([[0.5, 0.4, 0.0], [0.0, 0.0, 0.0]])
    t = ex.answers_to_targets(a)
    assert torch.allclose(t[0], torch.tensor([5 / 9, 4 / 9, 0.0])) and torch.allclose(t[1], torch.full((3,), 1 / 3))


@pytest.mark.parametrize("strategy", list(ex.STRATEGIES))
def test_strategy_query_counts_match_the_oracle(strategy):
    victim = small_mlp()
    pool = torch.rand(200, *SHAPE, generator=gen(5))
    bb = BlackBox(victim, mode="probs")
    budgets = [25, 50, 100]
    curve = ex.run_strategy(strategy, bb, pool, budgets=budgets, generator=gen(), **CHEAP)
    assert curve.queries == budgets and bb.total == budgets[-1]
    assert curve.x_query.shape[0] == budgets[-1] and len(curve.substitutes) == 3
    assert curve.agreement == [None] * 3
    assert bool((curve.x_query >= 0).all() and (curve.x_query <= 1).all())


def test_jacobian_augmentation_doubles_the_set_each_round():
    victim = small_mlp()
    seed = torch.rand(10, *SHAPE, generator=gen(6))
    bb = BlackBox(victim, mode="label")
    curve = attacks.get("jacobian")(bb, seed, budgets=[10, 20, 40, 80], lam=0.1, generator=gen(), **CHEAP)
    assert curve.queries == [10, 20, 40, 80] and bb.total == 80
    s = curve.x_query
    assert torch.equal(s[:10], seed)
    # Round r adds one augmented point per existing point: lam * sign(grad) away, clipped.
    for lo, hi in ((0, 10), (10, 20), (20, 40), (40, 80)):
        if lo == 0:
            continue
        step = (s[lo:hi] - s[:hi - lo]).abs()
        assert bool((step <= 0.1 + 1e-6).all()) and bool(step.amax() > 0.09)


def test_active_asks_the_least_certain_points_without_repeats():
    victim = small_mlp()
    pool = torch.rand(300, *SHAPE, generator=gen(7))
    bb = BlackBox(victim)
    curve = attacks.get("active")(bb, pool, budgets=[30, 60], generator=gen(), **CHEAP)
    asked = curve.x_query
    assert torch.unique(asked, dim=0).shape[0] == 60
    # The second batch has the smallest margins of the not-yet-asked pool under the
    # round-0 substitute.
    m = ex.margin(curve.substitutes[0], pool)
    first = {tuple(r.tolist()) for r in asked[:30].flatten(1)}
    rest = torch.tensor([tuple(r.tolist()) not in first for r in pool.flatten(1)])
    expected = m.masked_fill(~rest, float("inf")).topk(30, largest=False).indices
    assert {tuple(r.tolist()) for r in pool[expected].flatten(1)} == {tuple(r.tolist()) for r in asked[30:].flatten(1)}


def test_queries_to_target():
    c = ex.ExtractionCurve([10, 20, 40], [10, 20, 40], [0.5, 0.85, 0.9], [], torch.zeros(0))
    assert c.queries_to(0.8) == 20 and c.queries_to(0.95) is None


def test_transfer_and_noise_baseline_count_one_query_each():
    victim = small_mlp()
    x = torch.rand(40, *SHAPE, generator=gen(8))
    vy = victim(x).argmax(1)
    bb = BlackBox(victim, mode="label")
    tr = ex.transfer_attack(victim, bb, x, vy, eps=0.3, attack_params={"steps": 10}, generator=gen())
    assert tr.queries == 40 and tr.success_rate > 0.5     # white-box on the victim itself
    nz = ex.sign_noise_attack(bb, x, vy, eps=0.3, generator=gen())
    assert nz.queries == 40 and bb.total == 80
    assert bool(((nz.x_adv - x).abs() <= 0.3 + 1e-6).all())


# -------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize("kwargs, match", [
    (dict(budgets=[0, 10]), r"budgets\[0\]=0"),
    (dict(budgets=[-5]), r"budgets\[0\]=-5"),
    (dict(budgets=[20, 10]), "strictly increasing"),
    (dict(budgets=[]), "non-empty"),
    (dict(budgets=[10], max_epochs=0), "max_epochs=0"),
    (dict(budgets=[10], patience=0), "patience=0"),
    (dict(budgets=[10], val_fraction=1.0), "val_fraction=1.0"),
    (dict(budgets=[10], val_fraction=float("nan")), "val_fraction=nan"),
    (dict(budgets=[10], min_steps=-1), "min_steps=-1"),
    (dict(budgets=[10], arch="resnet"), "arch='resnet'"),
    (dict(budgets=[10], eval_x=torch.rand(3, *SHAPE)), "eval_labels"),
    (dict(budgets=[500]), "500"),
])
def test_bad_parameters_fail_before_any_query(kwargs, match):
    bb = BlackBox(small_mlp())
    with pytest.raises(ConfigError, match=match):
        attacks.get("active")(bb, torch.rand(100, *SHAPE), **kwargs)
    assert bb.total == 0


def test_unknown_strategy_and_mode_are_named():
    with pytest.raises(ConfigError, match="strategy='random'.*pool"):
        ex.run_strategy("random", BlackBox(small_mlp()), torch.rand(4, *SHAPE), budgets=[2])
    with pytest.raises(ConfigError, match="mode='logits'"):
        ex.make_oracle(small_mlp(), "logits")
    with pytest.raises(ConfigError, match="'nope'.*equation_solving"):
        attacks.get("nope", "extraction")
    with pytest.raises(ConfigError, match="at most double"):
        attacks.get("jacobian")(BlackBox(small_mlp()), torch.rand(10, *SHAPE), budgets=[10, 30])
    with pytest.raises(ConfigError, match="lam=0"):
        attacks.get("jacobian")(BlackBox(small_mlp()), torch.rand(10, *SHAPE), budgets=[10], lam=0)


# ------------------------------------------------- v2: training that scales with queries


def _digits_victim(digits):
    """A small MLP victim trained on 600 digits; the attacker's pool and the evaluation
    images are other digits."""
    from threatlab import models

    x, y = digits
    perm = torch.randperm(x.shape[0], generator=gen(0))
    xtr, ytr = x[perm[:600]], y[perm[:600]]
    victim = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=[64])
    opt = torch.optim.Adam(victim.parameters(), 1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(victim(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return victim.eval(), x[perm[600:1400]], x[perm[1400:]]


def test_probs_substitute_agreement_does_not_fall_with_budget_on_digits(digits):
    """Monotone up to TOL = 0.01: agreement is measured on 397 evaluation digits, so
    0.01 is 4 images, about a third of the binomial standard error (0.013 at agreement
    0.9) of the difference between two budgets. v1's fixed 300 steps fell by 0.008 at
    one doubling on MNIST; with epochs that scale with the query set a fall larger
    than 4 images at any doubling would mean training effort, not data, decides."""
    TOL = 0.01
    victim, pool, x_eval = _digits_victim(digits)
    vy = victim(x_eval).argmax(1)
    curve = attacks.get("pool")(BlackBox(victim, mode="probs"), pool, budgets=[25, 50, 100, 200, 400, 800],
                                arch_params={"hidden": [32]}, max_epochs=50, eval_x=x_eval, eval_labels=vy,
                                generator=gen(0))
    a = curve.agreement
    assert all(b >= p - TOL for p, b in zip(a, a[1:])), a
    assert a[-1] - a[0] > 0.2                     # and it does learn from more queries
    # Training effort grows with the query set: steps = epochs x batches per epoch.
    steps = [e * -(-int(b - max(1, int(0.2 * b))) // 64) for e, b in zip(curve.epochs, curve.budgets)]
    assert steps == sorted(steps) and steps[-1] > steps[0]


def test_fit_substitute_stops_early_and_keeps_the_best_epoch():
    # Random labels: the held-out loss can only rise once the MLP starts memorising.
    x = torch.rand(200, *SHAPE, generator=gen(11))
    t = torch.randint(0, K, (200,), generator=gen(12))
    model = ex._new_substitute("mlp", {"hidden": [64]}, x, K, 0)
    rep = ex.fit_substitute(model, x, t, max_epochs=200, patience=3, min_steps=0, batch_size=16,
                            lr=1e-2, generator=gen(13))
    assert rep.epochs < 200 and rep.epochs - rep.best_epoch == 3
    assert rep.n_val == 40 and rep.n_train == 160 and not model.training
    # The weights kept are the best epoch's: re-measure the held-out loss.
    split = torch.randperm(200, generator=gen(13))
    with torch.no_grad():
        vl = float(nn.functional.cross_entropy(model(x[split[:40]]), t[split[:40]]))
    assert vl == pytest.approx(rep.val_loss, rel=1e-6)


def test_fit_substitute_step_floor_and_no_holdout():
    x = torch.rand(20, *SHAPE, generator=gen(14))
    t = torch.randint(0, K, (20,), generator=gen(15))
    model = ex._new_substitute("mlp", {"hidden": [8]}, x, K, 0)
    # 16 training rows, batch 64: one step per epoch, so the 50-step floor is 50 epochs.
    rep = ex.fit_substitute(model, x, t, max_epochs=5, patience=1, min_steps=50, generator=gen())
    assert rep.epochs >= 50 and rep.n_val == 4
    rep = ex.fit_substitute(model, x, t, max_epochs=7, val_fraction=0.0, min_steps=0, generator=gen())
    assert rep.epochs == 7 and rep.best_epoch == 7 and rep.val_loss is None and rep.n_train == 20


def test_fit_is_deterministic():
    x = torch.rand(64, *SHAPE, generator=gen(16))
    t = torch.softmax(torch.randn(64, K, generator=gen(17)), 1)
    out = []
    for _ in range(2):
        model = ex._new_substitute("mlp", {"hidden": [8]}, x, K, 3)
        ex.fit_substitute(model, x, t, max_epochs=5, min_steps=10, generator=gen(18))
        out.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize("mode", ["probs", "label"])
def test_one_fitting_routine_for_every_strategy_and_mode(monkeypatch, mode):
    calls = []
    real = ex.fit_substitute

    def spy(*a, **kw):
        calls.append(kw["max_epochs"])
        return real(*a, **kw)

    monkeypatch.setattr(ex, "fit_substitute", spy)
    pool = torch.rand(200, *SHAPE, generator=gen(5))
    for strategy in ex.STRATEGIES:
        calls.clear()
        curve = ex.run_strategy(strategy, ex.make_oracle(small_mlp(), mode), pool, budgets=[25, 50],
                                generator=gen(), **CHEAP)
        assert calls == [3, 3] and len(curve.epochs) == 2, strategy


def test_pool_queries_ask_distinct_rows_of_the_pool_in_random_order():
    victim = small_mlp()
    pool = torch.rand(100, *SHAPE, generator=gen(19))
    bb = BlackBox(victim)
    curve = attacks.get("pool")(bb, pool, budgets=[20, 40], generator=gen(), **CHEAP)
    rows = [int((pool.flatten(1) == q).all(1).nonzero()) for q in curve.x_query.flatten(1)]
    assert len(set(rows)) == 40 and rows != sorted(rows) and bb.total == 40
    # The same seed gives the same order as knockoff on the same images (one routine).
    ko = attacks.get("knockoff")(BlackBox(victim), pool, budgets=[20, 40], generator=gen(), **CHEAP)
    assert torch.equal(ko.x_query, curve.x_query)


# ------------------------------------------------- v2: queries at matched agreement


def test_queries_to_reach_interpolates_on_a_log_scale():
    from threatlab.metrics import queries_to_reach

    # Halfway in agreement between 200 and 400 queries: the geometric mean.
    q, ok = queries_to_reach([100, 200, 400], [0.6, 0.7, 0.9], 0.8)
    assert ok and q == pytest.approx((200 * 400) ** 0.5)
    # A quarter of the way: 200 * 2 ** 0.25.
    assert queries_to_reach([100, 200, 400], [0.6, 0.7, 0.9], 0.75)[0] == pytest.approx(200 * 2 ** 0.25)
    # Exactly at a budget; reached at the first budget; never reached.
    assert queries_to_reach([100, 200, 400], [0.6, 0.8, 0.9], 0.8) == (200.0, True)
    assert queries_to_reach([100, 200, 400], [0.85, 0.9, 0.95], 0.8) == (100.0, True)
    assert queries_to_reach([100, 200, 400], [0.6, 0.7, 0.79], 0.8) == (800.0, False)
    # Non-monotone: the first crossing counts (from the point just before it).
    q, _ = queries_to_reach([100, 200, 400, 800], [0.5, 0.82, 0.7, 0.9], 0.8)
    assert q == pytest.approx(100 * 2 ** (0.3 / 0.32))
    c = ex.ExtractionCurve([100, 200, 400], [100, 200, 400], [0.6, 0.7, 0.9], [], torch.zeros(0))
    assert c.queries_to_level(0.8)[0] == pytest.approx((200 * 400) ** 0.5)
    assert c.queries_to_level(0.95) == (800.0, False)


@pytest.mark.parametrize("args, match", [
    (([], [], 0.8), "non-empty"),
    (([100, 200], [0.5], 0.8), "equal length"),
    (([200, 100], [0.5, 0.6], 0.8), "strictly increasing"),
    (([0, 100], [0.5, 0.6], 0.8), "positive"),
    (([100, 200], [0.5, float("nan")], 0.8), "finite"),
    (([100, 200], [0.5, 0.6], float("nan")), "level=nan"),
])
def test_queries_to_reach_rejects_bad_curves(args, match):
    from threatlab.metrics import queries_to_reach

    with pytest.raises(ConfigError, match=match):
        queries_to_reach(*args)
    with pytest.raises(ConfigError, match="eval_x"):
        ex.ExtractionCurve([1], [1], [None], [], torch.zeros(0)).queries_to_level(0.5)


# ------------------------------------------------- v2: F04's sign-noise baseline


def test_sign_noise_has_exactly_the_transfer_attacks_linf_norm():
    victim = small_mlp()
    x = torch.rand(40, *SHAPE, generator=gen(20)) * 0.5 + 0.25     # no pixel is clipped
    vy = victim(x).argmax(1)
    bb = BlackBox(victim, mode="label")
    base = attacks.get("sign_noise", "extraction")(bb, x, vy, eps=0.2, generator=gen())
    assert torch.allclose(base.linf, torch.full((40,), 0.2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose((base.x_adv - x).abs(), torch.full_like(x, 0.2), atol=1e-6)   # every pixel moves
    signs = torch.sign(base.x_adv - x)
    assert 0.4 < float((signs > 0).float().mean()) < 0.6                                   # random signs
    tr = ex.transfer_attack(victim, bb, x, vy, eps=0.2, attack_params={"steps": 5}, generator=gen())
    assert float(tr.linf.max()) <= 0.2 + 1e-6 and tr.linf.shape == (40,)
    with pytest.raises(ConfigError, match="eps=0"):
        ex.sign_noise_attack(bb, x, vy, eps=0)
