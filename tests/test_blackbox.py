"""Oracles for the black-box kernels (attacks.blackbox), the EOT kernel and transforms.

Query counts must equal the BlackBox's own counter; Square never leaves its ball;
decision-based results are re-evaluated on the model; the transformations are
differentiable and reproducible from a seed; bad parameters fail before any query.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from threatlab import attacks
from threatlab.protocols import evasion
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox
from threatlab.transforms import (RandomTransform, accuracy_under_transforms, fooled_in_most_draws,
                                  success_under_transforms)

BLACKBOX = {  # name -> (oracle mode, cheap kwargs)
    "square_linf": ("probs", dict(eps=0.3, max_queries=150)),
    "square_l2": ("probs", dict(eps=2.0, max_queries=150)),
    "simba": ("probs", dict(eps=2.0, step=0.3, max_queries=150)),
    "boundary": ("label", dict(max_queries=300)),
    "hopskipjump": ("label", dict(max_queries=400, init_evals=20, max_evals=50)),
    "nes_linf": ("probs", dict(eps=0.2, max_queries=150, samples=10)),
    "nes_l2": ("probs", dict(eps=1.5, max_queries=150, samples=10)),
}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)



@pytest.fixture(scope="module")
def digits_cnn():
    """A small conv net on 8x8 digits [n, 1, 8, 8] (~1 s), with 24 test images it gets right."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(8 * 64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        loss = F.cross_entropy(model(x[:1500]), y[:1500])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        right = model(x[1500:]).argmax(1) == y[1500:]
    assert right.float().mean() > 0.85
    return model, x[1500:][right][:24], y[1500:][right][:24]


def run(name, model, x, y, **over):
    mode, kw = BLACKBOX[name]
    oracle = BlackBox(model, mode=mode)
    res = attacks.get(name)(oracle, x, y, generator=gen(0), **{**kw, **over})
    return oracle, res


@pytest.mark.parametrize("name", list(BLACKBOX))
def test_queries_equal_the_oracle_count(digits_cnn, name):
    model, x, y = digits_cnn
    oracle, res = run(name, model, x, y)
    assert res.queries.dtype == torch.int64 and res.queries.shape == y.shape
    assert torch.equal(res.queries, oracle.count()[: len(y)])
    assert int(res.queries.sum()) == oracle.total
    assert int(res.queries.max()) <= BLACKBOX[name][1]["max_queries"]
    # success is the model's own verdict on x_adv, whatever the attack believed
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


@pytest.mark.parametrize("name", ["boundary", "hopskipjump"])
def test_decision_based_results_are_misclassified(digits_cnn, name):
    model, x, y = digits_cnn
    _, res = run(name, model, x, y)
    assert res.success.float().mean() > 0.9
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert bool((pred[res.success] != y[res.success]).all())
    # the walk got closer than its bisected start (Boundary: see the 5,000-query test)
    l2 = res.extra["trace"]["l2"]
    assert float(l2[-1].median()) < float(l2[0].median())


def test_decision_based_stop_at_eps_and_trace(digits_cnn):
    model, x, y = digits_cnn
    oracle, res = run("hopskipjump", model, x, y, eps=2.5)
    q2s = evasion.queries_to_success(res.extra["trace"], norm="l2", eps=2.5)
    ok = torch.isfinite(q2s)
    assert ok.any()
    assert bool((q2s[ok] <= res.queries[ok].double()).all())


@pytest.mark.parametrize("name, eps, p", [("square_linf", 0.1, float("inf")), ("square_l2", 1.0, 2)])
def test_square_never_leaves_its_ball(digits_cnn, name, eps, p):
    model, x, y = digits_cnn
    _, res = run(name, model, x, y, eps=eps)
    norms = torch.linalg.vector_norm((res.x_adv - x).flatten(1), ord=p, dim=1)
    assert float(norms.max()) <= eps * (1 + 1e-5)
    tr = res.extra["trace"]
    assert float(tr["linf" if p == float("inf") else "l2"].max()) <= eps * (1 + 1e-5)


def test_score_based_attacks_fool_the_model(digits_cnn):
    model, x, y = digits_cnn
    for name in ("square_linf", "simba"):
        _, res = run(name, model, x, y)
        assert res.success_rate > 0.5, name


def test_oracle_budget_is_respected(digits_cnn):
    model, x, y = digits_cnn
    oracle = BlackBox(model, mode="probs", budget=40)
    res = attacks.get("square_linf")(oracle, x, y, eps=0.3, max_queries=1000, generator=gen())
    assert int(res.queries.max()) <= 40


