"""Oracles for the evasion kernels in threatlab.attacks.adversarial and the norm balls.

Affine models give closed-form answers: the smallest L2 (or L-inf) perturbation that
changes the decision, so minimal-perturbation attacks must land on it and budgeted
attacks on a two-class affine model must succeed exactly when it fits in the budget.
A tiny MLP trained on scikit-learn's digits covers the non-linear cases.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from threatlab import attacks
from threatlab.attacks.norms import L2Ball, LinfBall, flat_norm
from threatlab.errors import ConfigError

ALL = ["apgd_ce", "apgd_dlr", "bim", "cw_l2", "deepfool", "fgsm", "jsma", "min_linf", "pgd_l2", "pgd_linf"]

# Cheap settings per kernel, used wherever the test is about the contract, not strength.
QUICK = {
    "fgsm": dict(eps=0.1),
    "bim": dict(eps=0.1, steps=10),
    "pgd_linf": dict(eps=0.1, steps=10),
    "pgd_l2": dict(eps=1.0, steps=10),
    "cw_l2": dict(steps=30, binary_search_steps=3, initial_const=1.0),
    "deepfool": dict(steps=10),
    "jsma": dict(gamma=0.1),
    "min_linf": dict(bisection_steps=3, steps=5, eps_max=0.3),
    "apgd_ce": dict(eps=0.1, steps=10),
    "apgd_dlr": dict(eps=0.1, steps=10),
}
TARGETABLE = [a for a in ALL if a not in ("deepfool", "apgd_ce", "apgd_dlr")]
LINF = ["fgsm", "bim", "pgd_linf"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -------------------------------------------------------------------------- fixtures



@pytest.fixture(scope="module")
def digits():
    """A 64-64-10 MLP trained ~1 s on digits, and 48 held-out examples it gets right."""
    from sklearn.datasets import load_digits

    data, labels = load_digits(return_X_y=True)
    x_all = torch.tensor(data / 16.0, dtype=torch.float32)  # pixel range 0..16 -> [0, 1]
    y_all = torch.tensor(labels)
    with torch.random.fork_rng():  # do not disturb other tests' global RNG
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    # Full-batch heavy-ball GD: deterministic and avoids torch.optim's import cost.
    for _ in range(150):
        loss = F.cross_entropy(model(x_all[:1500]), y_all[:1500])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, v in zip(params, grads, velocity):
                v.mul_(0.9).add_(g)
                p.sub_(0.3 * v)
    model.eval()
    x_test, y_test = x_all[1500:], y_all[1500:]
    with torch.no_grad():
        right = model(x_test).argmax(1) == y_test
    assert right.float().mean() > 0.85, "digits MLP failed to train; oracles below are void"
    return model, x_test[right][:48], y_test[right][:48]


def affine_problem(num_classes: int, *, d: int = 20, n: int = 32, seed: int = 0):
    """nn.Linear with inputs in [0.25, 0.75] and the exact minimal L2 / L-inf distances.

    For logits z = Wx + b and label y (the model's own prediction), y's region is the
    polyhedron {z_y >= z_j for all j}; the distance to its boundary is the smallest
    distance to one facet: min_j (z_y - z_j) / ||w_y - w_j||_q, with q the dual norm
    (L2 -> L2, L-inf -> L1).
    """
    g = gen(seed)
    model = nn.Linear(d, num_classes)
    centre = torch.full((d,), 0.5)
    with torch.no_grad():
        model.weight.copy_(torch.randn(num_classes, d, generator=g))
        # Boundaries pass near the centre of the box, so the distances are moderate.
        model.bias.copy_(-model.weight @ centre + 0.1 * torch.randn(num_classes, generator=g))
    x = centre + 0.5 * (torch.rand(8 * n, d, generator=g) - 0.5)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w_diff = model.weight.detach()[y][:, None, :] - model.weight.detach()[None]  # [m, K, d]
    gap = z.gather(1, y[:, None]) - z  # [m, K] >= 0
    own = F.one_hot(y, num_classes).bool()
    dist_l2 = (gap / w_diff.norm(dim=2).clamp_min(1e-12)).masked_fill(own, math.inf).amin(1)
    dist_linf = (gap / w_diff.abs().sum(2).clamp_min(1e-12)).masked_fill(own, math.inf).amin(1)
    # Keep n examples at distance 0.03..0.2: far enough that a relative tolerance means
    # something, near enough that the box never binds (each coordinate of a
    # perturbation is at most its L2 length, 1.1 * 0.2 < 0.25).
    keep = ((dist_l2 > 0.03) & (dist_l2 < 0.2)).nonzero().squeeze(1)[:n]
    assert len(keep) == n
    return model, x[keep], y[keep], dist_l2[keep], dist_linf[keep]


class ExplodingModel(nn.Module):
    def forward(self, x):  # pragma: no cover - reaching it is the failure
        raise AssertionError("model was called before the parameters were validated")


# ------------------------------------------------------------------------- registry


def test_registry_lists_every_kernel():
    # black-box and EOT kernels (tests/test_blackbox.py) share the family
    assert set(ALL) <= set(attacks.names("adversarial"))
    for name in ALL:
        assert attacks.get(name).attack_name == name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        attacks.get("nope")
    for name in ALL:
        assert name in str(err.value)


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize("name, kwargs, message", [
    ("fgsm", dict(eps=-0.1), "eps=-0.1 is outside the allowed range (0, inf)"),
    ("pgd_linf", dict(eps=-0.1), "eps=-0.1 is outside the allowed range (0, inf)"),
    ("pgd_l2", dict(eps=0.0), "eps=0.0 is outside the allowed range (0, inf)"),
    ("bim", dict(eps=0.1, steps=0), "steps=0 is outside"),
    ("bim", dict(eps=0.1, steps=2.5), "steps=2.5 must be an integer"),
    ("pgd_l2", dict(eps=1.0, step_size=-1.0), "step_size=-1.0 is outside"),
    ("pgd_linf", dict(eps=0.1, random_start="yes"), "random_start='yes'"),
    ("fgsm", dict(eps=0.1, evaluate=1), "evaluate=1"),
    ("cw_l2", dict(lr=0), "lr=0 is outside"),
    ("cw_l2", dict(confidence=-1.0), "confidence=-1.0 is outside"),
    ("cw_l2", dict(binary_search_steps=0), "binary_search_steps=0 is outside"),
    ("deepfool", dict(overshoot=-0.1), "overshoot=-0.1 is outside"),
    ("deepfool", dict(num_classes=1), "num_classes=1 is outside"),
    ("deepfool", dict(targeted=True, target=torch.zeros(4, dtype=torch.long)), "untargeted"),
    ("jsma", dict(gamma=1.5), "gamma=1.5 is outside"),
    ("jsma", dict(gamma=0.0), "gamma=0.0 is outside"),
    ("jsma", dict(theta=0.0), "theta=0"),
    ("pgd_linf", dict(eps=0.1, targeted=True), "targeted=True needs target"),
    ("fgsm", dict(eps=0.1, target=torch.zeros(4, dtype=torch.long)), "targeted=False"),
    ("fgsm", dict(eps=0.1, targeted=True, target=torch.zeros(3, dtype=torch.long)), "shape (4,)"),
])
def test_bad_parameters_raise_before_compute(name, kwargs, message):
    x, y = torch.full((4, 8), 0.5), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError) as err:
        attacks.get(name)(ExplodingModel(), x, y, **kwargs)
    assert message in str(err.value)


def test_inputs_outside_the_box_are_rejected():
    x, y = torch.full((4, 8), 2.0), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        attacks.get("fgsm")(ExplodingModel(), x, y, eps=0.1)


# ------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("targeted", [False, True])
def test_result_contract(digits, name, targeted):
    """Shapes, dtypes, the box, detached outputs, success = the model's own verdict,
    and a model and input left exactly as they were (also under torch.no_grad)."""
    if targeted and name not in TARGETABLE:
        pytest.skip(f"{name} is untargeted")
    model, x, y = digits
    target = (y + 1 + torch.randint(0, 9, y.shape, generator=gen(1))) % 10 if targeted else None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_before = x.clone()
    with torch.no_grad():  # kernels must still get their gradients
        res = attacks.get(name)(model, x, y, **QUICK[name], targeted=targeted, target=target,
                                generator=gen(0))
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.success.shape == y.shape and res.success.dtype == torch.bool
    assert not res.x_adv.requires_grad
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    expected = pred == target if targeted else pred != y
    assert torch.equal(res.success, expected)
    assert res.success.any(), "the quick settings should fool the MLP on some examples"
    assert torch.equal(x, x_before)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_image_shaped_batches(digits, name):
    """[n, 1, 8, 8] in, same shape out; per-example norms span all non-batch dims."""
    model, x, y = digits
    image_model = nn.Sequential(nn.Flatten(), model)
    images = x.reshape(-1, 1, 8, 8)
    res = attacks.get(name)(image_model, images, y, **QUICK[name], generator=gen(0))
    flat = attacks.get(name)(model, x, y, **QUICK[name], generator=gen(0))
    assert res.x_adv.shape == images.shape
    torch.testing.assert_close(res.x_adv.reshape(x.shape), flat.x_adv)
    assert torch.equal(res.success, flat.success)


# ------------------------------------------------------ affine oracles: minimal L2


@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("name, kwargs", [
    ("deepfool", dict(steps=10)),
    ("cw_l2", dict(steps=100, binary_search_steps=9, lr=0.01)),
])
def test_minimal_l2_attacks_find_the_closed_form_distance(name, kwargs, num_classes):
    model, x, y, dist_l2, _ = affine_problem(num_classes)
    res = attacks.get(name)(model, x, y, **kwargs)
    assert res.success.all()
    l2 = flat_norm(res.x_adv - x)
    # No successful perturbation can be shorter than the closed form ...
    assert bool((l2 >= dist_l2 * (1 - 1e-4)).all())
    # ... and a minimal-perturbation attack must come within 10% of it.
    ratio = l2 / dist_l2
    assert float(ratio.max()) <= 1.10, ratio


def test_deepfool_is_exact_in_one_step_on_an_affine_model():
    model, x, y, dist_l2, _ = affine_problem(5)
    res = attacks.get("deepfool")(model, x, y, steps=1, overshoot=0.02)
    assert res.success.all()
    # One step lands 1e-4 (L2, input units: the reference code's stabiliser on the
    # step length) past the nearest facet, then the overshoot scales the total.
    torch.testing.assert_close(flat_norm(res.x_adv - x), 1.02 * (dist_l2 + 1e-4), rtol=1e-4, atol=1e-6)


def test_deepfool_with_two_classes_only_tries_the_runner_up():
    model, x, y, _, _ = affine_problem(5)
    with torch.no_grad():
        z = model(x)
    runner_up = z.scatter(1, y[:, None], -math.inf).argmax(1)
    w = model.weight.detach()
    gap = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, runner_up[:, None]).squeeze(1)
    dist_runner_up = gap / (w[y] - w[runner_up]).norm(dim=1)
    res = attacks.get("deepfool")(model, x, y, steps=1, overshoot=0.0, num_classes=2)
    torch.testing.assert_close(flat_norm(res.x_adv - x), dist_runner_up + 1e-4, rtol=1e-4, atol=1e-6)


def test_deepfool_stops_once_every_example_has_flipped():
    # An affine model flips in one step, so steps=50 must not cost 50 steps: the clean
    # logits, step 1, the check that ends the loop, and the final re-evaluation.
    model, x, y, dist_l2, _ = affine_problem(5)
    calls = []
    counted = lambda inp: (calls.append(1), model(inp))[1]  # noqa: E731
    res = attacks.get("deepfool")(counted, x, y, steps=50, overshoot=0.02)
    assert len(calls) == 4
    assert res.success.all()
    # Same answer as a single step: stopping early changed nothing.
    torch.testing.assert_close(flat_norm(res.x_adv - x), 1.02 * (dist_l2 + 1e-4), rtol=1e-4, atol=1e-6)


def _deepfool_one(model, x0, y0, steps, overshoot):
    """The reference algorithm (LTS4/DeepFool) for one example, written plainly."""
    k_all = model(x0[None]).shape[1]
    order = [int(c) for c in model(x0[None])[0].detach().argsort(descending=True) if int(c) != int(y0)]
    r_tot = torch.zeros_like(x0)
    xa = x0.clone()
    for _ in range(steps):
        xr = xa.clone().requires_grad_(True)
        z = model(xr[None])[0]
        if int(z.argmax()) != int(y0):
            break
        best = (math.inf, None)
        for c in order[: k_all - 1]:
            f = z[c] - z[y0]
            (w,) = torch.autograd.grad(f, xr, retain_graph=True)
            d = float(f.abs()) / float(w.norm())
            if d < best[0]:
                best = (d, w)
        d, w = best
        r_tot = r_tot + (d + 1e-4) * w / w.norm()
        xa = torch.clamp(x0 + (1 + overshoot) * r_tot, 0, 1)
    return xa


def test_deepfool_matches_the_reference_and_drops_flipped_rows(digits):
    model, x, y = digits
    rows = []

    def counted(inp):
        rows.append(inp.shape[0])
        return model(inp)

    res = attacks.get("deepfool")(counted, x, y, steps=50, overshoot=0.02)
    ref = torch.stack([_deepfool_one(model, x[i], y[i], 50, 0.02) for i in range(len(y))])
    torch.testing.assert_close(res.x_adv, ref, rtol=1e-4, atol=1e-5)
    assert res.success.all()
    # Calls between the clean logits and the final check: each sends only rows not yet
    # flipped, so the sizes never grow and finished rows stop costing backward passes.
    inner = rows[1:-1]
    assert inner[0] == len(y) and min(inner) < len(y)
    assert all(b <= a for a, b in zip(inner, inner[1:]))


def test_deepfool_leaves_already_wrong_examples_alone():
    model, x, y, _, _ = affine_problem(5)
    wrong = torch.arange(len(y)) % 2 == 0
    y_given = torch.where(wrong, (y + 1) % 5, y)
    res = attacks.get("deepfool")(model, x, y_given, steps=10)
    assert torch.equal(res.x_adv[wrong], x[wrong])
    assert res.success.all()


# -------------------------------------------- affine oracles: budgeted attacks

# On a two-class affine model the loss gradient always points along w_other - w_y, so
# sign steps reach the optimal L-inf corner and normalized steps the optimal L2
# direction: success must match "closed-form distance < eps" example by example.
@pytest.mark.parametrize("name, norm, kwargs", [
    ("fgsm", "linf", {}),
    ("bim", "linf", dict(steps=20)),
    ("pgd_linf", "linf", dict(steps=20)),
    ("pgd_l2", "l2", dict(steps=40)),
])
def test_budgeted_attacks_succeed_exactly_when_the_budget_suffices(name, norm, kwargs):
    model, x, y, dist_l2, dist_linf = affine_problem(2, n=64)
    dist = dist_l2 if norm == "l2" else dist_linf
    eps = float(dist.median())
    res = attacks.get(name)(model, x, y, eps=eps, **kwargs, generator=gen(0))
    clear = (dist - eps).abs() > 0.03 * eps  # leave out examples right at the edge
    assert clear.sum() >= 48
    assert torch.equal(res.success[clear], (dist < eps)[clear])


# ------------------------------------------------------------------ norm-ball bounds


@pytest.mark.parametrize("name", LINF)
@pytest.mark.parametrize("eps", [0.03, 0.3])
def test_linf_attacks_stay_in_ball_and_box(digits, name, eps):
    model, x, y = digits
    res = attacks.get(name)(model, x, y, eps=eps, **{k: v for k, v in QUICK[name].items()
                                                      if k != "eps"}, generator=gen(0))
    assert float((res.x_adv - x).abs().max()) <= eps + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


@pytest.mark.parametrize("eps", [0.5, 3.0])
def test_pgd_l2_stays_in_ball_and_box(digits, eps):
    model, x, y = digits
    res = attacks.get("pgd_l2")(model, x, y, eps=eps, steps=10, generator=gen(0))
    assert float(flat_norm(res.x_adv - x).max()) <= eps * (1 + 1e-6) + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0


@pytest.mark.parametrize("ball", [LinfBall(0.2), L2Ball(0.8)], ids=repr)
def test_balls_project_step_and_init(ball):
    x = torch.rand(16, 3, 4, 4, generator=gen(0))
    x[0] = 0.0  # corners of the box
    x[1] = 1.0
    dist = (lambda t: flat_norm(t, math.inf)) if ball.norm == "linf" else flat_norm
    start = ball.random_init(x, gen(1))
    far = x + 5 * torch.randn(x.shape, generator=gen(2))
    for point in (start, ball.project(far, x)):
        assert bool((dist(point - x) <= ball.eps * (1 + 1e-6)).all())
        assert float(point.min()) >= 0.0 and float(point.max()) <= 1.0
    # Projection is idempotent and leaves interior points alone.
    torch.testing.assert_close(ball.project(start, x), start)
    # Zero gradients give a zero step, not NaN; a unit step has the requested length.
    grad = torch.randn(x.shape, generator=gen(3))
    grad[2] = 0.0
    moved = ball.step(x, grad, 0.1) - x
    assert torch.isfinite(moved).all() and bool((moved[2] == 0).all())
    torch.testing.assert_close(dist(moved[3:]), torch.full((13,), 0.1))


def test_random_init_is_deterministic_per_seed():
    x = torch.rand(8, 10, generator=gen(0))
    for ball in (LinfBall(0.1), L2Ball(0.5)):
        assert torch.equal(ball.random_init(x, gen(7)), ball.random_init(x, gen(7)))
        assert not torch.equal(ball.random_init(x, gen(7)), ball.random_init(x, gen(8)))


# ---------------------------------------------------------------------------- JSMA


@pytest.mark.parametrize("gamma", [0.05, 0.1, 0.3])
@pytest.mark.parametrize("theta", [1.0, 0.5, -1.0])
@pytest.mark.parametrize("targeted", [False, True])
def test_jsma_never_changes_more_than_its_budget(digits, gamma, theta, targeted):
    model, x, y = digits
    target = (y + 3) % 10 if targeted else None
    res = attacks.get("jsma")(model, x, y, gamma=gamma, theta=theta, targeted=targeted,
                              target=target)
    changed = (res.x_adv != x).reshape(len(x), -1).sum(1)
    bound = math.floor(gamma * x[0].numel())
    assert int(changed.max()) <= bound
    assert bool((changed <= res.extra["changed"]).all())
    assert int(res.extra["changed"].max()) <= bound
    if theta == 1.0:  # theta = 1 sets every changed pixel to the maximum
        assert bool((res.x_adv[res.x_adv != x] == 1.0).all())


@pytest.mark.parametrize("theta", [1.0, -1.0])
def test_jsma_picks_the_papers_most_salient_pair(theta):
    """On an affine model the Jacobian is constant, so the first pair can be found by
    brute force from the paper's rule: alpha = sum of d z_t / d x over the pair,
    beta = the same for all other classes; increasing features need alpha > 0 and
    beta < 0, decreasing ones alpha < 0 and beta > 0; pick the largest -alpha * beta."""
    d, k = 10, 3
    g = gen(4)
    model = nn.Linear(d, k)
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=g))
        model.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))  # class 0 wins, far from flipping
    x = torch.full((2, d), 0.0 if theta > 0 else 1.0)  # every feature can move
    y = torch.zeros(2, dtype=torch.long)
    target = torch.tensor([1, 2])
    res = attacks.get("jsma")(model, x, y, theta=theta, gamma=2 / d, targeted=True,
                              target=target)  # gamma * d = 2: exactly one pair
    weight = model.weight.detach()
    for i, t in enumerate(target.tolist()):
        alpha = weight[t]
        beta = weight.sum(0) - alpha
        best, pair = 0.0, None
        for p, q in itertools.combinations(range(d), 2):
            a, b = float(alpha[p] + alpha[q]), float(beta[p] + beta[q])
            admissible = (a > 0 and b < 0) if theta > 0 else (a < 0 and b > 0)
            if admissible and -a * b > best:
                best, pair = -a * b, {p, q}
        assert pair is not None
        assert set((res.x_adv[i] != x[i]).nonzero().squeeze(1).tolist()) == pair


def test_jsma_records_which_examples_hit_the_pixel_cap(digits):
    model, x, y = digits
    cap = 2 * (int(0.05 * 64) // 2)
    res = attacks.get("jsma")(model, x, y, gamma=0.05)
    hit = res.extra["hit_cap"]
    assert hit.dtype == torch.bool and hit.shape == y.shape
    assert torch.equal(hit, res.extra["changed"] == cap)
    # with a 4-pixel cap some examples are stopped by it, and those that are not
    # stopped by it succeeded before reaching it
    assert hit.any()
    assert bool(res.success[~hit].all())


def test_jsma_succeeds_on_a_simple_model(digits):
    model, x, y = digits
    untargeted = attacks.get("jsma")(model, x, y, gamma=0.3)
    assert untargeted.success_rate >= 0.9
    target = (y + 1 + torch.randint(0, 9, y.shape, generator=gen(1))) % 10
    targeted = attacks.get("jsma")(model, x, y, gamma=0.3, targeted=True, target=target)
    assert targeted.success_rate >= 0.8


def test_jsma_untargeted_aims_at_the_runner_up(digits):
    model, x, y = digits
    res = attacks.get("jsma")(model, x, y, gamma=0.1)
    with torch.no_grad():
        runner_up = model(x).topk(2, dim=1).indices[:, 1]
    assert torch.equal(res.extra["target"], runner_up)


# ---------------------------------------------------- determinism, relative strength


@pytest.mark.parametrize("name", ["pgd_linf", "pgd_l2"])
def test_same_seed_same_result(digits, name):
    model, x, y = digits
    run = lambda seed: attacks.get(name)(model, x, y, **QUICK[name], generator=gen(seed))  # noqa: E731
    first, again, other = run(5), run(5), run(6)
    assert torch.equal(first.x_adv, again.x_adv)
    assert torch.equal(first.success, again.success)
    assert not torch.equal(first.x_adv, other.x_adv)


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd_linf", "pgd_l2"])
def test_evaluate_false_returns_the_same_adversarials_without_success(digits, name):
    model, x, y = digits
    kw = QUICK.get(name, {"eps": 0.1})
    full = attacks.get(name)(model, x, y, **kw, generator=gen(3))
    bare = attacks.get(name)(model, x, y, **kw, generator=gen(3), evaluate=False)
    assert torch.equal(full.x_adv, bare.x_adv)
    assert bare.success is None
    with pytest.raises(ValueError, match="evaluate=False"):
        bare.success_rate


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2])
def test_pgd_is_at_least_as_strong_as_fgsm(digits, eps):
    model, x, y = digits
    fgsm = attacks.get("fgsm")(model, x, y, eps=eps)
    pgd = attacks.get("pgd_linf")(model, x, y, eps=eps, steps=20, generator=gen(0))
    assert pgd.success_rate >= fgsm.success_rate


def test_targeted_pgd_reaches_the_target(digits):
    model, x, y = digits
    target = (y + 1 + torch.randint(0, 9, y.shape, generator=gen(1))) % 10
    res = attacks.get("pgd_linf")(model, x, y, eps=0.3, steps=40, targeted=True,
                                  target=target, generator=gen(0))
    assert res.success_rate >= 0.9


def test_cw_keeps_the_smallest_success_and_reports_it(digits):
    model, x, y = digits
    res = attacks.get("cw_l2")(model, x, y, steps=50, binary_search_steps=4, initial_const=1.0)
    l2 = flat_norm(res.x_adv - x)
    ok = res.success
    assert ok.any()
    torch.testing.assert_close(l2[ok], res.extra["l2"][ok])
    # Failures return the clean input and report infinite distance.
    assert torch.equal(res.x_adv[~ok], x[~ok])
    assert bool(torch.isinf(res.extra["l2"][~ok]).all())


def test_cw_binary_search_bisects_the_constant_and_shrinks_distortion(digits):
    model, x, y = digits
    one = attacks.get("cw_l2")(model, x, y, steps=50, binary_search_steps=1, initial_const=1.0)
    five = attacks.get("cw_l2")(model, x, y, steps=50, binary_search_steps=5, initial_const=1.0)
    ok = one.success & five.success
    assert ok.sum() >= 10
    # Starting at c = 1, every constant the search can try is a multiple of 1/16
    # (bisection) or a power of ten (growth); a kept success at c < 1 shows it shrank.
    const = five.extra["const"][ok]
    assert torch.equal(const * 16, (const * 16).round())
    assert bool((const < 1).any())
    # Smaller constants weigh distortion more: the kept L2 must go down.
    assert float((five.extra["l2"][ok] / one.extra["l2"][ok]).median()) <= 0.95


class _NaNWhereBright(nn.Module):
    """`net`'s logits, NaN for every input whose top-left pixel exceeds 0.99: a model that
    overflows on part of the input space."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        bad = x.flatten(1)[:, 0] > 0.99
        return torch.where(bad[:, None], torch.full_like(out, math.nan), out)


def test_cw_a_row_with_a_non_finite_loss_does_not_poison_the_others(digits):
    model, x, y = digits
    x = x.clone()
    x[:, 0] = x[:, 0].clamp(max=0.5)
    x[0, 0] = 1.0            # row 0: NaN logits at every point C&W visits (its tanh start is saturated)
    net = _NaNWhereBright(model)
    kw = dict(steps=30, binary_search_steps=3, initial_const=1.0)
    res = attacks.get("cw_l2")(net, x, y, **kw)
    rest = attacks.get("cw_l2")(net, x[1:], y[1:], **kw)
    assert res.extra["diverged"].tolist() == [3] + [0] * (len(x) - 1)
    # Row 0 found nothing (success is re-evaluated on the model, whose NaN answer is not y).
    assert torch.equal(res.x_adv[0], x[0]) and math.isinf(float(res.extra["l2"][0]))
    # The other rows: what they get without row 0 in the batch (rows are independent).
    assert bool(rest.success.any()) and torch.equal(res.success[1:], rest.success)
    torch.testing.assert_close(res.x_adv[1:], rest.x_adv, rtol=1e-5, atol=1e-6)
    assert not bool(res.x_adv.isnan().any())


def test_cw_a_row_that_diverges_late_keeps_its_best_finite_result(digits):
    # NaN only once the perturbation is large (> 1.5 in L2): early, finite successes are
    # kept, the row is frozen when it crosses, and every row still ends finite.
    model, x, y = digits

    class Far(nn.Module):
        def forward(self, z):
            out = model(z)
            far = (z - x[: z.shape[0]]).flatten(1).norm(dim=1) > 1.5
            return torch.where(far[:, None], torch.full_like(out, math.inf), out)

    res = attacks.get("cw_l2")(Far(), x, y, steps=100, binary_search_steps=4, initial_const=100.0, lr=0.1)
    assert bool((res.extra["diverged"] > 0).any())
    ok = res.success
    assert bool(ok.any()) and bool((res.extra["l2"][ok] <= 1.5 + 1e-5).all())
    assert not bool(res.x_adv.isnan().any())


class _Constant(nn.Module):
    """Logits that ignore the input: the true class always wins by 5, so C&W's loss never
    changes and no step can succeed."""

    def forward(self, z):
        out = torch.zeros(z.shape[0], 10, dtype=z.dtype, device=z.device)
        return out.index_fill(1, torch.tensor([0], device=z.device), 5.0)


def test_cw_abort_early_stops_a_stalled_example_at_the_next_check():
    # The reference (Carlini & Wagner's l2_attack.py, ABORT_EARLY) compares the loss every
    # steps // 10 steps with 0.9999 x the last check's: a constant loss stops at the
    # second check, i.e. after steps // 10 steps of every binary-search round.
    x = torch.rand(3, 1, 4, 4, generator=gen(0))
    y = torch.zeros(3, dtype=torch.long)
    res = attacks.get("cw_l2")(_Constant(), x, y, steps=50, binary_search_steps=3, abort_early=True)
    assert res.extra["steps"].tolist() == [3 * 5] * 3
    assert not bool(res.success.any()) and torch.equal(res.x_adv, x)
    full = attacks.get("cw_l2")(_Constant(), x, y, steps=50, binary_search_steps=3)
    assert full.extra["steps"].tolist() == [3 * 50] * 3


def test_cw_abort_early_takes_fewer_steps_for_about_the_same_distortion(digits):
    model, x, y = digits
    kw = dict(steps=200, binary_search_steps=4, initial_const=1.0)
    full = attacks.get("cw_l2")(model, x, y, **kw)
    early = attacks.get("cw_l2")(model, x, y, **kw, abort_early=True)
    assert bool((early.extra["steps"] <= full.extra["steps"]).all())
    assert int(early.extra["steps"].sum()) < int(full.extra["steps"].sum())
    ok = full.success & early.success
    assert int(ok.sum()) >= 0.9 * int(full.success.sum())
    ratio = float((early.extra["l2"][ok] / full.extra["l2"][ok]).median())
    assert 0.9 <= ratio <= 1.1, ratio
    # A success is a real one, at the distance reported.
    torch.testing.assert_close(flat_norm(early.x_adv - x)[early.success], early.extra["l2"][early.success])


def test_cw_abort_early_checks_each_example_on_its_own(digits):
    # Unlike the reference's summed batch loss: an example stops on its own loss only,
    # so its result does not depend on the rows beside it.
    model, x, y = digits
    kw = dict(steps=100, binary_search_steps=2, initial_const=1.0, abort_early=True)
    batch = attacks.get("cw_l2")(model, x[:8], y[:8], **kw)
    for i in range(8):
        alone = attacks.get("cw_l2")(model, x[i:i + 1], y[i:i + 1], **kw)
        assert int(alone.extra["steps"][0]) == int(batch.extra["steps"][i])
        torch.testing.assert_close(alone.x_adv[0], batch.x_adv[i], rtol=1e-4, atol=1e-5)


def test_cw_abort_early_must_be_a_bool(digits):
    model, x, y = digits
    with pytest.raises(ConfigError, match="abort_early"):
        attacks.get("cw_l2")(model, x, y, steps=5, abort_early="yes")


# ------------------------------------------------------------------ row chunks (CPU)


@pytest.mark.parametrize("name", ALL)
def test_chunked_batches_give_each_example_the_same_result(digits, name, monkeypatch):
    """On a CPU large batches are attacked 128 rows at a time (runtime.CPU_ROW_CHUNK);
    examples are independent, so chunk size must not change any output."""
    from threatlab import runtime

    model, x, y = digits
    kw = dict(QUICK[name])
    if name == "jsma":
        kw["gamma"] = 0.05
    run = lambda: attacks.get(name)(model, x, y, **kw, generator=gen(1))  # noqa: E731
    monkeypatch.setattr(runtime, "CPU_ROW_CHUNK", 10 ** 9)
    whole = run()
    monkeypatch.setattr(runtime, "CPU_ROW_CHUNK", 7)   # 48 rows -> 7 chunks, the last of 6
    chunked = run()
    if name == "deepfool":
        # DeepFool drops flipped rows, so a chunk can shrink to 1-3 rows, where the CPU
        # matrix kernel rounds differently (~1e-7 in the logits): equal up to rounding.
        torch.testing.assert_close(chunked.x_adv, whole.x_adv, rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(chunked.x_adv, whole.x_adv)
    assert torch.equal(chunked.success, whole.success)
    assert chunked.extra.keys() == whole.extra.keys()
    for k in whole.extra:
        torch.testing.assert_close(chunked.extra[k], whole.extra[k], rtol=0, atol=0, equal_nan=True)


def test_chunked_kernel_checks_shapes_on_the_whole_batch(digits, monkeypatch):
    from threatlab import runtime

    model, x, y = digits
    monkeypatch.setattr(runtime, "CPU_ROW_CHUNK", 7)
    with pytest.raises(ConfigError, match=r"shape \(48,\)"):
        attacks.get("fgsm")(model, x, y[:-1], eps=0.1)


def test_chunked_kernel_rejects_a_bad_row_in_the_last_chunk_before_any_compute(digits, monkeypatch):
    from threatlab import runtime

    _, x, y = digits
    monkeypatch.setattr(runtime, "CPU_ROW_CHUNK", 7)
    x = x.clone()
    x[-1, 0] = 1.5
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        attacks.get("cw_l2")(ExplodingModel(), x, y, steps=2)
