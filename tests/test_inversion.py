"""Oracles for the inversion family: membership inference, model inversion, gradient leakage.

A model that memorises random labels must be told apart from fresh examples (AUC ~ 1)
while an untrained model cannot be (AUC ~ 0.5); a single linear layer's input is a
closed-form function of its gradient, so DLG must recover it to 1e-3; LiRA's score is
exact on hand-built Gaussians; TPR at a fixed FPR is exact on hand-made scores.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threatlab import attacks, ensemble, metrics, models
from threatlab.attacks import inversion
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox



@pytest.fixture(scope="module")
def memo():
    """Random 8x8 images with random labels: only memorisation can fit them."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (400,), generator=g)
    members = torch.zeros(400, dtype=torch.bool)
    members[:200] = True
    return x, y, members


def test_registry_lists_the_family():
    assert attacks.names("inversion") == sorted(
        ["dlg", "fredrikson", "mi_confidence", "mi_entropy", "mi_lira", "mi_loss", "mi_shadow"])


def test_memorising_model_auc_near_one_untrained_near_half(memo):
    x, y, members = memo
    fresh = models.build("mlp", in_shape=(1, 8, 8), hidden=(256,), seed=0)
    trained = models.build("mlp", in_shape=(1, 8, 8), hidden=(256,), seed=0)
    models.train(trained, x[members], y[members], epochs=150, batch_size=50, lr=3e-3, seed=0, progress=False)
    assert models.accuracy(trained, x[members], y[members]) == 1.0
    # An untrained model has seen nothing: any split of i.i.d. data is a coin flip
    # (4000 examples so that sampling noise, sd ~0.01, stays well inside the tolerance).
    g = torch.Generator().manual_seed(5)
    xu, yu = torch.rand(4000, 1, 8, 8, generator=g), torch.randint(0, 10, (4000,), generator=g)
    mu = torch.arange(4000) < 2000
    for name in ("mi_loss", "mi_confidence", "mi_entropy"):
        auc_t = metrics.auc(attacks.get(name)(BlackBox(trained), x, y).scores, members)
        auc_u = metrics.auc(attacks.get(name)(BlackBox(fresh), xu, yu).scores, mu)
        assert auc_t > 0.95, (name, auc_t)
        assert abs(auc_u - 0.5) < 0.05, (name, auc_u)


def test_mi_counts_one_query_per_example(memo):
    x, y, _ = memo
    bb = BlackBox(models.build("mlp", in_shape=(1, 8, 8), seed=0))
    res = inversion.mi_loss(bb, x, y)
    assert res.queries.tolist() == [1] * len(x) and bb.total == len(x)


def test_tpr_at_fpr_exact_on_attack_scores():
    # 1000 non-members scoring 0..999; 10 members, 6 above every non-member and 4 just
    # below the top ones: each extra false positive allowed finds one more member.
    neg = torch.arange(1000, dtype=torch.float64)
    pos = torch.tensor([999.5, 998.5, 997.5, 996.5, 995.5, 2000, 3000, 4000, 5000, 6000], dtype=torch.float64)
    scores = torch.cat([pos, neg])
    labels = torch.cat([torch.ones(10, dtype=torch.bool), torch.zeros(1000, dtype=torch.bool)])
    assert metrics.tpr_at_fpr(scores, labels, 0.0) == 0.6           # 6000..2000 and 999.5
    assert metrics.tpr_at_fpr(scores, labels, 0.001) == 0.7         # + 998.5, one FP (999)
    assert metrics.tpr_at_fpr(scores, labels, 0.003) == 0.9         # 3 FPs: down to 996.5
    assert metrics.tpr_at_fpr(scores, labels, 0.004) == 1.0         # 4 FPs (999..996): all
    assert metrics.balanced_accuracy(scores, labels) == pytest.approx((1.0 + 996 / 1000) / 2)