def test_same_seed_same_result(digits_cnn):
    model, x, y = digits_cnn
    _, a = run("square_l2", model, x, y)
    _, b = run("square_l2", model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


class Exploding(nn.Module):
    def forward(self, x):  # pragma: no cover
        raise AssertionError("queried before validation")


@pytest.mark.parametrize("name, kwargs, mode, message", [
    ("square_linf", dict(eps=0.3, max_queries=0), "probs", "max_queries=0 is outside"),
    ("square_linf", dict(eps=0.3, max_queries=-5), "probs", "max_queries=-5"),
    ("square_l2", dict(eps=-1.0), "probs", "eps=-1.0 is outside"),
    ("square_linf", dict(eps=0.3, p_init=0.0), "probs", "p_init=0.0"),
    ("square_linf", dict(eps=0.3), "label", "oracle.mode='label' is not allowed"),
    ("simba", dict(step=2.0), "probs", "step=2.0"),
    ("boundary", dict(max_queries=0), "label", "max_queries=0"),
    ("boundary", dict(step_adaptation=1.0), "label", "step_adaptation=1.0"),
    ("boundary", dict(eps=0.0), "label", "eps=0.0"),
    ("hopskipjump", dict(init_evals=0), "label", "init_evals=0"),
    ("hopskipjump", dict(gamma=-1.0), "label", "gamma=-1.0"),
])
def test_bad_parameters_raise_before_any_query(name, kwargs, mode, message):
    x, y = torch.full((3, 1, 8, 8), 0.5), torch.zeros(3, dtype=torch.long)
    oracle = BlackBox(Exploding(), mode=mode)
    with pytest.raises(ConfigError) as err:
        attacks.get(name)(oracle, x, y, **kwargs)
    assert message in str(err.value)
    assert oracle.total == 0


def test_a_model_instead_of_an_oracle_is_rejected():
    x, y = torch.full((3, 1, 8, 8), 0.5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError, match="BlackBox"):
        attacks.get("boundary")(Exploding(), x, y)


# ----------------------------------------------------------------- transformations


def test_transforms_are_differentiable_and_seeded():
    x = torch.rand(5, 1, 12, 12)
    t = RandomTransform()
    a, b = t(x, gen(3)), t(x, gen(3))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, t(x, gen(4)))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(t(xr, gen(3)).sum(), xr)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # gradient matches a finite difference in a random direction
    v = torch.randn_like(x)
    h = 1e-3
    f = lambda z: t(z, gen(3)).pow(2).sum()  # noqa: E731
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xr), xr)
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    assert abs(float(fd) - float((g * v).sum())) < 0.05 * abs(float(fd)) + 1e-2


def test_pure_shift_moves_pixels():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    t = RandomTransform(["shift"], max_shift=2)
    out = t(x, gen(0))
    assert abs(float(out.sum()) - 1.0) < 1e-4  # bilinear shift keeps the mass inside


@pytest.mark.parametrize("kwargs, message", [
    (dict(kinds=["warp"]), "transformation='warp' is not allowed"),
    (dict(kinds=[]), "non-empty"),
    (dict(max_shift=-1), "max_shift=-1"),
    (dict(max_angle=200), "max_angle=200"),
    (dict(noise_std=-0.1), "noise_std=-0.1"),
])
def test_bad_transform_parameters(kwargs, message):
    with pytest.raises(ConfigError) as err:
        RandomTransform(**kwargs)
    assert message in str(err.value)


def test_eot_with_identity_transformation_is_plain_pgd(digits_cnn):
    """A distribution that changes nothing makes EOT's averaged gradient a multiple of
    PGD's: the signed steps, hence the adversarials, are identical."""
    model, x, y = digits_cnn
    ident = RandomTransform(["noise"], noise_std=0.0)
    plain = attacks.get("pgd_linf")(model, x, y, eps=0.15, steps=10, generator=gen())
    eot = attacks.get("eot_pgd")(model, x, y, eps=0.15, steps=10, samples=3, transform=ident, generator=gen())
    assert torch.equal(plain.x_adv, eot.x_adv)
    t = RandomTransform(["shift", "noise"], max_shift=1.5, noise_std=0.1)
    eot = attacks.get("eot_pgd")(model, x, y, eps=0.15, steps=10, samples=4, transform=t, generator=gen())
    assert float((eot.x_adv - x).abs().max()) <= 0.15 + 1e-6
    s = success_under_transforms(model, eot.x_adv, y, t, draws=4, generator=gen(9))
    assert s.shape == y.shape and bool(((s >= 0) & (s <= 1)).all())


