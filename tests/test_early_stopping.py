"""Converged victims (FINDINGS.md rule G1): the early-stopping rule, its held-out split,
training that keeps the best epoch, and the checkpoint cache under the rule."""
import math

import pytest
import torch
import torch.nn.functional as F

from threatlab import models
from threatlab.errors import ConfigError

RULE = dict(patience=3, min_epochs=3, max_epochs=15)


def _rise_after(k: int, total: int = 20) -> list[float]:
    """Losses falling until epoch k (1-based), rising after it."""
    return [1.0 / e if e <= k else 1.0 / k + 0.01 * (e - k) for e in range(1, total + 1)]


# ------------------------------------------------------------------- the rule itself

@pytest.mark.parametrize("k", [3, 4, 7, 12])
def test_rise_after_k_stops_at_k_plus_patience_with_best_k(k):
    assert models.stopping_epoch(_rise_after(k), **RULE) == (k + 3, k)


@pytest.mark.parametrize("patience", [1, 2, 3, 5])
def test_patience_counts_epochs_without_improvement(patience):
    rule = dict(RULE, patience=patience)
    assert models.stopping_epoch(_rise_after(6), **rule) == (6 + patience, 6)


def test_min_epochs_is_respected():
    # Best at epoch 1 with patience 1 would stop after epoch 2; at least 3 epochs run.
    assert models.stopping_epoch(_rise_after(1), patience=1, min_epochs=3, max_epochs=15) == (3, 1)
    assert models.stopping_epoch(_rise_after(1), patience=3, min_epochs=3, max_epochs=15) == (4, 1)
    assert models.stopping_epoch(_rise_after(2), patience=1, min_epochs=6, max_epochs=15) == (6, 2)


def test_max_epochs_is_respected():
    falling = [1.0 / e for e in range(1, 30)]
    assert models.stopping_epoch(falling, **RULE) == (15, 15)
    # Best at 14, max 15: stops at 15 without waiting out the patience.
    assert models.stopping_epoch(_rise_after(14), **RULE) == (15, 14)
    assert models.stopping_epoch(falling, patience=3, min_epochs=1, max_epochs=1) == (1, 1)


def test_a_tie_is_not_an_improvement():
    losses = [1.0, 0.5, 0.5, 0.5, 0.5, 0.4]
    assert models.stopping_epoch(losses, **RULE) == (5, 2)
    # A later, strictly lower loss inside the patience window moves the best on.
    assert models.stopping_epoch([1.0, 0.5, 0.5, 0.49, 0.6, 0.6, 0.6], **RULE) == (7, 4)


def test_nan_is_never_best_and_short_sequences_have_not_stopped():
    assert models.stopping_epoch([1.0, math.nan, math.nan, math.nan], **RULE) == (4, 1)
    assert models.stopping_epoch([math.nan, 1.0, 2.0, 2.0, 2.0], **RULE) == (5, 2)
    assert models.stopping_epoch([1.0, 0.9], **RULE) == (None, 2)
    assert models.stopping_epoch([], **RULE) == (None, 0)


# ---------------------------------------------------------------- held-out split

@pytest.mark.parametrize("n,holdout,seed", [(10, 1, 0), (1797, 1000, 0), (1797, 1000, 3), (5000, 1000, 1)])
def test_holdout_rows_are_disjoint_from_training_rows(n, holdout, seed):
    fit, held = models.holdout_split(n, holdout, seed)
    assert held.numel() == holdout and fit.numel() == n - holdout
    assert set(fit.tolist()).isdisjoint(held.tolist())
    assert sorted(fit.tolist() + held.tolist()) == list(range(n))
    again = models.holdout_split(n, holdout, seed)
    assert torch.equal(again[0], fit) and torch.equal(again[1], held)  # deterministic given the seed


def test_holdout_depends_on_the_seed_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = models.holdout_split(1000, 100, 0)[1]
    b = models.holdout_split(1000, 100, 1)[1]
    assert not torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)


# ----------------------------------------------------------------- training

