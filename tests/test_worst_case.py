"""AutoAttack-style worst-case robustness (protocols.evasion.worst_case_robust)."""
from __future__ import annotations

import pytest
import torch

from threatlab import attacks
from threatlab.errors import ConfigError
from threatlab.protocols.evasion import worst_case_robust

from test_blackbox import digits_cnn  # noqa: F401  (fixture)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_worst_case_is_the_minimum_over_the_ensemble(digits_cnn):
    model, x, y = digits_cnn
    x = torch.cat([x, x.flip(3)])  # mirrored digits: some misclassified clean
    y = torch.cat([y, y])
    out = worst_case_robust(model, x, y, eps=0.1, steps=10, square_queries=100, seed=0)
    with torch.no_grad():
        correct = (model(x).argmax(1) == y)
    assert out["clean_accuracy"] == pytest.approx(float(correct.float().mean()))
    rob = out["robust"]
    assert rob.dtype == torch.bool and rob.shape == y.shape
    assert not bool((rob & ~correct).any())        # a mistake is never robust
    after = list(out["robust_after"].values())
    assert list(out["robust_after"]) == ["apgd_ce", "apgd_dlr", "square_linf"]
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert out["robust_accuracy"] == pytest.approx(after[-1]) == pytest.approx(float(rob.float().mean()))
    # the first attack sees every correct example with the same generator state, so
    # APGD-CE alone leaves at least as many robust as the ensemble
    idx = correct.nonzero().squeeze(1)
    alone = attacks.get("apgd_ce")(model, x[idx], y[idx], eps=0.1, steps=10, generator=gen(0))
    ce_robust = torch.zeros_like(correct)
    ce_robust[idx] = ~alone.success
    assert after[0] == pytest.approx(float(ce_robust.float().mean()))
    assert not bool((rob & ~ce_robust).any())
    # and a robust example really survives each attack run on it alone
    r_idx = rob.nonzero().squeeze(1)
    if r_idx.numel():
        res = attacks.get("apgd_dlr")(model, x[r_idx], y[r_idx], eps=0.1, steps=10, generator=gen(5))
        assert res.success.float().mean() < 0.5


def test_worst_case_validates():
    with pytest.raises(ConfigError, match="eps=0"):
        worst_case_robust(torch.nn.Identity(), torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), eps=0)