def test_eot_a_row_with_a_non_finite_gradient_stays_put_and_the_others_run_on(digits_cnn):
    # Row 0 carries a bright marker pixel the model answers with NaN logits (a model that
    # overflows on part of its input space): sign(NaN) would make the row NaN; instead it
    # skips every step, and the other rows get what they get without it.
    model, x, y = digits_cnn
    x = x.clone()
    x[:, 0, 0, 0] = x[:, 0, 0, 0].clamp(max=0.5)
    x[0, 0, 0, 0] = 1.0

    class Marked(nn.Module):
        def forward(self, z):
            out = model(z)
            # Added, not selected: the NaN must reach the gradient as well as the loss.
            return out + torch.where(z[:, 0, 0, 0] > 0.99, float("nan"), 0.0)[:, None]

    kw = dict(eps=0.005, steps=6, samples=2, random_start=False, transform=RandomTransform(["noise"], noise_std=0.0))
    res = attacks.get("eot_pgd")(Marked(), x, y, **kw, generator=gen())
    rest = attacks.get("eot_pgd")(Marked(), x[1:], y[1:], **kw, generator=gen())
    assert res.extra["diverged"].tolist() == [6] + [0] * (len(x) - 1)
    assert torch.equal(res.x_adv[0], x[0]) and not bool(res.x_adv.isnan().any())
    torch.testing.assert_close(res.x_adv[1:], rest.x_adv, rtol=1e-5, atol=1e-6)
    assert bool((res.x_adv[1:] != x[1:]).any())             # the others did move


def test_eot_validates_before_compute():
    x, y = torch.full((3, 1, 8, 8), 0.5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError, match="samples=0"):
        attacks.get("eot_pgd")(Exploding(), x, y, eps=0.1, samples=0)
    with pytest.raises(ConfigError, match="RandomTransform"):
        attacks.get("eot_pgd")(Exploding(), x, y, eps=0.1, transform="shift")


def test_eot_with_margin_loss_and_identity_is_plain_pgd_with_margin_loss(digits_cnn):
    model, x, y = digits_cnn
    ident = RandomTransform(["noise"], noise_std=0.0)
    kw = dict(eps=0.15, steps=10, loss="margin", confidence=2.0)
    plain = attacks.get("pgd_linf")(model, x, y, **kw, generator=gen())
    eot = attacks.get("eot_pgd")(model, x, y, **kw, samples=3, transform=ident, generator=gen())
    assert torch.equal(plain.x_adv, eot.x_adv)
    ce = attacks.get("eot_pgd")(model, x, y, eps=0.15, steps=10, samples=3, transform=ident, generator=gen())
    assert not torch.equal(ce.x_adv, eot.x_adv)


def test_fooled_in_most_draws_counts_draws_exactly():
    class Fixed(nn.Module):
        """Predicts class 1 where the first pixel exceeds 0.5, else class 0."""
        def forward(self, inp):
            v = inp.flatten(1)[:, :1]
            return torch.cat([0.5 - v, v - 0.5], 1)

    x = torch.zeros(4, 1, 4, 4)
    x[:2, 0, 0, 0] = 1.0
    y = torch.zeros(4, dtype=torch.long)
    ident = RandomTransform(["noise"], noise_std=0.0)
    hit = fooled_in_most_draws(Fixed(), x, y, ident, draws=10, generator=gen())
    assert hit.tolist() == [True, True, False, False]
    assert accuracy_under_transforms(Fixed(), x, y, ident, draws=5, generator=gen()) == 0.5
    # noise flips the 0.5-threshold model on some draws only: a fraction between
    # 0 and 1 for a pixel right at the threshold; threshold 0.9 counts 18/20 as enough
    x_edge = torch.full((64, 1, 4, 4), 0.5)
    noisy = RandomTransform(["noise"], noise_std=0.05)
    rate = success_under_transforms(Fixed(), x_edge, torch.zeros(64, dtype=torch.long), noisy, draws=20,
                                    generator=gen(1))
    hit = fooled_in_most_draws(Fixed(), x_edge, torch.zeros(64, dtype=torch.long), noisy, draws=20,
                               generator=gen(1))
    assert torch.equal(hit, rate >= 0.9 - 1e-6)
    assert not hit.all() and (rate > 0).any()
    with pytest.raises(ConfigError, match="threshold=0"):
        fooled_in_most_draws(Fixed(), x, y, ident, threshold=0)


# ------------------------------------------------------------------------ v2 kernels


@pytest.mark.parametrize("name, eps, p", [("nes_linf", 0.2, float("inf")), ("nes_l2", 1.5, 2)])
def test_nes_stays_in_its_ball_and_counts_queries_exactly(digits_cnn, name, eps, p):
    model, x, y = digits_cnn
    oracle = BlackBox(model, mode="probs")
    res = attacks.get(name)(oracle, x, y, eps=eps, max_queries=1000, samples=20, generator=gen(0))
    norms = torch.linalg.vector_norm((res.x_adv - x).flatten(1), ord=p, dim=1)
    assert float(norms.max()) <= eps * (1 + 1e-5)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    # counts: the oracle's own, per example, never above the budget, and exactly
    # 1 (start) + 21 per iteration run
    assert torch.equal(res.queries, oracle.count()[: len(y)])
    assert int(res.queries.sum()) == oracle.total
    assert int(res.queries.max()) <= 1000
    assert bool(((res.queries - 1) % 21 == 0).all())
    assert res.success_rate > 0.5
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    tr = res.extra["trace"]
    assert float(tr["linf" if p == float("inf") else "l2"].max()) <= eps * (1 + 1e-5)


