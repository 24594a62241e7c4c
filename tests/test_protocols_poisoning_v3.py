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


@pytest.mark.parametrize("c", [2, 3])
def test_shared_rows_give_the_heads_of_the_copied_rows(c):
    """F11's form: 1,000-like shared clean rows + a few own rows per head, passed once,
    against the same rows copied into every head's features."""
    xs, ys = overlapping(n=200, c=c, seed=7)
    own = [overlapping(n=4, c=c, seed=10 + i) for i in range(5)]
    f_own, y_own = torch.stack([o[0] for o in own]), torch.stack([o[1] for o in own])
    copied = PP.fit_logistic_head(torch.cat([xs.expand(5, *xs.shape), f_own], 1),
                                  torch.cat([ys.expand(5, -1), y_own], 1), num_classes=c, l2=1e-2)
    shared = PP.fit_logistic_head(f_own, y_own, num_classes=c, l2=1e-2, shared_features=xs, shared_labels=ys)
    torch.testing.assert_close(shared.weight, copied.weight, rtol=1e-5, atol=1e-7)  # as batched vs single: L-BFGS stops within its tolerance
    torch.testing.assert_close(shared.bias, copied.bias, rtol=1e-5, atol=1e-7)  # as batched vs single: L-BFGS stops within its tolerance
    assert shared.grad_max < 1e-6
    # and with no own rows at all, the shared rows alone are the single head's data
    alone = PP.fit_logistic_head(xs[:0].unsqueeze(0), ys[:0].unsqueeze(0), num_classes=c, l2=1e-2,
                                 shared_features=xs, shared_labels=ys)
    one = PP.fit_logistic_head(xs, ys, num_classes=c, l2=1e-2)
    torch.testing.assert_close(alone.weight, one.weight, rtol=1e-5, atol=1e-7)  # as batched vs single: L-BFGS stops within its tolerance


def test_shared_rows_bad_input():
    x, y = overlapping()
    f = x[:3].unsqueeze(0)
    yy = y[:3].unsqueeze(0)
    with pytest.raises(ConfigError, match="go together"):
        PP.fit_logistic_head(f, yy, shared_features=x)
    with pytest.raises(ConfigError, match=r"shared_features must be a floating tensor \[n, 6\]"):
        PP.fit_logistic_head(f, yy, shared_features=x[:, :1], shared_labels=y)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="shared_features must be finite"):
        PP.fit_logistic_head(f, yy, shared_features=bad, shared_labels=y)
    with pytest.raises(ConfigError, match="shared_labels must be an integer tensor"):
        PP.fit_logistic_head(f, yy, shared_features=x, shared_labels=y[:-1])
    with pytest.raises(ConfigError, match="labels must lie in 0..1"):
        PP.fit_logistic_head(f, yy, shared_features=x, shared_labels=y + 1)


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


# ------------------------------------------------------------------ F11 outcomes


@pytest.fixture(scope="module")
def f11_setup():
    """A digits MLP victim, the binary task 3 vs its nearest class, 12 correctly classified targets."""
    from sklearn.datasets import load_digits

    from threatlab import models
    from threatlab.attacks import poisoning as P

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    m = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=(32,))
    models.train(m, x[:1200], y[:1200], epochs=15, batch_size=64, lr=3e-3, progress=False)
    m.eval()
    with torch.no_grad():
        bc = P.nearest_class(m.features(x[:1200]), y[:1200], 3)
    task = (y[:1200] == 3) | (y[:1200] == bc)
    x_ft, y_ft = x[:1200][task][:120], y[:1200][task][:120]
    test = (y[1200:] == 3) & (models.predict(m, x[1200:]) == 3)
    return m, x_ft, y_ft, x[1200:][test][:12], bc


def test_collision_outcomes_planted_poisons(f11_setup):
    m, x_ft, y_ft, x_t, bc = f11_setup
    # Oracle poisons: 30 copies of the target itself labelled as the base class. Both
    # regimes must then label the target as the base class; the controls must not.
    # (120 clean images are 2 batches an epoch: the fine-tuning gets a larger rate and more
    # epochs than the register's, so that the oracle holds by a wide margin.)
    planted = x_t.unsqueeze(1).expand(-1, 30, -1, -1, -1)
    out = PP.collision_outcomes(m, x_ft, y_ft, planted, x_t, target_class=3, base_class=bc, epochs=30, lr=1e-2)
    assert bool(out.success["transfer"].all()) and bool(out.success["end2end"].all())
    assert out.control["transfer"].float().mean() <= 0.2 and out.control["end2end"].float().mean() <= 0.2
    assert out.success["transfer"].shape == (12,) and out.success["transfer"].dtype == torch.bool


