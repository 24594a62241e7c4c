"""protocols.robustness: minimal L0 over JSMA and the pointwise attack, and the
per-example worst case over an attack ensemble.

Oracles: a model JSMA cannot read (zero saliency) still gets the pointwise L0, which
is known in closed form; the worst case never reports more robustness than any of its
attacks (property over random small models), and on a two-class linear model, where
FGSM's sign step is the optimal L-inf attack, it equals FGSM's, i.e. the closed form.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threatlab import attacks, models
from threatlab.errors import ConfigError
from threatlab.protocols.robustness import minimal_l0, worst_case

from test_blackbox import digits_cnn  # noqa: F401  (fixture)
from test_pointwise import SumModel


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------- minimal L0


def test_minimal_l0_falls_back_to_pointwise_when_jsma_cannot_read_the_model():
    # SumModel's saliency has no admissible pair (the other logit is constant): JSMA fails
    c = torch.tensor([0.1, 0.2, 0.3])
    x = c[:, None, None, None].expand(-1, 1, 8, 8).contiguous()
    y = torch.zeros(3, dtype=torch.long)
    m = minimal_l0(SumModel(20.3), x, y, generator=gen(0))
    assert torch.isinf(m.jsma_l0).all()
    assert m.source == ["pointwise"] * 3
    k = torch.ceil((20.3 - 64 * c.double()) / (1 - c.double()))
    assert m.l0.tolist() == k.tolist()
    assert torch.equal(m.l0, m.pointwise_l0)


def test_minimal_l0_is_the_smaller_and_its_adversarial_holds_it(digits_cnn):
    model, x, y = digits_cnn
    x, y = x[:12], y[:12]
    m = minimal_l0(model, x, y, jsma_cap=0.2, generator=gen(0))
    assert torch.equal(m.l0, torch.minimum(m.jsma_l0, m.pointwise_l0))
    fin = torch.isfinite(m.l0)
    assert fin.float().mean() >= 0.9
    with torch.no_grad():
        assert bool((model(m.x_adv[fin]).argmax(1) != y[fin]).all())
    changed = (m.x_adv != x).flatten(1).sum(1).float()
    assert torch.equal(changed[fin], m.l0[fin])
    assert torch.equal(m.x_adv[~fin], x[~fin])
    for s, a, b in zip(m.source, m.jsma_l0.tolist(), m.pointwise_l0.tolist()):
        assert s == ("none" if math.isinf(min(a, b)) else "jsma" if a <= b else "pointwise")
    cap = int(0.2 * 64)
    assert (m.jsma_l0[torch.isfinite(m.jsma_l0)] <= cap).all()


def test_minimal_l0_validates():
    with pytest.raises(ConfigError, match="jsma_cap=0"):
        minimal_l0(SumModel(1.0), torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), jsma_cap=0)


# -------------------------------------------------------------------- worst case


RANDOM_ATTACKS = {"fgsm": ("fgsm", {}), "pgd": ("pgd_linf", {"steps": 5}), "apgd_ce": ("apgd_ce", {"steps": 5}),
                  "apgd_dlr": ("apgd_dlr", {"steps": 5}), "square": ("square_linf", {"max_queries": 40})}


def _alone(model, x, y, name, kw, eps, seed):
    from threatlab.oracle import BlackBox
    target = BlackBox(model, mode="probs") if name.startswith("square") else model
    res = attacks.get(name)(target, x, y, eps=eps, generator=gen(seed), **kw)
    with torch.no_grad():
        return model(res.x_adv).argmax(1) != y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_worst_case_never_exceeds_any_component(seed):
    model = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=seed).eval()
    x = torch.rand(40, 1, 8, 8, generator=gen(seed))
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.where(torch.arange(40) % 4 == 0, (pred + 1) % 10, pred)  # a quarter misclassified
    eps = 0.05
    wc = worst_case(model, x, y, RANDOM_ATTACKS, eps=eps, seed=seed, cascade=False)
    correct = pred == y
    assert wc["clean_accuracy"] == pytest.approx(0.75)
    assert not bool((wc["robust"] & ~correct).any())
    for label, acc in wc["per_attack"].items():
        assert wc["robust_accuracy"] <= acc + 1e-12, label
        # each component equals the attack run alone on the correctly classified rows
        name, kw = RANDOM_ATTACKS[label]
        fooled = _alone(model, x[correct], y[correct], name, kw, eps, seed)
        assert acc == pytest.approx(float((~fooled).sum()) / 40), label
    after = list(wc["robust_after"].values())
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert wc["robust_accuracy"] == after[-1] == pytest.approx(float(wc["robust"].float().mean()))
    assert sum(wc["outside_ball"].values()) == 0
    broken = wc["broken_by"]
    assert bool(((broken >= 0) == (correct & ~wc["robust"])).all())


@pytest.mark.parametrize("seed", [0, 1])
def test_cascade_with_deterministic_attacks_never_exceeds_any_alone(seed):
    model = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=seed).eval()
    x = torch.rand(30, 1, 8, 8, generator=gen(seed + 10))
    with torch.no_grad():
        y = model(x).argmax(1)
    det = {"fgsm": ("fgsm", {}), "pgd": ("pgd_linf", {"steps": 4, "random_start": False}),
           "apgd": ("apgd_ce", {"steps": 4, "random_start": False})}
    eps = 0.05
    wc = worst_case(model, x, y, det, eps=eps, seed=seed)
    assert wc["per_attack"] is None
    for label, (name, kw) in det.items():
        alone = float((~_alone(model, x, y, name, kw, eps, seed)).float().mean())
        assert wc["robust_accuracy"] <= alone + 1e-12, label


def test_worst_case_equals_the_dominant_attack_and_the_closed_form():
    # Two classes, logit_1 - logit_0 = w.x + b: an L-inf attack can do no better than
    # FGSM's sign step, so FGSM dominates and robust <=> |w.x + b| / ||w||_1 > eps.
    torch.manual_seed(0)
    lin = nn.Linear(64, 1)
    model = nn.Sequential(nn.Flatten(), lin, Pair()).eval()
    x = 0.3 + 0.4 * torch.rand(200, 1, 8, 8, generator=gen(3))  # the box never binds at eps
    with torch.no_grad():
        score = lin(x.flatten(1)).squeeze(1)
        dist = score.abs() / lin.weight.abs().sum()
    eps = float(dist.median())
    keep = (dist - eps).abs() > 0.02 * eps  # no example within rounding of the boundary
    x, dist = x[keep], dist[keep]
    y = (score[keep] > 0).long()
    spec = {"pgd": ("pgd_linf", {"steps": 3}), "fgsm": ("fgsm", {}), "apgd": ("apgd_ce", {"steps": 3})}
    wc = worst_case(model, x, y, spec, eps=eps, seed=0, cascade=False)
    assert wc["clean_accuracy"] == 1.0
    assert torch.equal(wc["robust"], dist > eps)
    assert wc["robust_accuracy"] == pytest.approx(min(wc["per_attack"].values()))
    assert wc["robust_accuracy"] == pytest.approx(wc["per_attack"]["fgsm"])


class Pair(nn.Module):
    def forward(self, s):
        return torch.cat([torch.zeros_like(s), s], 1)


def test_outside_ball_adversarials_do_not_count():
    model = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=0).eval()
    x = torch.rand(10, 1, 8, 8, generator=gen(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    # L-inf PGD at eps = 0.5 judged in the L2 ball of 0.5: most of its adversarials leave it
    wc = worst_case(model, x, y, {"pgd": ("pgd_linf", {"steps": 5})}, eps=0.5, norm="l2")
    res = attacks.get("pgd_linf")(model, x, y, eps=0.5, steps=5, generator=gen(0))
    with torch.no_grad():
        wrong = model(res.x_adv).argmax(1) != y
    inside = (res.x_adv - x).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-5) + 1e-6
    assert wc["outside_ball"]["pgd"] == int((wrong & ~inside).sum()) > 0
    assert wc["robust_accuracy"] == pytest.approx(1 - float((wrong & inside).float().mean()))


@pytest.mark.parametrize("spec, message", [
    ([], "attacks is empty"), ("fgsm", "must be a list"), (["nope"], "attack='nope'"),
    ({"a": ("fgsm", {"eps": 0.1})}, "sets 'eps'"), ({"a": "fgsm"}, "must be a"),
])
def test_worst_case_validates(spec, message):
    m = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=0).eval()
    with pytest.raises(ConfigError, match=message):
        worst_case(m, torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), spec, eps=0.1)
    with pytest.raises(ConfigError, match="eps=0"):
        worst_case(m, torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), ["fgsm"], eps=0)
