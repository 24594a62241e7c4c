"""Register v3 protocol helpers for poisoning (threatlab.protocols.poisoning): F09's pair
rule on hand-made confusions, F11's logistic head against scikit-learn, the collision
outcomes' bookkeeping, F12's trial per poison draw."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from threatlab.errors import ConfigError
from threatlab.protocols import poisoning as PP


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ F09 pair rule


def logits_for(pred: list[int], c: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(pred), c).float() * 5


def test_confusion_pair_hand_made():
    # true:      0 0 0 1 1 1 1 2 2 2
    # predicted: 0 2 2 1 0 0 1 2 1 0  -> off-diagonal counts (0,2)=2, (1,0)=2, (2,1)=1, (2,0)=1
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    pred = [0, 2, 2, 1, 0, 0, 1, 2, 1, 0]
    pair = PP.confusion_pair(logits_for(pred, 3), None, y, num_classes=3)
    assert (pair.source, pair.target, pair.count) == (0, 2, 2)     # tie (0,2) vs (1,0): lower true class
    assert pair.matrix.tolist() == [[1, 0, 2], [2, 2, 0], [1, 1, 1]]
    # Break the tie: one more 1 -> 0 confusion.
    pair = PP.confusion_pair(logits_for(pred + [0], 3), None, torch.cat([y, torch.tensor([1])]), num_classes=3)
    assert (pair.source, pair.target, pair.count) == (1, 0, 3)


def test_confusion_pair_same_from_model_and_logits():
    w = torch.randn(16, 4, generator=gen(1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(w.T)
    x = torch.rand(200, 1, 4, 4, generator=gen(2))
    y = torch.randint(0, 4, (200,), generator=gen(3))
    a = PP.confusion_pair(model, x, y, num_classes=4)
    b = PP.confusion_pair(model(x).detach(), None, y, num_classes=4)
    assert (a.source, a.target, a.count) == (b.source, b.target, b.count)
    off = a.matrix.clone().fill_diagonal_(-1)
    assert a.count == int(off.max()) and a.source != a.target


def test_confusion_pair_perfect_victim_and_bad_input():
    y = torch.tensor([0, 1, 2])
    pair = PP.confusion_pair(logits_for([0, 1, 2], 3), None, y, num_classes=3)
    assert (pair.source, pair.target, pair.count) == (0, 1, 0)
    bad = logits_for([0, 1, 2], 3)
    bad[0, 0] = float("nan")
    with pytest.raises(ConfigError):
        PP.confusion_pair(bad, None, y, num_classes=3)
    with pytest.raises(ConfigError):
        PP.confusion_pair(logits_for([0, 1, 2], 3), None, y, num_classes=4)


# ------------------------------------------------------------------ F11 logistic head


def overlapping(n=300, d=6, c=2, seed=0):
    g = gen(seed)
    y = torch.arange(n) % c
    centres = torch.randn(c, d, generator=g)
    x = centres[y] + 1.5 * torch.randn(n, d, generator=g) + 2.0   # offset: the bias matters
    return x, y


@pytest.mark.parametrize("c", [2, 3])
def test_logistic_head_matches_sklearn(c):
    from sklearn.linear_model import LogisticRegression

    x, y = overlapping(c=c)
    l2 = 1e-2
    head = PP.fit_logistic_head(x, y, num_classes=c, l2=l2, max_iter=500)
    # sklearn minimises C * sum(loss) + ||W||^2 / 2; ours is mean(loss) + l2 / 2 ||W||^2: C = 1 / (l2 n).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-12, max_iter=10000).fit(x.double().numpy(), y.numpy())
    coef = head.weight[0].numpy().reshape(ref.coef_.shape)
    np.testing.assert_allclose(coef, ref.coef_, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(head.bias[0].numpy().reshape(-1), ref.intercept_, rtol=1e-3, atol=1e-6)
    assert np.array_equal(head.predict(x)[0].numpy(), ref.predict(x.double().numpy()))
    assert head.grad_max < 1e-6 and head.iterations <= 500


def test_logistic_head_register_l2_matches_sklearn():
    """The register's L2 1e-4 on F11-like data (1,000 rows): same coefficients."""
    from sklearn.linear_model import LogisticRegression

    x, y = overlapping(n=1000, d=10, seed=4)
    head = PP.fit_logistic_head(x, y, l2=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LogisticRegression(C=1 / (1e-4 * 1000), tol=1e-12, max_iter=10000).fit(x.double().numpy(), y.numpy())
    np.testing.assert_allclose(head.weight[0].numpy(), ref.coef_[0], rtol=1e-3, atol=1e-6)
    assert np.array_equal(head.predict(x)[0].numpy(), ref.predict(x.double().numpy()))


def test_logistic_heads_batched_equal_single():
    xs, ys = zip(*(overlapping(seed=s) for s in range(3)))
    batched = PP.fit_logistic_head(torch.stack(xs), torch.stack(ys), l2=1e-2)
    for i in range(3):
        one = PP.fit_logistic_head(xs[i], ys[i], l2=1e-2)
        assert torch.allclose(batched.weight[i], one.weight[0], rtol=1e-5, atol=1e-7)
        assert torch.allclose(batched.bias[i], one.bias[0], rtol=1e-5, atol=1e-7)


def test_logistic_head_bad_input():
    x, y = overlapping()
    bad = x.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ConfigError):
        PP.fit_logistic_head(bad, y)
    with pytest.raises(ConfigError):
        PP.fit_logistic_head(x, y + 1)                # label 2 in a binary task
    with pytest.raises(ConfigError):
        PP.fit_logistic_head(x, y[:-1])