def test_lira_score_is_the_gaussian_likelihood_ratio():
    # One example, 4 reference models: IN phis {2, 4}, OUT phis {-1, 1}; per-example
    # variance (ddof 1) = 2 for both. Target answers p_y with phi = 3.
    probs_for = lambda phi: torch.tensor([1 / (1 + math.exp(-phi)), 1 - 1 / (1 + math.exp(-phi))])
    shadow = torch.stack([probs_for(v) for v in (2.0, 4.0, -1.0, 1.0)]).view(4, 1, 2)
    inside = torch.tensor([[True], [True], [False], [False]])

    class Fixed(nn.Module):
        def forward(self, x):
            p = probs_for(3.0)
            return p.log().expand(x.shape[0], 2)

    x, y = torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long)
    res = inversion.mi_lira(BlackBox(Fixed()), x, y, shadow_probs=shadow, shadow_in=inside, fix_variance=False)
    expect = (-0.5 * (3 - 3) ** 2 / 2) - (-0.5 * (3 - 0) ** 2 / 2)
    assert float(res.scores[0]) == pytest.approx(expect, abs=1e-6)


def test_lira_beats_loss_at_low_fpr_on_easy_vs_hard_examples():
    # Half the examples are inherently "easy" (high phi for every model), half hard.
    # Membership adds +1 to phi. A global threshold confuses easy non-members with
    # members; per-example calibration does not.
    g = torch.Generator().manual_seed(0)
    n, m = 2000, 32
    base = torch.where(torch.arange(n) % 2 == 0, 6.0, 0.0)
    inside = torch.rand(m, n, generator=g) < 0.5
    phi_s = base + inside.float() + 0.1 * torch.randn(m, n, generator=g)
    member = torch.rand(n, generator=g) < 0.5
    phi_t = base + member.float() + 0.1 * torch.randn(n, generator=g)
    to_probs = lambda phi: torch.stack([torch.sigmoid(phi), torch.sigmoid(-phi)], -1)

    # Each candidate's input holds its id (scaled into [0, 1]); the stand-in target
    # answers by id, so it works on any chunk of rows the oracle sends it.
    x = (torch.arange(n, dtype=torch.float64) / n).float().reshape(n, 1, 1, 1)

    class ById(nn.Module):
        def forward(self, xx):
            ids = torch.round(xx.reshape(-1).double() * n).long()
            return to_probs(phi_t[ids]).log()

    y = torch.zeros(n, dtype=torch.long)
    lira = inversion.mi_lira(BlackBox(ById()), x, y, shadow_probs=to_probs(phi_s), shadow_in=inside)
    loss = inversion.mi_loss(BlackBox(ById()), x, y)
    assert metrics.tpr_at_fpr(lira.scores, member, 0.001) > 0.9
    assert metrics.tpr_at_fpr(loss.scores, member, 0.001) < 0.6


def test_shadow_attack_learns_from_shadows(memo):
    x, y, members = memo
    idx = ensemble.half_splits(400, 4, generator=torch.Generator().manual_seed(1))
    rows = torch.stack([r.nonzero().squeeze(1) for r in idx])
    ens = ensemble.train_ensemble("mlp", x, y, rows, seeds=[1, 2, 3, 4], epochs=80, batch_size=50, lr=3e-3,
                                  arch_params=dict(hidden=(256,)), progress=False)
    probs = ens.logits(x).softmax(-1)
    target = models.build("mlp", in_shape=(1, 8, 8), hidden=(256,), seed=0)
    models.train(target, x[members], y[members], epochs=80, batch_size=50, lr=3e-3, seed=0, progress=False)
    res = inversion.mi_shadow(BlackBox(target), x, y, shadow_probs=probs, shadow_in=idx,
                              generator=torch.Generator().manual_seed(0))
    assert metrics.auc(res.scores, members) > 0.9


def test_dlg_recovers_a_linear_layers_input():
    torch.manual_seed(0)
    lin = nn.Linear(20, 5).double()
    x = torch.rand(3, 20, dtype=torch.float64)
    y = torch.tensor([1, 4, 2])
    res = inversion.dlg(lin, x, y, batch_size=1, steps=200, generator=torch.Generator().manual_seed(0))
    assert res.y_rec.tolist() == y.tolist()
    assert (res.x_rec - x).abs().max() < 1e-3


