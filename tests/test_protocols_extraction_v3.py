"""Register v3, F01 and F03: the solver and the substitute on one set of counted pool
queries; the comparison level set by rule; Jacobian's seed images in its budget."""
from __future__ import annotations

import math

import pytest
import torch

from threatlab import metrics, models
from threatlab.attacks import extraction as ex
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox
from threatlab.protocols import extraction as proto

SUB_KW = dict(arch_params={"hidden": [32]}, max_epochs=100, min_steps=200)


@pytest.fixture(scope="module")
def digits():
    """8x8 digits (d = 64): victims' rows, the attacker's pool, evaluation rows."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    return x[:800], y[:800], x[800:1300], x[1300:]


@pytest.fixture(scope="module")
def victims(digits):
    xtr, ytr, _, xev = digits
    out = {}
    for name, hidden in (("lr", []), ("mlp", [32])):
        net = models.build("mlp", in_shape=(1, 8, 8), hidden=hidden, seed=0)
        models.train(net, xtr, ytr, epochs=30, batch_size=64, lr=3e-3, seed=0, progress=False)
        out[name] = (net.eval(), ex.victim_labels(BlackBox(net, mode="label"), xev))
    return out


def test_linear_victim_is_recovered_exactly_from_the_shared_pool_queries(digits, victims):
    _, _, pool, xev = digits
    net, vy = victims["lr"]
    c = proto.shared_query_contrast(net, pool, xev, vy, generator=torch.Generator().manual_seed(0), sub_kw=SUB_KW)
    assert c.d == 64 and c.queries == 65 and c.distinct_queries == 65 and c.max_charges == 1
    assert c.solver_agreement >= 0.999 and c.solver_residual < 1e-5      # an identity, up to float32 answers
    assert c.noise_queries == 65 and c.noise_solver_agreement >= 0.999
    assert set(c.evidence()) >= {"solver_agreement", "substitute_agreement", "queries"}


def test_hidden_layer_breaks_the_solver_on_the_same_queries(digits, victims):
    _, _, pool, xev = digits
    net, vy = victims["mlp"]
    c = proto.shared_query_contrast(net, pool, xev, vy, generator=torch.Generator().manual_seed(0), sub_kw=SUB_KW)
    assert c.queries == 65 and c.max_charges == 1                        # the same 65 answers fed both
    assert c.solver_agreement < 0.99 and c.solver_residual > 1e-3        # not linear in its logits
    assert 0.3 < c.substitute_agreement <= 1.0


def test_the_two_learners_read_one_answer_tensor(digits, victims):
    # What shared_query_contrast does, spelled out: the solver on pool answers equals
    # equation_solving's algebra (same solve on the same rows), and the counts add up.
    _, _, pool, _ = digits
    net, _ = victims["lr"]
    g = torch.Generator().manual_seed(3)
    res = ex.equation_solving(BlackBox(net, mode="probs"), in_shape=(1, 8, 8), generator=g)
    xq = torch.rand((65, 64), generator=torch.Generator().manual_seed(3)).view(65, 1, 8, 8)
    mine = ex.solve_equations(xq, BlackBox(net, mode="probs")(xq))
    torch.testing.assert_close(mine.weight, res.weight, rtol=0, atol=1e-9)
    torch.testing.assert_close(mine.bias, res.bias, rtol=0, atol=1e-9)
    w_true, b_true = ex.center(*ex.linear_parameters(net, (1, 8, 8)))
    assert float((mine.weight - w_true).abs().max()) <= 1e-4 * float(w_true.abs().max())


def test_shared_contrast_refuses_a_short_pool_and_label_answers(digits, victims):
    _, _, pool, xev = digits
    net, vy = victims["mlp"]
    with pytest.raises(ConfigError, match="d \\+ 1 = 65"):
        proto.shared_query_contrast(net, pool[:64], xev, vy, generator=None)
    with pytest.raises(ConfigError, match="label answers"):
        ex.solve_equations(pool[:65], torch.zeros(65, dtype=torch.long))
    with pytest.raises(ConfigError, match="num_classes"):
        ex.fit_on_answers(pool[:65], torch.zeros(65, dtype=torch.long))
    nan = torch.full((65, 10), 0.1)
    nan[0, 0] = math.nan
    with pytest.raises(ConfigError, match="NaN"):
        ex.solve_equations(pool[:65], nan)


# --------------------------------------------------------------------------------- F03

GRID = list(proto.F03_BUDGETS)


def test_level_at_a_grid_point_and_between_budgets():
    assert GRID == [25, 50, 100, 200, 400, 800, 1600, 3200] and proto.F03_LEVEL_AT == 400
    base = [0.30, 0.45, 0.60, 0.70, 0.834, 0.85, 0.90, 0.92]
    assert proto.comparison_level(GRID, base) == 0.83                    # 0.834 at 400, rounded down
    # 400 halfway between 200 and 800 in log queries: (0.70 + 0.87) / 2 = 0.785 -> 0.78
    assert proto.comparison_level([200, 800], [0.70, 0.87]) == 0.78
    assert proto.comparison_level([100, 400], [0.1, 0.29]) == 0.29       # 0.2899999... stays 0.29
    assert proto.comparison_level([100, 400], [0.1, 0.8999]) == 0.89     # down, never to nearest
    with pytest.raises(ConfigError, match="outside"):
        proto.comparison_level([25, 50, 100, 200], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ConfigError, match="finite"):
        proto.comparison_level([100, 400], [0.1, math.nan])


def test_queries_to_reach_the_level_for_each_strategy():
    curves = {
        "pool": (GRID, [0.30, 0.45, 0.60, 0.70, 0.80, 0.85, 0.90, 0.92]),
        "active": (GRID, [0.40, 0.60, 0.75, 0.80, 0.88, 0.90, 0.93, 0.95]),     # reaches 0.80 at 200
        "knockoff": (GRID, [0.20, 0.30, 0.40, 0.50, 0.60, 0.65, 0.70, 0.75]),   # never
        "jacobian": (GRID, [0.40, 0.50, 0.60, 0.70, 0.75, 0.85, 0.85, 0.85]),   # between 400 and 800
    }
    r = proto.comparison_queries(curves)
    assert r.level == 0.80 and r.baseline == "pool"
    assert r.queries["pool"] == 400 and r.queries["active"] == 200 and r.reached["active"]
    assert r.queries["knockoff"] == 6400 and not r.reached["knockoff"]            # largest budget x 2
    # 0.80 is halfway from 0.75 to 0.85: sqrt(400 * 800)
    assert r.queries["jacobian"] == pytest.approx(math.sqrt(400 * 800))
    assert r.queries["jacobian"] == pytest.approx(metrics.queries_to_reach(GRID, curves["jacobian"][1], 0.8)[0])
    assert r.best_informed == "active" and r.ratio == 0.5
    assert r.first_budget == {k: 25 for k in curves}
    with pytest.raises(ConfigError, match="baseline 'pool'"):
        proto.comparison_queries({"active": curves["active"]})


def test_jacobian_seed_images_count_in_its_budget(digits, victims):
    _, _, pool, xev = digits
    net, vy = victims["mlp"]
    oracle = BlackBox(net, mode="probs", keep_log=True)
    curve = ex.jacobian_augmentation(oracle, pool, budgets=[10, 20, 40], eval_x=xev, eval_labels=vy,
                                     max_epochs=2, min_steps=0, generator=torch.Generator().manual_seed(0))
    # Round 0 asks the 10 seed images: they are the first 10 queries and count in budget 10.
    assert curve.queries == [10, 20, 40] and oracle.total == 40
    asked, _ = oracle.query_log()
    assert torch.equal(asked[:10], pool[:10])
    curves, oracles = proto.strategy_curves(net, {"jacobian": pool}, [10, 20], eval_x=xev, eval_labels=vy,
                                            seeds={"jacobian": 0}, sub_kw=dict(max_epochs=2, min_steps=0))
    assert curves["jacobian"].queries == [10, 20] and oracles["jacobian"].total == 20
