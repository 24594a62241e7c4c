"""Register v3's F18 PGD adversarial training (Madry et al. 2018): 7 attack steps + 1
training pass per optimiser step, a random start inside the ball, the budget ramped
over the first 30 % of the steps, cached; and it raises PGD robust accuracy."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from threatlab import attacks, models
from threatlab.defenses.adversarial_training import adversarial_train, cached_madry, eps_ramp
from threatlab.errors import ConfigError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Recorder(nn.Module):
    """The model, with every forward input kept and every gradient pass counted."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.inputs, self.backward = inner, [], 0

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        out = self.inner(x)
        if out.requires_grad:
            out.register_hook(self._count)
        return out

    def _count(self, grad):
        self.backward += 1


def test_eps_ramp_values():
    assert [round(e, 12) for e in eps_ramp(0.3, 10, 0.3)] == [0.1, 0.2, 0.3] + [0.3] * 7
    assert eps_ramp(0.3, 4, 0.0) == [0.3] * 4
    # the quick profile: 16 epochs x ceil(20000 / 64) steps, ramp over int(0.3 * 5008) = 1502
    sched = eps_ramp(0.3, 16 * 313, 0.3)
    assert len(sched) == 5008
    assert sched[0] == pytest.approx(0.3 / 1502) and sched[1500] < 0.3 and sched[1501] == 0.3 == sched[-1]
    assert all(b >= a for a, b in zip(sched, sched[1:]))
    with pytest.raises(ConfigError, match="warmup=1"):
        eps_ramp(0.3, 10, 1)


def test_pgd7_passes_random_start_and_ramp_per_step():
    n, eps, epochs = 32, 0.09, 10
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=gen(0))  # the box never binds
    y = torch.arange(n) % 10
    rec = Recorder(models.build("mlp", in_shape=(1, 8, 8), hidden=(32,), seed=0))
    hist = adversarial_train(rec, x, y, eps=eps, steps=7, warmup=0.3, epochs=epochs, batch_size=n,
                                seed=0, progress=False)
    # one optimiser step per epoch here: 7 attack passes + 1 training pass each
    assert len(rec.inputs) == 8 * epochs and rec.backward == 8 * epochs
    assert hist["forward_per_step"] == 8 and hist["backward_per_step"] == 8
    assert hist["optimizer_steps"] == epochs
    sched = eps_ramp(eps, epochs, 0.3)  # eps / 3, 2 eps / 3, eps, ...
    flat = x.flatten(1)

    def nearest(batch):  # L-inf distance of each row to its clean row (rows are far apart)
        return (batch.flatten(1)[:, None] - flat[None]).abs().amax(2).min(1).values

    for t in range(epochs):
        start, trained = rec.inputs[8 * t], rec.inputs[8 * t + 7]
        d0 = nearest(start)
        assert bool((d0 > 0).all()) and bool((d0 <= sched[t] + 1e-6).all())  # random start in the ball
        # sign steps of 2.5 eps_t / 7 reach the ball's surface: the budget is the ramp's
        assert nearest(trained).max().item() == pytest.approx(sched[t], abs=1e-6)


def test_fgsm_rs_still_counts_two_passes_per_step():
    x = torch.rand(64, 1, 8, 8, generator=gen(1))
    y = torch.arange(64) % 10
    m = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=0)
    hist = adversarial_train(m, x, y, eps=0.1, epochs=2, batch_size=32, method="fgsm_rs", progress=False)
    assert hist["forward_per_step"] == 2 and hist["backward_per_step"] == 2


def test_cached_madry_trains_once_and_reports_cost(tmp_path):
    x = torch.rand(64, 1, 8, 8, generator=gen(2))
    y = torch.arange(64) % 10
    kw = dict(eps=0.1, epochs=2, batch_size=32, cache_dir=tmp_path, progress=False)
    m1, info1 = cached_madry("mlp", "toy", x, y, **kw)
    m2, info2 = cached_madry("mlp", "toy", x, y, **kw)
    assert not info1["from_cache"] and info2["from_cache"]
    assert info1["cost"]["forward_per_step"] == 8 == info2["cost"]["forward_per_step"]
    assert info1["cost"]["optimizer_steps"] == 4
    assert info1["cost"]["train_seconds"] > 0 and info2["cost"]["train_seconds"] is None
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_pgd7_training_raises_robust_accuracy():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:1700], y[1400:1700]
    eps = 0.1
    std = models.build("mlp", in_shape=(1, 8, 8), hidden=(128,), seed=0)
    models.train(std, xtr, ytr, epochs=12, batch_size=64, lr=3e-3, seed=0, progress=False)
    rob = models.build("mlp", in_shape=(1, 8, 8), hidden=(128,), seed=0)
    adversarial_train(rob, xtr, ytr, eps=eps, steps=7, warmup=0.3, epochs=12, batch_size=64, lr=3e-3,
                         seed=0, progress=False)

    def robust(m):
        res = attacks.get("pgd_linf")(m, xte, yte, eps=eps, steps=20, generator=gen(0))
        with torch.no_grad():
            return float((m(res.x_adv).argmax(1) == yte).float().mean())

    assert models.accuracy(rob, xte, yte) > 0.7
    r_std, r_rob = robust(std), robust(rob)
    assert r_rob >= r_std + 0.1, (r_std, r_rob)
