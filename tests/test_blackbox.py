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
from threatlab.transforms import RandomTransform, success_under_transforms

BLACKBOX = {  # name -> (oracle mode, cheap kwargs)
    "square_linf": ("probs", dict(eps=0.3, max_queries=150)),
    "square_l2": ("probs", dict(eps=2.0, max_queries=150)),
    "simba": ("probs", dict(eps=2.0, step=0.3, max_queries=150)),
    "boundary": ("label", dict(max_queries=300)),
    "hopskipjump": ("label", dict(max_queries=400, init_evals=20, max_evals=50)),
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
    # the walk got closer than the noise start (~ sqrt(64 * 1/3))
    l2 = (res.x_adv - x).flatten(1).norm(dim=1)[res.success]
    assert float(l2.median()) < 3.0


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


def test_eot_validates_before_compute():
    x, y = torch.full((3, 1, 8, 8), 0.5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError, match="samples=0"):
        attacks.get("eot_pgd")(Exploding(), x, y, eps=0.1, samples=0)
    with pytest.raises(ConfigError, match="RandomTransform"):
        attacks.get("eot_pgd")(Exploding(), x, y, eps=0.1, transform="shift")