def test_collision_outcomes_head_t_judges_target_t(f11_setup):
    m, x_ft, y_ft, x_t, bc = f11_setup
    # Poisons: target 0 gets 30 copies of itself, the others one clean base image each.
    base_img = x_ft[y_ft == bc][:1]
    xp = base_img.unsqueeze(0).expand(4, 30, -1, -1, -1).clone()
    xp[0] = x_t[0]
    out = PP.collision_outcomes(m, x_ft, y_ft, xp, x_t[:4], target_class=3, base_class=bc, regimes=("transfer",))
    assert bool(out.success["transfer"][0])
    # Target 1's head, fitted alone, decides the same way as in the batch.
    with torch.no_grad():
        f = m.features(torch.cat([x_ft, xp[1]]))
        ft = m.features(x_t[1:2])
    lab = torch.cat([(y_ft == bc).long(), torch.ones(30, dtype=torch.long)])
    alone = PP.fit_logistic_head(f, lab, l2=1e-4)
    assert bool(alone.logits(ft)[0, 0] > 0) == bool(out.success["transfer"][1])
    assert "end2end" not in out.success


def test_collision_outcomes_bad_input(f11_setup):
    m, x_ft, y_ft, x_t, bc = f11_setup
    xp = x_t.unsqueeze(1)
    with pytest.raises(ConfigError, match="two classes"):
        PP.collision_outcomes(m, x_ft, y_ft, xp, x_t, target_class=3, base_class=3)
    with pytest.raises(ConfigError, match="y_clean"):
        PP.collision_outcomes(m, x_ft, (y_ft + 1) % 10, xp, x_t, target_class=3, base_class=bc)
    with pytest.raises(ConfigError, match="x_poison"):
        PP.collision_outcomes(m, x_ft, y_ft, x_t, x_t, target_class=3, base_class=bc)
    with pytest.raises(ConfigError, match="regime"):
        PP.collision_outcomes(m, x_ft, y_ft, xp, x_t, target_class=3, base_class=bc, regimes=("linear",))


# ------------------------------------------------------------------ F12 trial per draw


class PixelVictim(torch.nn.Module):
    """Stub victim: its representation is the raw pixels (the trigger is then a direction
    the poisons share), its prediction 'target class' exactly when the trigger corner is lit."""

    def __init__(self, target_class, num_classes):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.t, self.c = target_class, num_classes

    def penultimate(self, x):
        return x.flatten(1) + 0 * self.w

    def forward(self, x):
        lit = x[:, 0, -3:-1, -3:-1].mean((1, 2)) > 0.99
        return torch.nn.functional.one_hot(torch.where(lit, self.t, (self.t + 1) % self.c), self.c).float()


def test_spectral_trial_draws_differ_and_repeat(digits):
    from threatlab.attacks import poisoning as P

    x, y = digits
    calls = []

    def victim(xs, ys, tag):
        calls.append((tag, xs.shape[0]))
        return PixelVictim(0, 10)

    trig = P.make_trigger(2, 1, "square")
    kw = dict(rate=0.02, target_class=0, source_class=7, trigger=trig, num_classes=10, seed=3)
    a0 = PP.spectral_trial(victim, x[:1000], y[:1000], x[1000:], y[1000:], draw=0, **kw)
    a0b = PP.spectral_trial(victim, x[:1000], y[:1000], x[1000:], y[1000:], draw=0, **kw)
    a1 = PP.spectral_trial(victim, x[:1000], y[:1000], x[1000:], y[1000:], draw=1, **kw)
    assert a0 == a0b                                               # deterministic per draw
    assert a0["n_poison"] == a1["n_poison"] == 20
    assert calls[0] == ("spectral_s3_d0", 1000) and calls[1][0] == "spectral_s3_d0_retrained"
    assert calls[4][0] == "spectral_s3_d1"
    g0, g1 = PP.poison_draw_generator(3, 0), PP.poison_draw_generator(3, 1)
    idx0 = P.badnets(x[:1000], y[:1000], rate=0.02, target_class=0, source_class=7, trigger=trig, num_classes=10,
                     generator=g0).poison_idx
    idx1 = P.badnets(x[:1000], y[:1000], rate=0.02, target_class=0, source_class=7, trigger=trig, num_classes=10,
                     generator=g1).poison_idx
    assert not torch.equal(idx0, idx1)                             # the two draws differ
    # Lit squares are a strong shared direction: all found, none left, the stub backdoor gone.
    for r in (a0, a1):
        assert r["recall"] == 1.0 and r["poisons_left"] == 0
        assert r["success_before"] == 1.0 and r["success_after"] == 1.0   # the stub ignores training
        assert r["removed"] >= r["n_poison"]
    with pytest.raises(ConfigError, match="draw"):
        PP.poison_draw_generator(3, -1)


def test_craft_frogs_rows_and_bases(f11_setup):
    from threatlab.attacks import poisoning as P

    m, x_ft, y_ft, x_t, bc = f11_setup
    pool = x_ft[y_ft == bc]
    res, idx = PP.craft_frogs(m, x_t[:3], pool, base_class=bc, n_poisons=2, steps=5)
    assert idx.shape == (3, 2) and res.x_poison.shape == (6, *x_t.shape[1:])
    with torch.no_grad():
        d = torch.cdist(m.features(x_t[:3]).double(), m.features(pool).double())
    assert torch.equal(idx, d.argsort(1)[:, :2])                       # nearest first
    assert bool((res.y_poison == bc).all())
    # Row t * K + j collides with target t: same starting distances as computed by hand.
    assert torch.allclose(res.dist_before, d.gather(1, idx).flatten().float(), rtol=1e-4)