def test_nes_never_exceeds_a_budget_that_does_not_divide_its_cost(digits_cnn):
    model, x, y = digits_cnn
    oracle = BlackBox(model, mode="probs", budget=50)
    res = attacks.get("nes_linf")(oracle, x, y, eps=0.05, max_queries=100, samples=10, generator=gen(0))
    # 1 + 4 * 11 = 45 <= 50 < 56: at most four iterations fit the oracle's budget
    assert int(res.queries.max()) <= 45
    assert torch.equal(res.queries, oracle.count()[: len(y)])


def test_nes_estimate_points_along_the_true_gradient():
    """On an affine model with probabilities, one NES step with many samples moves the
    margin down almost as far as a white-box sign step of the same size."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.full((6, 1, 4, 4), 0.5)
    with torch.no_grad():
        y = model(x).argmax(1)
    oracle = BlackBox(model, mode="probs")
    res = attacks.get("nes_linf")(oracle, x, y, eps=0.01, max_queries=402, samples=400,
                                  sigma=1e-3, step_size=0.01, generator=gen(0))
    from threatlab.attacks.blackbox import _margin

    with torch.no_grad():
        m0 = _margin(torch.softmax(model(x), 1), y)
        m_nes = _margin(torch.softmax(model(res.x_adv), 1), y)
        xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(_margin(torch.softmax(model(xr), 1), y).sum(), xr)
    with torch.no_grad():
        m_white = _margin(torch.softmax(model(torch.clamp(x - 0.01 * g.sign(), 0, 1)), 1), y)
    drop_nes, drop_white = m0 - m_nes, m0 - m_white
    assert bool((drop_nes > 0.8 * drop_white).all())


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0.1, samples=7), "samples=7 must be even"),
    (dict(eps=0.1, samples=0), "samples=0"),
    (dict(eps=0.1, sigma=0.0), "sigma=0.0"),
    (dict(eps=0.0), "eps=0.0"),
])
def test_nes_validates_before_any_query(kwargs, message):
    x, y = torch.full((3, 1, 8, 8), 0.5), torch.zeros(3, dtype=torch.long)
    oracle = BlackBox(Exploding(), mode="probs")
    with pytest.raises(ConfigError) as err:
        attacks.get("nes_linf")(oracle, x, y, **kwargs)
    assert message in str(err.value)
    assert oracle.total == 0


def test_boundary_walk_halves_the_initial_bisection_distance(digits_cnn):
    """Issue 20: v1's one-rate adaptation froze at the first bisection point. With the
    reference's two statistics the median L2 after 5,000 queries is at most half of
    the median L2 of the bisected starting points."""
    model, x, y = digits_cnn
    oracle = BlackBox(model, mode="label")
    res = attacks.get("boundary")(oracle, x, y, max_queries=5000, generator=gen(0))
    l2 = res.extra["trace"]["l2"]
    assert res.success.all()
    assert int(res.queries.max()) <= 5000
    assert float(l2[-1].median()) <= 0.5 * float(l2[0].median())
    # the source step adapted away from its start (it is what shrinks near the optimum)
    assert not torch.allclose(res.extra["source_step"], torch.full_like(res.extra["source_step"], 0.01))


def test_boundary_window_rules():
    from threatlab.attacks.blackbox import _Window

    w = _Window(3, 4, "cpu")
    rows = torch.tensor([0, 1])
    for v in (True, True, True, False):
        w.record(rows, torch.tensor([v, not v]))
    assert w.full().tolist() == [True, True, False]
    torch.testing.assert_close(w.rate()[:2], torch.tensor([0.75, 0.25]))
    # a ring: the fifth outcome replaces the first
    w.record(rows, torch.tensor([False, True]))
    torch.testing.assert_close(w.rate()[:2], torch.tensor([0.5, 0.5]))
    w.clear(torch.tensor([True, False, False]))
    assert w.full().tolist() == [False, True, False]


def test_boundary_batched_candidates_are_all_charged(digits_cnn):
    model, x, y = digits_cnn
    oracle = BlackBox(model, mode="label")
    res = attacks.get("boundary")(oracle, x, y, max_queries=2000, candidates=4, generator=gen(0))
    assert torch.equal(res.queries, oracle.count()[: len(y)])
    assert int(res.queries.max()) <= 2000
    l2 = res.extra["trace"]["l2"]
    assert float(l2[-1].median()) < 0.8 * float(l2[0].median())
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    # the walk only ever moves closer
    assert bool((l2[1:] <= l2[:-1] + 1e-6).all())
