"""The pointwise attack (Schott et al. 2019) and the per-example minimal L0.

Oracles: on a two-class linear model over constant images the minimal L0 is known in
closed form (greedy over per-feature gains), and the attack's end state is 1-minimal
(checked by brute force on a small CNN); a success is always re-evaluated on the model;
an example it cannot fool is a failure (success False, L0 inf), never a clean image
passed off as adversarial.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threatlab import attacks
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox

from test_blackbox import digits_cnn  # noqa: F401  (fixture)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class SumModel(nn.Module):
    """Two classes: logit_1 - logit_0 = sum(x) - threshold."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        s = x.flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), s - self.threshold], 1)


def minimal_l0_linear(x: torch.Tensor, w: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Closed form for a two-class linear score w.x - b: the fewest features whose best
    single changes (to 1 where w > 0, to 0 where w < 0) raise the score past `margin`."""
    xf = x.flatten(1)
    gain = torch.where(w > 0, (1 - xf) * w, -xf * w)
    cum = gain.sort(1, descending=True).values.cumsum(1)
    return (cum <= margin[:, None]).sum(1) + 1


def test_linear_model_minimal_l0_closed_form():
    thr = 20.3  # off the lattice of reachable sums: no ties
    c = torch.tensor([0.1, 0.2, 0.25, 0.3, 0.04, 0.15])
    x = c[:, None, None, None].expand(-1, 1, 8, 8).contiguous()
    y = torch.zeros(6, dtype=torch.long)
    model = SumModel(thr)
    k = minimal_l0_linear(x, torch.ones(64), thr - x.flatten(1).sum(1))
    assert k.tolist() == [16, 10, 6, 2, 19, 13]  # ceil(margin / (1 - c))
    oracle = BlackBox(model, mode="label")
    res = attacks.get("pointwise")(oracle, x, y, generator=gen(0))
    assert res.success.all()
    l0 = res.extra["l0"]
    assert torch.all(l0 <= 2 * k)
    # equal gains: a 1-minimal set holds only raised features, exactly k of them
    assert l0.tolist() == k.float().tolist()
    assert torch.equal(res.queries, oracle.count()[:6])
    assert int(res.queries.sum()) == oracle.total
    assert (res.extra["passes"] >= 1).all()  # the last pass is one that resets nothing


def test_results_are_adversarial_and_one_minimal(digits_cnn):
    model, x, y = digits_cnn
    x, y = x[:10], y[:10]
    oracle = BlackBox(model, mode="label")
    res = attacks.get("pointwise")(oracle, x, y, generator=gen(1))
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert res.success.float().mean() >= 0.8
    changed = (res.x_adv != x).flatten(1)
    l0 = res.extra["l0"]
    assert torch.equal(l0[res.success], changed.sum(1)[res.success].float())
    assert torch.isinf(l0[~res.success]).all()
    assert torch.equal(res.queries, oracle.count()[:10])
    # only salt (1) or pepper (0) values differ from x
    vals = res.x_adv.flatten(1)[changed]
    assert bool(((vals == 0) | (vals == 1)).all())
    # 1-minimal: resetting any single changed feature gives back the label y
    for i in res.success.nonzero().squeeze(1).tolist():  # test-side loop over a few examples
        pos = changed[i].nonzero().squeeze(1)
        trials = res.x_adv[i].flatten().repeat(len(pos), 1)
        trials[torch.arange(len(pos)), pos] = x[i].flatten()[pos]
        with torch.no_grad():
            back = model(trials.reshape(-1, *x.shape[1:])).argmax(1)
        assert bool((back == y[i]).all()), f"example {i}: a changed feature could be reset"


def test_unfoolable_examples_are_failures_not_clean_images():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[2.0, 0.0]]).expand(x.shape[0], 2)

    x = torch.rand(3, 1, 4, 4, generator=gen(2))
    y = torch.zeros(3, dtype=torch.long)
    oracle = BlackBox(Constant(), mode="label")
    res = attacks.get("pointwise")(oracle, x, y, init_steps=10, generator=gen(0))
    assert not res.success.any()
    assert torch.isinf(res.extra["l0"]).all()
    assert torch.equal(res.x_adv, x)
    assert res.queries.tolist() == [11, 11, 11]  # the clean image and 10 noise levels


def test_misclassified_clean_example_has_l0_zero():
    x = torch.full((2, 1, 4, 4), 0.9)
    y = torch.tensor([0, 1])  # SumModel(1.0) says 1 for both: the first is already wrong
    res = attacks.get("pointwise")(BlackBox(SumModel(1.0), mode="label"), x, y, generator=gen(0))
    assert res.success.tolist() == [True, False]
    assert res.extra["l0"][0] == 0 and math.isinf(res.extra["l0"][1])


def test_budget_is_respected_and_points_stay_adversarial():
    thr = 20.3
    x = torch.full((4, 1, 8, 8), 0.1)
    y = torch.zeros(4, dtype=torch.long)
    res = attacks.get("pointwise")(BlackBox(SumModel(thr), mode="label"), x, y, max_queries=60, generator=gen(0))
    assert int(res.queries.max()) <= 60
    with torch.no_grad():
        assert torch.equal(res.success, SumModel(thr)(res.x_adv).argmax(1) != y)


@pytest.mark.parametrize("kw, message", [(dict(max_queries=0), "max_queries=0"),
                                         (dict(init_steps=0), "init_steps=0")])
def test_bad_parameters(kw, message):
    with pytest.raises(ConfigError, match=message):
        attacks.get("pointwise")(BlackBox(SumModel(1.0), mode="label"), torch.zeros(2, 1, 4, 4),
                                 torch.zeros(2, dtype=torch.long), **kw)
    with pytest.raises(ConfigError):
        attacks.get("pointwise")(BlackBox(SumModel(1.0), mode="label"),
                                 torch.full((2, 1, 4, 4), math.nan), torch.zeros(2, dtype=torch.long))