def _random_labels(n=300, seed=0):
    """Noise images with random labels: the model can only memorise, so its held-out loss
    falls at most briefly and then rises, and the rule must stop before max_epochs."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_the_best_epochs_weights_are_the_ones_returned():
    x, y = _random_labels()
    net = models.build("mlp", in_shape=(1, 4, 4), num_classes=2, seed=0, hidden=(256,))
    hist = models.train_early_stopping(net, x, y, holdout=100, lr=1e-2, batch_size=16, seed=0, progress=False)
    losses, best, run = hist["holdout_loss"], hist["best_epoch"], hist["epochs_run"]
    assert len(losses) == run == len(hist["loss"]) and 3 <= run < 15
    assert models.stopping_epoch(losses, **RULE) == (run, best)
    assert best < run and losses[-1] > losses[best - 1]  # the last epoch was not the best
    _, held = models.holdout_split(300, 100, 0)
    with torch.no_grad():
        mine = F.cross_entropy(net(x[held]), y[held]).item()
    assert mine == pytest.approx(losses[best - 1], rel=1e-5, abs=1e-6)
    assert mine != pytest.approx(losses[-1], rel=1e-3)
    assert not net.training


def test_early_stopping_trains_on_the_training_rows_only(monkeypatch):
    x, y = _random_labels(n=120)
    seen = []
    real = models.train

    def spy(model, xs, ys, **kw):
        seen.append(xs)
        return real(model, xs, ys, **kw)

    monkeypatch.setattr(models, "train", spy)
    net = models.build("mlp", in_shape=(1, 4, 4), num_classes=2, seed=0, hidden=(8,))
    models.train_early_stopping(net, x, y, holdout=20, max_epochs=3, seed=2, progress=False)
    fit, _ = models.holdout_split(120, 20, 2)
    assert len(seen) == 1 and torch.equal(seen[0], x[fit])


# -------------------------------------------------------------------- cache

def _cached(digits, tmp_path, **kw):
    x, y = digits
    args = dict(train_params={"lr": 1e-3}, seed=0, in_shape=(1, 8, 8), num_classes=10, cache_dir=tmp_path,
                progress=False, early_stop={"holdout": 300, "max_epochs": 4}, arch_params={"hidden": [32]})
    args.update(kw)
    return models.cached("mlp", "digits", x[:900], y[:900], **args)


def test_cache_hit_returns_identical_weights_and_history(digits, tmp_path):
    m1, i1 = _cached(digits, tmp_path)
    assert not i1["from_cache"] and i1["history"]["epochs_run"] >= 3
    m2, i2 = _cached(digits, tmp_path)
    assert i2["from_cache"] and i2["key"] == i1["key"]
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    for k in ("holdout_loss", "epochs_run", "best_epoch", "patience", "min_epochs", "max_epochs", "holdout"):
        assert i2["history"][k] == i1["history"][k]


def test_early_stopped_key_differs_from_fixed_epoch_key(digits):
    x, y = digits
    common = dict(seed=0, in_shape=(1, 8, 8), num_classes=10)
    fixed = models.checkpoint_key("mlp", "digits", x, y, train_params={"epochs": 15, "batch_size": 64}, **common)
    es = models.checkpoint_key("mlp", "digits", x, y, train_params=None, early_stop=True, **common)
    es_same = models.checkpoint_key("mlp", "digits", x, y, train_params={"batch_size": 64}, early_stop={}, **common)
    es_other = models.checkpoint_key("mlp", "digits", x, y, train_params=None, early_stop={"patience": 4}, **common)
    assert es == es_same  # defaults filled in: batch 64 and the G1 rule
    assert len({fixed, es, es_other}) == 3
    assert models.checkpoint_key("mlp", "digits", x, y, train_params=None, early_stop=False, **common) == \
        models.checkpoint_key("mlp", "digits", x, y, train_params=None, **common)


# ------------------------------------------------------------ bad arguments

@pytest.mark.parametrize("kw,msg", [
    ({"patience": 0}, r"patience=0 is outside the allowed range"),
    ({"min_epochs": 5, "max_epochs": 4}, r"min_epochs=5 is more than max_epochs=4"),
    ({"holdout": 300}, r"holdout=300 must be smaller than the training set \(300 rows\)"),
    ({"holdout": 0}, r"holdout=0 is outside the allowed range"),
    ({"lr": math.nan}, r"lr=nan must be a number, not NaN"),
    ({"lr": math.inf}, r"lr=inf must be a finite number"),
    ({"max_epochs": 2.5}, r"max_epochs=2.5 must be an integer"),
])
def test_bad_arguments_fail_before_compute(kw, msg, monkeypatch):
    x, y = _random_labels()
    net = models.build("mlp", in_shape=(1, 4, 4), num_classes=2, seed=0, hidden=(8,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    monkeypatch.setattr(models, "train", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ConfigError, match=msg) as err:
        models.train_early_stopping(net, x, y, progress=False, **{"holdout": 100, **kw})
    assert "\n" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("kw,msg", [
    ({"early_stop": {"patience": 0}}, r"patience=0 is outside"),
    ({"early_stop": {"min_epochs": 9, "max_epochs": 3}}, r"min_epochs=9 is more than max_epochs=3"),
    ({"early_stop": {"holdout": 900}}, r"holdout=900 must be smaller than the training set \(900 rows\)"),
    ({"early_stop": {"patiance": 3}}, r"early_stop has unknown keys \['patiance'\]"),
    ({"early_stop": "yes"}, r"early_stop='yes' is not allowed"),
    ({"train_params": {"lr": math.nan}}, r"lr=nan must be a number, not NaN"),
    ({"train_params": {"epochs": 5}}, r"epochs=5 is not allowed with early stopping"),
])
def test_cached_refuses_bad_early_stopping_before_training(digits, tmp_path, kw, msg, monkeypatch):
    monkeypatch.setattr(models, "train_early_stopping", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ConfigError, match=msg) as err:
        _cached(digits, tmp_path, **kw)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "models").exists()


def test_stopping_rule_refuses_bad_rules():
    with pytest.raises(ConfigError, match=r"patience=0"):
        models.stopping_epoch([1.0], patience=0)
    with pytest.raises(ConfigError, match=r"min_epochs=4 is more than max_epochs=3"):
        models.stopping_epoch([1.0], min_epochs=4, max_epochs=3)


def test_train_refuses_a_non_callable_after_epoch_and_stops_when_it_says_so():
    x, y = _random_labels(n=64)
    net = models.build("mlp", in_shape=(1, 4, 4), num_classes=2, seed=0, hidden=(8,))
    with pytest.raises(ConfigError, match=r"after_epoch=3 is not allowed"):
        models.train(net, x, y, epochs=2, after_epoch=3, progress=False)
    calls = []
    hist = models.train(net, x, y, epochs=9, progress=False, after_epoch=lambda e, h: calls.append(e) or e == 1)
    assert calls == [0, 1] and len(hist["loss"]) == 2