def test_dlg_labels_and_noise_hurt():
    model = models.build("mlp", in_shape=(1, 8, 8), hidden=(32,), seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    y = torch.tensor([3, 1, 7, 0])
    clean = inversion.dlg(model, x, y, steps=150, clip=10.0, generator=torch.Generator().manual_seed(0))
    noisy = inversion.dlg(model, x, y, steps=150, clip=10.0, noise_multiplier=1.0,
                          generator=torch.Generator().manual_seed(0))
    assert clean.y_rec.tolist() == y.tolist()
    p_clean = inversion.match_psnr(clean.x_rec, x, batch_size=1).mean()
    p_noisy = inversion.match_psnr(noisy.x_rec, x, batch_size=1).mean()
    assert p_clean > 25 and p_noisy < p_clean


def test_match_psnr_undoes_permutation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 4, 4, generator=g)
    rec = x.view(2, 2, 1, 4, 4).flip(1).reshape(4, 1, 4, 4)
    assert (inversion.match_psnr(rec, x, batch_size=2) >= 119).all()


def test_fredrikson_on_a_linear_model_moves_toward_the_class():
    # Logistic regression on two pixel halves: class 0 lights the top two rows, class 1 the bottom.
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        w = torch.zeros(2, 16)
        w[0, :8], w[1, 8:] = 1.0, 1.0
        lin[1].weight.copy_(w * 3), lin[1].bias.zero_()
    x0 = torch.full((2, 1, 4, 4), 0.5)
    target = torch.tensor([0, 1])
    res = inversion.fredrikson(BlackBox(lin), x0, target, steps=30, lr=0.5, samples=8, sigma=0.1,
                               generator=torch.Generator().manual_seed(0))
    flat = res.x_rec.flatten(1)
    # log f_c saturates once f_c ~ 1, so the other half need not reach 0 exactly.
    assert flat[0, :8].mean() > 0.9 and flat[0, :8].mean() - flat[0, 8:].mean() > 0.6
    assert flat[1, 8:].mean() > 0.9 and flat[1, 8:].mean() - flat[1, :8].mean() > 0.6
    assert (res.confidence > 0.99).all()
    assert res.queries.tolist() == [30 * 16 + 1] * 2
    # Label-only from a point the model already labels 1: no signal for class 0 ... and
    # the estimator stays put rather than walking randomly.
    x1 = torch.cat([torch.zeros(1, 1, 2, 4), torch.ones(1, 1, 2, 4)], dim=2)  # top rows dark: class 1
    lab = inversion.fredrikson(BlackBox(lin, mode="label"), x1, torch.tensor([0]), steps=5, lr=0.5,
                               samples=4, sigma=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lab.x_rec, x1)


BAD = [
    ("mi_loss", dict(), "oracle.mode"),
    ("mi_shadow", dict(shadow_probs=torch.zeros(2, 3, 10), shadow_in=torch.zeros(2, 5, dtype=torch.bool)), "shadow_probs"),
    ("mi_lira", dict(shadow_probs=torch.zeros(2, 5, 10), shadow_in=torch.zeros(2, 5)), "shadow_in"),
    ("fredrikson", dict(steps=0), "steps=0"),
    ("fredrikson", dict(sigma=-1.0), "sigma=-1.0"),
    ("dlg", dict(batch_size=2), "batch_size=2"),
    ("dlg", dict(noise_multiplier=0.5), "needs clip"),
    ("dlg", dict(init="zeros"), "init='zeros'"),
]


@pytest.mark.parametrize("name,kw,msg", BAD)
def test_bad_parameters_raise_config_error_before_compute(name, kw, msg):
    model = models.build("mlp", in_shape=(1, 4, 4), hidden=(8,), seed=0)

    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("compute ran before validation")

    x, y = torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.long)
    if name == "dlg":
        target = model
    elif name == "mi_loss":
        target = BlackBox(Boom(), mode="label")
    else:
        target = BlackBox(Boom())
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace("[", r"\[")):
        attacks.get(name)(target, x, y, **kw)


def test_bad_inputs_raise():
    bb = BlackBox(models.build("mlp", in_shape=(1, 4, 4), seed=0))
    with pytest.raises(ConfigError, match="x must lie in"):
        inversion.mi_loss(bb, torch.full((2, 1, 4, 4), 2.0), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="y must be"):
        inversion.mi_loss(bb, torch.rand(2, 1, 4, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="oracle must be"):
        inversion.mi_loss(models.build("mlp", in_shape=(1, 4, 4)), torch.rand(2, 1, 4, 4),
                          torch.zeros(2, dtype=torch.long))
