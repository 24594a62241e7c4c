"""Oracles for the v2 evasion kernels: the margin-loss option, the minimal L-inf attack
(closed form on affine models) and Auto-PGD (ball, checkpoints, strength vs PGD)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threatlab import attacks
from threatlab.attacks.adversarial import apgd_checkpoints, dlr_loss, margin_loss
from threatlab.attacks.norms import flat_norm
from threatlab.errors import ConfigError

from test_adversarial import ExplodingModel, affine_problem, digits, gen  # noqa: F401  (fixture)


def linf(t):
    return t.flatten(1).abs().amax(1)


# --------------------------------------------------------------------- margin loss


def test_margin_loss_is_capped_and_signed():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    y = torch.tensor([0, 1])
    # untargeted: max other - own, capped at confidence
    torch.testing.assert_close(margin_loss(z, y, False, 0.0), torch.tensor([-2.0, 0.0]))
    torch.testing.assert_close(margin_loss(z, y, False, 10.0), torch.tensor([-2.0, 3.0]))
    # targeted: own - max other
    torch.testing.assert_close(margin_loss(z, y, True, 10.0), torch.tensor([2.0, -3.0]))


def test_pgd_margin_loss_stops_fooled_examples_and_keeps_the_ball(digits):
    model, x, y = digits
    res = attacks.get("pgd_linf")(model, x, y, eps=0.2, steps=20, loss="margin", generator=gen(0))
    assert float(linf(res.x_adv - x).max()) <= 0.2 + 1e-6
    ce = attacks.get("pgd_linf")(model, x, y, eps=0.2, steps=20, generator=gen(0))
    # the margin loss is a different objective: same budget, different points
    assert not torch.equal(res.x_adv, ce.x_adv)
    assert res.success_rate > 0.5
    with torch.no_grad():
        m = margin_loss(model(res.x_adv), y, False, 0.0)
    # kappa = 0: a fooled example has zero gradient and stays just past the boundary
    assert bool((m[res.success] <= 0 + 1e-6).all())


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="hinge"), "loss='hinge' is not allowed"),
    (dict(loss="margin", confidence=-1.0), "confidence=-1.0"),
])
def test_loss_option_is_validated(kwargs, message):
    x, y = torch.full((3, 4), 0.5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError) as err:
        attacks.get("pgd_linf")(ExplodingModel(), x, y, eps=0.1, **kwargs)
    assert message in str(err.value)


# ------------------------------------------------------------------ minimal L-inf


def test_min_linf_finds_the_closed_form_distance_on_a_two_class_affine_model():
    model, x, y, _, dist_linf = affine_problem(2)
    res = attacks.get("min_linf")(model, x, y, bisection_steps=14, steps=20)
    assert res.success.all()
    got = linf(res.x_adv - x)
    torch.testing.assert_close(res.extra["linf"], got)
    # never below the closed form (it is the minimum) and within the bisection's
    # resolution of it (1 / 2^14 absolute, plus float slack)
    assert bool((got >= dist_linf * (1 - 1e-4)).all())
    assert float((got - dist_linf).max()) <= 2 ** -14 + 1e-5


def test_min_linf_is_never_below_the_minimum_with_more_classes():
    model, x, y, _, dist_linf = affine_problem(5)
    res = attacks.get("min_linf")(model, x, y, bisection_steps=12, steps=20)
    assert res.success.all()
    got = linf(res.x_adv - x)
    assert bool((got >= dist_linf * (1 - 1e-4)).all())
    # the margin loss follows the closest class's facet, not always the L-inf nearest one
    assert float((got / dist_linf).median()) <= 1.05


def test_min_linf_beats_a_fixed_budget_and_reports_failures(digits):
    model, x, y = digits
    res = attacks.get("min_linf")(model, x, y, eps_max=0.05, bisection_steps=6, steps=10)
    got = res.extra["linf"]
    assert bool(torch.isinf(got[~res.success]).all())
    assert bool((got[res.success] <= 0.05 + 1e-6).all())
    assert torch.equal(res.x_adv[~res.success], x[~res.success])


# -------------------------------------------------------------------------- APGD


def test_apgd_checkpoints_follow_the_paper():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == [1]
    assert all(b > a for a, b in zip(apgd_checkpoints(37), apgd_checkpoints(37)[1:]))


def test_dlr_loss_matches_its_formula_and_is_scale_invariant():
    z = torch.tensor([[4.0, 1.0, 0.0, -1.0], [0.0, 3.0, 2.0, 1.0]])
    y = torch.tensor([0, 2])
    expect = torch.tensor([-(4.0 - 1.0) / (4.0 - 0.0), -(2.0 - 3.0) / (3.0 - 1.0)])
    torch.testing.assert_close(dlr_loss(z, y), expect)
    torch.testing.assert_close(dlr_loss(3 * z + 7, y), expect)


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_dlr"])
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("linf", 0.3), ("l2", 0.5), ("l2", 3.0)])
def test_apgd_never_leaves_the_ball(digits, name, norm, eps):
    model, x, y = digits
    res = attacks.get(name)(model, x, y, eps=eps, norm=norm, steps=20, generator=gen(0))
    d = res.x_adv - x
    size = linf(d) if norm == "linf" else flat_norm(d)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("eps", [0.1, 0.15])
def test_apgd_is_at_least_as_strong_as_pgd_at_equal_steps(digits, steps, eps):
    model, x, y = digits
    pgd = attacks.get("pgd_linf")(model, x, y, eps=eps, steps=steps, generator=gen(0))
    apgd = attacks.get("apgd_ce")(model, x, y, eps=eps, steps=steps, generator=gen(0))
    assert int(apgd.success.sum()) >= int(pgd.success.sum())
    assert apgd.success.any()


def test_apgd_is_seeded_and_chunk_invariant(digits, monkeypatch):
    from threatlab import runtime

    model, x, y = digits
    run = lambda: attacks.get("apgd_ce")(model, x, y, eps=0.1, steps=10, generator=gen(3))  # noqa: E731
    a = run()
    monkeypatch.setattr(runtime, "CPU_ROW_CHUNK", 7)
    b = run()
    assert torch.equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0.1, norm="l1"), "norm='l1' is not allowed"),
    (dict(eps=0.1, rho=1.0), "rho=1.0"),
    (dict(eps=-1.0), "eps=-1.0"),
    (dict(eps=0.1, targeted=True, target=torch.zeros(3, dtype=torch.long)), "untargeted"),
])
def test_apgd_validates_before_compute(kwargs, message):
    x, y = torch.full((3, 4), 0.5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError) as err:
        attacks.get("apgd_ce")(ExplodingModel(), x, y, **kwargs)
    assert message in str(err.value)


def test_apgd_dlr_needs_three_classes():
    model = nn.Linear(4, 2)
    x, y = torch.full((3, 4), 0.5), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ConfigError, match=">= 3 classes"):
        attacks.get("apgd_dlr")(model, x, y, eps=0.1)
