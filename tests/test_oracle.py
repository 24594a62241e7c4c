import math

import numpy as np
import pytest
import torch

from threatlab import models
from threatlab.errors import ConfigError, QueryBudgetExceeded
from threatlab.oracle import BlackBox


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 5))


def test_counts_are_exact_per_example_and_total():
    bb = BlackBox(model(), mode="probs")
    x = torch.rand(6, 4)
    bb(x)                                    # ids 0..5 once
    bb(x[:2], ids=torch.tensor([4, 5]))      # 4 and 5 again
    bb(x[:3], ids=np.array([5, 5, 9]))      # 5 twice more, 9 once (grows the counter)
    assert bb.total == 6 + 2 + 3
    assert bb.queries.tolist() == [1, 1, 1, 1, 2, 4, 0, 0, 0, 1]
    assert int(bb.count().sum()) == bb.total
    assert bb.count(torch.tensor([5, 9])).tolist() == [4, 1]


@pytest.mark.parametrize("mode", ["probs", "topk", "label", "rounded"])
def test_output_modes(mode):
    m = model()
    bb = BlackBox(m, mode=mode, k=2, decimals=1)
    x = torch.rand(8, 4)
    out = bb(x)
    p = torch.softmax(m(x), 1).detach()
    if mode == "label":
        assert out.dtype == torch.long and torch.equal(out, p.argmax(1))
    elif mode == "probs":
        assert torch.allclose(out, p)
    elif mode == "topk":
        assert ((out > 0).sum(1) == 2).all()
        assert torch.equal(out.argmax(1), p.argmax(1))
    else:
        assert torch.allclose(out * 10, torch.round(out * 10))


def test_per_example_budget_refuses_before_answering():
    bb = BlackBox(model(), mode="label", budget=2)
    x = torch.rand(3, 4)
    bb(x)
    bb(x)
    with pytest.raises(QueryBudgetExceeded, match="budget=2"):
        bb(x[:1], ids=[1])
    assert bb.queries.tolist() == [2, 2, 2] and bb.total == 6   # nothing charged


def test_total_budget():
    bb = BlackBox(model(), total_budget=5)
    bb(torch.rand(4, 4))
    with pytest.raises(QueryBudgetExceeded, match="total_budget=5"):
        bb(torch.rand(2, 4))


@pytest.mark.parametrize("kw,match", [({"mode": "logits"}, "mode='logits'"), ({"budget": 0}, "budget=0"),
                                      ({"k": -1}, "k=-1"), ({"total_budget": 1.5}, "total_budget=1.5"),
                                      ({"max_batch": 0}, "max_batch=0")])
def test_bad_arguments(kw, match):
    with pytest.raises(ConfigError, match=match):
        BlackBox(model(), **kw)


class _RowCounter(torch.nn.Module):
    """Records the size of every batch the oracle sends through the model."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize("max_batch,sizes", [(None, [100, 100, 100]), (128, [128, 128, 44]), (1000, [300])])
def test_large_queries_are_chunked_with_the_same_answers_and_counts(max_batch, sizes):
    inner = model()
    counted = _RowCounter(inner)
    bb = BlackBox(counted, mode="probs", max_batch=max_batch)
    x = torch.rand(300, 4)
    out = bb(x)
    assert counted.sizes == sizes       # default: even chunks of at most 128 rows on CPU
    assert torch.equal(out, torch.softmax(inner(x), 1).detach())
    assert bb.total == 300 and bb.queries.tolist() == [1] * 300


# ------------------------------------------------------ bad queries (issue 21)


@pytest.mark.parametrize("value, match", [
    (math.nan, "NaN or infinite"), (math.inf, "NaN or infinite"), (-math.inf, "NaN or infinite"),
    (-0.5, r"query x must lie in \[0, 1\]"), (1.5, r"query x must lie in \[0, 1\]"),
    (255.0, r"query x must lie in \[0, 1\]; got values in \[0, 255\]"),
])
@pytest.mark.parametrize("mode", ["probs", "label"])
def test_queries_outside_unit_box_or_nonfinite_are_refused_uncharged(value, match, mode):
    bb = BlackBox(model(), mode=mode)
    x = torch.rand(3, 4)
    x[1, 2] = value
    if value == 255.0:
        x[0, 0] = 0.0
    with pytest.raises(ConfigError, match=match):
        bb(x)
    assert bb.total == 0 and bb.queries.size == 0       # nothing was charged or answered


def test_queries_must_match_the_models_shape_dtype_and_device():
    net = models.build("cnn", in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    bb = BlackBox(net, mode="probs")
    with pytest.raises(ConfigError, match=r"query x has shape \(2, 64\); the model expects \[n, 1, 8, 8\]"):
        bb(torch.rand(2, 64))
    with pytest.raises(ConfigError, match="query x has dtype torch.float64"):
        bb(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ConfigError, match="query x must be a floating tensor"):
        bb((torch.rand(2, 1, 8, 8) * 255).to(torch.uint8))
    with pytest.raises(ConfigError, match="query x must be a floating tensor"):
        bb(torch.rand(64))
    with pytest.raises(ConfigError, match="query x is on cpu but the model is on meta"):
        BlackBox(models.build("cnn", in_shape=(1, 8, 8), seed=0).to("meta"))(torch.rand(2, 1, 8, 8))
    assert bb.total == 0
    assert bb(torch.rand(2, 1, 8, 8)).shape == (2, 10) and bb.total == 2


def test_an_empty_query_is_answered_empty_and_costs_nothing():
    for mode, width in (("probs", 5), ("label", None)):
        bb = BlackBox(model(), mode=mode, budget=1)
        out = bb(torch.rand(0, 4))
        assert out.shape[0] == 0 and (width is None or out.shape == (0, width))
        assert bb.total == 0


def test_rounding_slack_of_a_blend_is_accepted_but_not_more():
    from threatlab.oracle import QUERY_TOLERANCE
    bb = BlackBox(model(), mode="label")
    x = torch.rand(2, 4)
    x[0, 0] = 1 + QUERY_TOLERANCE / 2          # a few ulps past the box, as a blend can be
    assert bb(x).shape == (2,)
    x[0, 0] = 1 + 2 * QUERY_TOLERANCE
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\]"):
        bb(x)
