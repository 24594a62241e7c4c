"""Oracle for stacked early-stopped training (rule G1 for many victims at once, issue #30):
the stacked ensemble must give each model what `models.train_early_stopping` gives it
alone: the same stopping and best epochs, the same weights to the ensemble tests'
tolerance; the cache must hand the same models back."""
from __future__ import annotations

import pytest
import torch

from threatlab import ensemble, models
from threatlab.errors import ConfigError


def _sets(n=400, m=3):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:n], dtype=torch.long)
    out = []
    for j in range(m):   # set j: a different 15 % of its labels shifted by j + 1 (distinct poisoned sets)
        yj = y.clone()
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(j))[: int(0.15 * n)]
        yj[rows] = (yj[rows] + j + 1) % 10
        out.append((x.clone(), yj))
    return out


RULE = dict(holdout=100, patience=1, min_epochs=2, max_epochs=6)


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_stacked_early_stopping_equals_the_loop(arch):
    sets = _sets()
    nets, hist = ensemble.train_ensemble_early_stopping(arch, sets, seed=3, progress=False, **RULE)
    for (x, y), net, h in zip(sets, nets, hist):
        ref = models.build(arch, in_shape=tuple(x.shape[1:]), num_classes=10, seed=3)
        rh = models.train_early_stopping(ref, x, y, seed=3, progress=False, **RULE)
        assert (h["epochs_run"], h["best_epoch"]) == (rh["epochs_run"], rh["best_epoch"])
        assert h["holdout_loss"] == pytest.approx(rh["holdout_loss"], rel=1e-4, abs=1e-5)
        got = net.state_dict()
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5)


def test_stacked_runs_until_the_last_model_stops():
    """Different poisoned sets stop at different epochs; each keeps its own best."""
    sets = _sets(m=4)
    _, hist = ensemble.train_ensemble_early_stopping("mlp", sets, seed=0, progress=False, **RULE)
    for h in hist:
        stop, best = models.stopping_epoch(h["holdout_loss"], patience=1, min_epochs=2, max_epochs=6)
        assert stop == h["epochs_run"] and best == h["best_epoch"]


def test_cached_many_loads_what_it_trained(tmp_path):
    sets = [(x[:1200] if x.shape[0] > 1200 else x, y) for x, y in _sets(n=1100, m=2)]
    first, info1 = ensemble.cached_many("mlp", "digits-test", sets, seed=1, cache_dir=tmp_path)
    again, info2 = ensemble.cached_many("mlp", "digits-test", sets, seed=1, cache_dir=tmp_path)
    assert [i["from_cache"] for i in info1] == [False, False]
    assert [i["from_cache"] for i in info2] == [True, True]
    assert info2[0]["history"]["best_epoch"] == info1[0]["history"]["best_epoch"]
    for a, b in zip(first, again):
        for k, v in a.state_dict().items():
            assert torch.equal(b.state_dict()[k], v)


def test_unequal_sets_are_refused():
    sets = _sets()
    with pytest.raises(ConfigError, match="same shape"):
        ensemble.train_ensemble_early_stopping("mlp", [sets[0], (sets[1][0][:300], sets[1][1][:300])], seed=0)
