"""Adversarial training raises PGD robust accuracy; quantization masks gradients and
BPDA gets through it. All on 8x8 digits, a few seconds."""
from __future__ import annotations

import pytest
import torch

from threatlab import attacks, models
from threatlab.defenses import quantization
from threatlab.defenses.adversarial_training import _fgsm_rs_batch, adversarial_train
from threatlab.errors import ConfigError



@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x[:1400], torch.tensor(d.target[:1400]), x[1400:1700], torch.tensor(d.target[1400:1700])


def robust_acc(model, x, y, eps, attack_model=None):
    res = attacks.get("pgd_linf")(attack_model or model, x, y, eps=eps, steps=20,
                                  generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((model(res.x_adv).argmax(1) == y).float().mean())


def test_adversarial_training_raises_robust_accuracy(data):
    x, y, xt, yt = data
    eps = 0.1
    std = models.build("mlp", in_shape=(1, 8, 8), hidden=(128,), seed=0)
    models.train(std, x, y, epochs=15, batch_size=64, lr=3e-3, seed=0, progress=False)
    rob = models.build("mlp", in_shape=(1, 8, 8), hidden=(128,), seed=0)
    hist = adversarial_train(rob, x, y, eps=eps, steps=5, epochs=15, batch_size=64,
                                             lr=3e-3, seed=0, progress=False)
    assert len(hist["loss"]) == 15
    r_std, r_rob = robust_acc(std, xt, yt, eps), robust_acc(rob, xt, yt, eps)
    assert models.accuracy(rob, xt, yt) > 0.7
    assert r_rob >= r_std + 0.1, (r_std, r_rob)  # measured: 0.547 -> 0.693


def test_fgsm_random_start_training_raises_robust_accuracy_at_one_attack_pass_per_batch(data):
    """Wong et al. (2020): FGSM from a uniform random start, alpha = 1.25 eps, trains a
    robust model with one attack forward-backward per batch instead of PGD's `steps`."""
    x, y, xt, yt = data
    eps = 0.1
    std = models.build("mlp", in_shape=(1, 8, 8), hidden=(128,), seed=0)
    models.train(std, x, y, epochs=15, batch_size=64, lr=3e-3, seed=0, progress=False)

    class Counted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, inp):
            self.calls += 1
            return self.inner(inp)

    rob = Counted(models.build("mlp", in_shape=(1, 8, 8), hidden=(128,), seed=0))
    hist = adversarial_train(rob, x, y, eps=eps, epochs=15, batch_size=64, lr=3e-3,
                                                  seed=0, method="fgsm_rs", progress=False)
    batches = 15 * ((len(y) + 63) // 64)
    # one attack forward + one training forward per batch (plus whatever models.train
    # evaluates per epoch, which does not scale with the batches)
    assert 2 * batches <= rob.calls <= 2 * batches + 15 * 4
    assert len(hist["loss"]) == 15
    r_std, r_rob = robust_acc(std, xt, yt, eps), robust_acc(rob.inner, xt, yt, eps)
    assert models.accuracy(rob.inner, xt, yt) > 0.7
    assert r_rob >= r_std + 0.1, (r_std, r_rob)


def test_fgsm_rs_perturbation_stays_in_the_ball():
    torch.manual_seed(0)
    m = models.build("mlp", in_shape=(1, 8, 8), seed=0).eval()
    xb = torch.rand(16, 1, 8, 8)
    yb = torch.randint(0, 10, (16,))
    xa = _fgsm_rs_batch(m, xb, yb, 0.1, 0.125, torch.Generator().manual_seed(0))
    assert float((xa - xb).abs().max()) <= 0.1 + 1e-6
    assert xa.min() >= 0 and xa.max() <= 1
    assert not torch.equal(xa, xb)


def test_quantization_masks_gradients_and_bpda_breaks_it(data):
    x, y, xt, yt = data
    base = models.build("mlp", in_shape=(1, 8, 8), hidden=(128,), seed=0)
    models.train(base, x, y, epochs=15, batch_size=64, lr=3e-3, seed=0, progress=False)
    q = quantization.InputQuantization(base, levels=4).eval()
    xq = xt.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(q(xq).sum(), xq)
    assert float(g.abs().sum()) == 0.0  # the masked gradient
    xq = xt.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(q.bpda()(xq).sum(), xq)
    assert float(g.abs().sum()) > 0.0
    with torch.no_grad():
        assert torch.equal(q(xt), q.bpda()(xt))  # same forward
    plain, adaptive = robust_acc(q, xt, yt, 0.2), robust_acc(q, xt, yt, 0.2, q.bpda())
    assert plain >= adaptive + 0.3, (plain, adaptive)


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0.0), "eps=0.0"), (dict(eps=0.1, steps=0), "steps=0"),
    (dict(eps=0.1, warmup=1.0), "warmup=1.0"), (dict(eps=0.1, epochs=0), "epochs=0"),
    (dict(eps=0.1, method="free"), "method='free' is not allowed"),
])
def test_bad_training_parameters(kwargs, message):
    m = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    with pytest.raises(ConfigError) as err:
        adversarial_train(m, torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), **kwargs)
    assert message in str(err.value)
    with pytest.raises(ConfigError, match="levels=1"):
        quantization.InputQuantization(m, levels=1)


def test_defenses_registry_mirrors_attacks():
    from threatlab import defenses
    assert defenses.names() == ["activation_clustering", "adversarial_training", "dp_sgd", "input_quantization",
                                "neural_cleanse", "prada", "spectral_signatures"]
    assert defenses.get("adversarial_training") is adversarial_train
    assert defenses.names("poisoning") == ["activation_clustering", "neural_cleanse", "spectral_signatures"]
    with pytest.raises(ConfigError, match="defense='nope'.*choose one of"):
        defenses.get("nope")


def test_train_hook_identity_is_plain_training(data):
    """models.train with a perturb hook that returns the batch trains bit-identically
    (both runs on this machine)."""
    x, y = data[0], data[1]
    a = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=0)
    b = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=0)
    seen = []

    def same(model, xb, yb, step, gen):
        seen.append((step, model.training))
        return xb

    models.train(a, x, y, epochs=2, batch_size=256, seed=3, progress=False)
    models.train(b, x, y, epochs=2, batch_size=256, seed=3, progress=False, perturb=same)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    steps = (x.shape[0] + 255) // 256
    assert [s for s, _ in seen] == list(range(2 * steps))   # global batch index
    assert not any(training for _, training in seen)         # hook runs in eval mode
    with pytest.raises(ConfigError, match="perturb="):
        models.train(a, x, y, perturb=3)
