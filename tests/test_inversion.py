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
        ["dlg", "fredrikson", "mi_class_loss", "mi_class_threshold", "mi_confidence", "mi_entropy", "mi_label_only",
         "mi_lira", "mi_lira_offline", "mi_loss", "mi_shadow"])


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
    # Offline: reference models that never saw the candidates (phi = base, no +1).
    phi_out = base + 0.1 * torch.randn(m, n, generator=g)
    off = inversion.mi_lira_offline(BlackBox(ById()), x, y, shadow_probs=to_probs(phi_out))
    assert metrics.tpr_at_fpr(off.scores, member, 0.001) > 0.9


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


def test_fredrikson_skips_and_counts_non_finite_estimates_row_by_row():
    # The target answers NaN for row 0's probes on its calls 3-6 (an API that fails on some
    # queries): row 0 skips those 4 steps and stays finite; row 1 is what it would be anyway.
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        lin[1].weight.copy_(torch.linspace(-1, 1, 32).view(2, 16)), lin[1].bias.zero_()

    class Flaky(nn.Module):
        calls = 0

        def forward(self, z):
            out = lin(z)
            Flaky.calls += 1
            if 3 <= Flaky.calls <= 6:
                out = out.clone()
                out[: out.shape[0] // 2] = math.nan    # row 0's probes come first
            return out

    x0, target = torch.full((2, 1, 4, 4), 0.5), torch.tensor([0, 1])
    kw = dict(steps=10, lr=0.2, samples=4, sigma=0.1)
    res = inversion.fredrikson(BlackBox(Flaky()), x0, target, **kw, generator=torch.Generator().manual_seed(0))
    ref = inversion.fredrikson(BlackBox(lin), x0, target, **kw, generator=torch.Generator().manual_seed(0))
    assert res.diverged.tolist() == [4, 0] and ref.diverged.tolist() == [0, 0]
    assert bool(torch.isfinite(res.x_rec).all()) and torch.equal(res.x_rec[1], ref.x_rec[1])
    assert not torch.equal(res.x_rec[0], ref.x_rec[0])     # it moved on the 6 good steps, not the bad 4
    with torch.no_grad():   # and towards class 0
        assert float(lin(res.x_rec[:1]).softmax(1)[0, 0]) > 3 * float(lin(x0[:1]).softmax(1)[0, 0])


BAD = [
    ("mi_loss", dict(), "oracle.mode"),
    ("mi_shadow", dict(shadow_probs=torch.zeros(2, 3, 10), shadow_in=torch.zeros(2, 5, dtype=torch.bool)), "shadow_probs"),
    ("mi_lira", dict(shadow_probs=torch.zeros(2, 5, 10), shadow_in=torch.zeros(2, 5)), "shadow_in"),
    ("fredrikson", dict(steps=0), "steps=0"),
    ("fredrikson", dict(sigma=-1.0), "sigma=-1.0"),
    ("dlg", dict(batch_size=2), "batch_size=2"),
    ("dlg", dict(noise_multiplier=0.5), "needs clip"),
    ("dlg", dict(init="zeros"), "init='zeros'"),
    ("dlg", dict(restarts=0), "restarts=0"),
    ("mi_class_loss", dict(shadow_probs=torch.zeros(2, 3, 10), shadow_in=torch.zeros(2, 3, dtype=torch.bool),
                           shadow_y=torch.zeros(3)), "shadow_y must be"),
    ("mi_shadow", dict(shadow_probs=torch.zeros(2, 3, 10), shadow_in=torch.zeros(2, 3, dtype=torch.bool),
                       shadow_y=torch.zeros(3, dtype=torch.long), shadow_ids=torch.arange(3),
                       candidate_ids=torch.arange(2, 7)), "share 1 row"),
    ("mi_lira_offline", dict(shadow_probs=torch.zeros(2, 4, 10)), "shadow_probs"),
    ("mi_label_only", dict(max_shift=-1), "max_shift=-1"),
    ("mi_label_only", dict(noise_sigma=float("nan")), "noise_sigma=nan"),
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


# ------------------------------------------------------------ LiRA vs the reference


def _reference_lira(keep, ref_logits, labels, target_logits):
    """The algorithm of the authors' code (tensorflow/privacy research/mi_lira_2021),
    restated with numpy / scipy for one target model and one augmentation:
    score.py: stable softmax in float64, phi = log(p_y + 1e-45) - log(sum_{j != y} p_j + 1e-45);
    plot.py generate_ours: per example, the median and np.std (ddof 0) of the phis of
    the reference models that kept it (IN) and of those that did not (OUT), then
    prediction = -logpdf(phi; IN) + logpdf(phi; OUT) with scale std + 1e-30, and the ROC
    is drawn on -prediction (so membership score = logpdf_IN - logpdf_OUT);
    generate_ours_offline: prediction = logpdf(phi; OUT), ROC on -prediction.
    Returns (online, offline, offline_one_sided_z) membership scores."""
    import numpy as np
    import scipy.stats

    def phi(logits):
        p = logits - logits.max(-1, keepdims=True)
        p = np.exp(p).astype(np.float64)
        p = p / p.sum(-1, keepdims=True)
        idx = np.arange(p.shape[-2])
        y_true = p[..., idx, labels]
        p = p.copy()
        p[..., idx, labels] = 0
        return np.log(y_true + 1e-45) - np.log(p.sum(-1) + 1e-45)

    s_ref, s_t = phi(ref_logits), phi(target_logits)                   # [M, n], [n]
    dat_in = np.array([s_ref[keep[:, j], j] for j in range(s_ref.shape[1])])
    dat_out = np.array([s_ref[~keep[:, j], j] for j in range(s_ref.shape[1])])
    mu_in, mu_out = np.median(dat_in, 1), np.median(dat_out, 1)
    sd_in, sd_out = np.std(dat_in, 1), np.std(dat_out, 1)
    pr_in = -scipy.stats.norm.logpdf(s_t, mu_in, sd_in + 1e-30)
    pr_out = -scipy.stats.norm.logpdf(s_t, mu_out, sd_out + 1e-30)
    online = -(pr_in - pr_out)
    offline = -scipy.stats.norm.logpdf(s_t, mu_out, sd_out + 1e-30)
    # The paper's one-sided offline test: Lambda = Pr[Z < phi], Z ~ N(mu_out, sd_out^2).
    lam = scipy.stats.norm.cdf(s_t, mu_out, sd_out + 1e-30)
    return online, offline, lam, s_t


def _fixed_oracle(logits):
    # Candidate i's input is the constant i / n, so the stand-in answers by id in any
    # row chunk the oracle sends it.
    n = logits.shape[0]

    class ById(nn.Module):
        def forward(self, xx):
            ids = torch.round(xx.flatten(1)[:, 0].double() * n).long()
            return logits[ids]

    x = (torch.arange(n, dtype=torch.float64) / n).float().reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return BlackBox(ById()), x


def test_lira_scores_match_the_reference_algorithm_on_known_logits():
    import numpy as np
    import scipy.stats

    # 8 reference models, 5 candidates, 3 classes; every candidate is IN exactly 4
    # models, so the reference's truncation to the smallest IN / OUT count is a no-op and
    # both implementations see the same phis. Odd spreads, some near-saturated logits.
    g = torch.Generator().manual_seed(3)
    m, n, c = 8, 5, 3
    ref_logits = (torch.randn(m, n, c, generator=g, dtype=torch.float64) * 3)
    ref_logits[:, 1, 0] += 12.0                                          # a very confident example
    keep = torch.zeros(m, n, dtype=torch.bool)
    for j in range(n):
        keep[torch.randperm(m, generator=g)[:4], j] = True
    labels = torch.tensor([0, 0, 2, 1, 2])
    target_logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    online, offline, lam, phi_t = _reference_lira(keep.numpy(), ref_logits.numpy(), labels.numpy(),
                                                  target_logits.numpy())
    oracle, x = _fixed_oracle(target_logits)
    probs = ref_logits.softmax(-1)
    res = inversion.mi_lira(oracle, x, labels, shadow_probs=probs, shadow_in=keep, fix_variance=False)
    np.testing.assert_allclose(res.extra["phi"].numpy(), phi_t, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.scores.numpy(), online, rtol=0, atol=1e-6)
    two = inversion.mi_lira_offline(oracle, x, labels, shadow_probs=probs, shadow_in=keep, two_sided=True,
                                   fix_variance=False)
    np.testing.assert_allclose(two.scores.numpy(), offline, rtol=0, atol=1e-6)
    # Our default offline score is the z-score, a monotone map of the paper's Lambda.
    one = inversion.mi_lira_offline(oracle, x, labels, shadow_probs=probs, shadow_in=keep, fix_variance=False)
    np.testing.assert_allclose(scipy.stats.norm.cdf(one.scores.numpy()), lam, rtol=0, atol=1e-9)
    # Hand check of candidate 0's online score from its own numbers.
    s = torch.log(probs[:, 0, 0]) - torch.log(probs[:, 0, 1:].sum(-1))
    ins, outs = s[keep[:, 0]].sort().values, s[~keep[:, 0]].sort().values
    mu_i, mu_o = (ins[1] + ins[2]) / 2, (outs[1] + outs[2]) / 2            # median of 4 values
    sd_i, sd_o = ins.std(correction=0), outs.std(correction=0)
    v = phi_t[0]
    expect = (-0.5 * ((v - mu_i) / sd_i) ** 2 - sd_i.log()) - (-0.5 * ((v - mu_o) / sd_o) ** 2 - sd_o.log())
    assert float(res.scores[0]) == pytest.approx(float(expect), abs=1e-9)


def test_lira_fixed_variance_uses_one_spread_per_side():
    import numpy as np

    g = torch.Generator().manual_seed(4)
    m, n = 6, 4
    phi_s = torch.randn(m, n, generator=g, dtype=torch.float64)
    keep = torch.tensor([[True, False, True, False]] * 3 + [[False, True, False, True]] * 3)
    to_probs = lambda phi: torch.stack([torch.sigmoid(phi), torch.sigmoid(-phi)], -1)  # noqa: E731
    oracle, x = _fixed_oracle(torch.stack([torch.zeros(n), torch.zeros(n)], -1).double())
    y = torch.zeros(n, dtype=torch.long)
    res = inversion.mi_lira(oracle, x, y, shadow_probs=to_probs(phi_s), shadow_in=keep, fix_variance=True)
    sd_in, sd_out = np.std(phi_s[keep].numpy()), np.std(phi_s[~keep].numpy())
    mu_in = np.median(np.where(keep, phi_s, np.nan), 0)
    mu_in = np.array([np.median(phi_s[keep[:, j], j].numpy()) for j in range(n)])
    mu_out = np.array([np.median(phi_s[~keep[:, j], j].numpy()) for j in range(n)])
    import scipy.stats
    expect = scipy.stats.norm.logpdf(0.0, mu_in, sd_in) - scipy.stats.norm.logpdf(0.0, mu_out, sd_out)
    np.testing.assert_allclose(res.scores.numpy(), expect, atol=1e-6)


# ------------------------------------------------------- Shokri's disjoint protocol


def test_shadow_protocol_keeps_candidates_out_of_the_attack_training():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(800, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (800,), generator=g)
    sp = ensemble.shadow_splits(800, n_candidates=400, n_shadows=4, generator=torch.Generator().manual_seed(1))
    cand, att = sp.candidates, sp.attacker
    # Bookkeeping: target side and attacker side partition the pool; every shadow trains
    # on attacker rows only; the target on candidate rows only.
    assert set(cand.tolist()).isdisjoint(att.tolist()) and len(set(cand.tolist()) | set(att.tolist())) == 800
    rows = sp.shadow_indices()
    assert rows.shape == (4, 200) and set(rows.flatten().tolist()) <= set(att.tolist())
    member = torch.arange(400) < 200
    target = models.build("mlp", in_shape=(1, 8, 8), hidden=(256,), seed=0)
    models.train(target, x[cand[member]], y[cand[member]], epochs=80, batch_size=50, lr=3e-3, seed=0,
                 progress=False)
    ens = ensemble.train_ensemble("mlp", x, y, rows, seeds=[1, 2, 3, 4], epochs=80, batch_size=50, lr=3e-3,
                                  arch_params=dict(hidden=(256,)), progress=False)
    probs = ens.logits(x[att]).softmax(-1)                   # shadows' answers on the attacker's rows only
    kw = dict(shadow_probs=probs, shadow_in=sp.shadow_in, shadow_y=y[att], shadow_ids=att, candidate_ids=cand)
    oracle = BlackBox(target)
    res = inversion.mi_shadow(oracle, x[cand], y[cand], generator=torch.Generator().manual_seed(0), **kw)
    trained_on = res.extra["attack_train_ids"]
    assert torch.equal(trained_on, att) and set(trained_on.tolist()).isdisjoint(cand.tolist())
    assert res.extra["attack_train_rows"] == 4 * 400
    assert oracle.total == 400                                # the target answered each candidate once
    assert metrics.auc(res.scores, member) > 0.9              # memorisation transfers from shadows
    cls = inversion.mi_class_loss(BlackBox(target), x[cand], y[cand], **kw)
    assert metrics.auc(cls.scores, member) > 0.9
    # The v1 mistake (shadow outputs of the candidates themselves) is refused.
    bad = dict(kw, shadow_ids=cand[:400].flip(0))
    with pytest.raises(ConfigError, match="share 400 row"):
        inversion.mi_shadow(BlackBox(target), x[cand], y[cand], **bad)
    with pytest.raises(ConfigError, match="go together"):
        inversion.mi_class_loss(BlackBox(target), x[cand], y[cand], **dict(kw, candidate_ids=None))


def test_class_conditional_threshold_fixes_what_one_threshold_confuses():
    # Class 0 is easy (members log p_y ~ -0.01, non-members ~ -0.1), class 1 hard
    # (-1 vs -2): one global threshold mixes hard members with easy non-members, one
    # per class separates both.
    g = torch.Generator().manual_seed(0)
    n, m = 400, 4
    cls = torch.arange(n) % 2
    member = (torch.arange(n) // 2) % 2 == 0

    def logp(is_in, c):
        centre = torch.where(c == 0, torch.where(is_in, -0.01, -0.1), torch.where(is_in, -1.0, -2.0))
        return centre * torch.exp(0.1 * torch.randn(centre.shape, generator=g))

    def probs_of(lp, c):
        py = lp.exp()
        other = 1 - py
        return torch.stack([torch.where(c == 0, py, other), torch.where(c == 0, other, py)], -1).double()

    sh_in = torch.rand(m, n, generator=g) < 0.5
    shadow = probs_of(logp(sh_in, cls.expand(m, n)), cls.expand(m, n))
    target_p = probs_of(logp(member, cls), cls)
    oracle, x = _fixed_oracle(target_p.log())
    res = inversion.mi_class_loss(oracle, x, cls, shadow_probs=shadow, shadow_in=sh_in, shadow_y=cls)
    glob = inversion.mi_loss(oracle, x, cls)
    assert metrics.auc(res.scores, member) > 0.99
    assert metrics.auc(glob.scores, member) < 0.8
    tau = res.extra["thresholds"]
    assert -0.1 < float(tau[0]) < -0.01 and -2.0 < float(tau[1]) < -1.0


def test_youden_threshold_exact():
    v = torch.tensor([5.0, 4.0, 3.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    is_in = torch.tensor([True, True, True, False, False, False])
    # Cut at 3 (>= 3: 3 of 3 in, 1 of 3 out: J = 2/3); at 4: 2/3 - 0. Tie rows cut together.
    assert float(inversion._youden_threshold(v, is_in)) == 4.0
    assert math.isnan(float(inversion._youden_threshold(v, torch.ones(6, dtype=torch.bool))))


# --------------------------------------------------------------------- label only


def test_label_only_queries_are_counted_by_the_oracle(memo):
    x, y, members = memo
    trained = models.build("mlp", in_shape=(1, 8, 8), hidden=(256,), seed=0)
    models.train(trained, x[members], y[members], epochs=150, batch_size=50, lr=3e-3, seed=0, progress=False)
    bb = BlackBox(trained, mode="label")
    res = inversion.mi_label_only(bb, x, y, max_shift=1, noise_samples=6, noise_sigma=0.05,
                                  generator=torch.Generator().manual_seed(0))
    assert res.extra["views"] == 4 * 1 + 1 + 6
    assert res.queries.tolist() == [11] * 400 and bb.total == 11 * 400 and bb.queries.tolist() == [11] * 400
    assert metrics.auc(res.scores, members) > 0.85
    fresh = inversion.mi_label_only(BlackBox(models.build("mlp", in_shape=(1, 8, 8), seed=0), mode="label"),
                                    x, y, max_shift=1)
    assert abs(metrics.auc(fresh.scores, members) - 0.5) < 0.1
    with pytest.raises(ConfigError, match="max_shift=8"):
        inversion.mi_label_only(bb, x, y, max_shift=8)


def test_translations_are_exact():
    img = torch.zeros(1, 1, 5, 5)
    img[0, 0, 2, 2] = 1.0
    assert sorted(inversion._shifts(1)) == sorted([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)])
    assert len(inversion._shifts(2)) == 9
    moved = inversion._translate(img, 1, -2)
    assert moved[0, 0, 0, 3] == 1.0 and moved.sum() == 1.0
    assert inversion._translate(img, 3, 3).sum() == 0.0


# --------------------------------------------------- class-mean correlation (F07)


def test_class_mean_correlation_finds_the_prototype(digits):
    x, y = digits
    means = inversion.class_means(x, y, 10)
    assert means.shape == (10, 1, 8, 8)
    torch.testing.assert_close(means[3], x[y == 3].double().mean(0))
    corr = inversion.class_mean_correlation(means.float(), means)
    torch.testing.assert_close(corr.diagonal(), torch.ones(10, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    noisy = (means.float() + 0.05 * torch.randn(means.shape, generator=g)).clamp(0, 1)
    assert torch.equal(inversion.class_mean_correlation(noisy, means).argmax(1), torch.arange(10))
    flat = inversion.class_mean_correlation(torch.full((1, 1, 8, 8), 0.3), means)
    assert torch.equal(flat, torch.zeros(1, 10, dtype=torch.float64))
    with pytest.raises(ConfigError, match="class 9 has no examples"):
        inversion.class_means(x[y < 9], y[y < 9], 10)


# --------------------------------------------------------------- gradient leakage


def _digit28(i=0, n=1):
    """Real handwritten digits at 28x28: sklearn's 8x8 digits i..i+n-1, bilinearly upsampled."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = torch.tensor(d.images[i:i + n], dtype=torch.float32).view(n, 1, 8, 8) / 16.0
    return torch.nn.functional.interpolate(img, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1), \
        torch.tensor(d.target[i:i + n], dtype=torch.long)


def test_dlg_on_sigmoid_lenet_reaches_30_db_on_one_28x28_input():
    x, y = _digit28(0)
    net = models.build("lenet_sigmoid", in_shape=(1, 28, 28), seed=0)
    res = inversion.dlg(net, x, y, steps=150, restarts=1, generator=torch.Generator().manual_seed(0))
    assert res.y_rec.tolist() == y.tolist()
    p = float(inversion.match_psnr(res.x_rec, x, batch_size=1)[0])
    base = inversion.baseline_psnr(x, _digit28(100, 200)[0])    # mean of 200 other digits
    assert p >= 30.0, p
    assert p > max(base.values()) + 10


def test_dlg_runs_the_steps_it_is_given_and_keeps_the_best_restart():
    x, y = _digit28(1)
    net = models.build("lenet_sigmoid", in_shape=(1, 28, 28), seed=1)
    res = inversion.dlg(torch.nn.Sequential(net), x, y, steps=40, restarts=3,
                        generator=torch.Generator().manual_seed(0))
    assert res.iterations.tolist() == [40]                 # not cut short by tolerances
    d = res.extra["restart_distance"]
    assert d.shape == (1, 3) and float(res.grad_distance[0]) == float(d.min())
    assert len(set(d[0].tolist())) == 3                    # different starts, different runs


def test_dlg_noise_endpoint_falls_to_the_baseline():
    x, y = _digit28(2)
    net = models.build("lenet_sigmoid", in_shape=(1, 28, 28), seed=0)
    clean = inversion.dlg(net, x, y, steps=100, clip=10.0, generator=torch.Generator().manual_seed(0))
    noisy = inversion.dlg(net, x, y, steps=100, clip=10.0, noise_multiplier=10.0,
                          generator=torch.Generator().manual_seed(0))
    p_clean = float(inversion.match_psnr(clean.x_rec, x, batch_size=1)[0])
    p_noisy = float(inversion.match_psnr(noisy.x_rec, x, batch_size=1)[0])
    assert p_clean > 25 and p_noisy < 15


def test_baseline_psnr_closed_form():
    x = torch.full((2, 1, 2, 2), 0.5)
    x[1] = 0.25
    b = inversion.baseline_psnr(x, x)
    # black: MSE 0.25 and 0.0625 -> 6.02 and 12.04 dB; mean image 0.375: MSE 0.015625 -> 18.06 dB.
    assert b["black"] == pytest.approx((10 * math.log10(4) + 10 * math.log10(16)) / 2, abs=1e-9)
    assert b["mean_image"] == pytest.approx(10 * math.log10(64), abs=1e-9)
    assert inversion.psnr(x, x).tolist() == [120.0, 120.0]


class _NaNAfter(nn.Module):
    """A float32 linear layer whose output turns NaN from its `after`-th forward call
    within the DLG restarts listed in `bad` (restart index counted by `_count_restarts`,
    which wraps the start draws). Forward call 0 of restart 0 is DLG's first closure."""

    def __init__(self, bad, after=4, dtype=torch.float32):
        super().__init__()
        self.lin = nn.Linear(20, 5).to(dtype)
        with torch.no_grad():
            self.lin.weight.copy_(torch.linspace(-1, 1, 100).view(5, 20).to(dtype))
            self.lin.bias.copy_(torch.linspace(-0.5, 0.5, 5).to(dtype))
        self.bad, self.after, self.restart, self.calls = set(bad), after, -1, 0

    def forward(self, x):
        self.calls += 1
        out = self.lin(x)
        return out * math.nan if self.restart in self.bad and self.calls > self.after else out


def _count_restarts(monkeypatch, net):
    draw = inversion._uniform

    def counted(*args, **kwargs):
        net.restart, net.calls = net.restart + 1, 0
        return draw(*args, **kwargs)
    monkeypatch.setattr(inversion, "_uniform", counted)


def _client(dtype=torch.float32):
    x = torch.rand(1, 20, generator=torch.Generator().manual_seed(7)).to(dtype)
    return x, torch.tensor([1])


def test_dlg_discards_a_restart_whose_line_search_overflows(monkeypatch):
    # Restart 0's loss turns NaN after L-BFGS's first iterations: strong Wolfe then never
    # meets a condition and extrapolates its step x10 per trial until it leaves float
    # range, and torch raises "value cannot be converted to type float without
    # overflow" (notebook 02's crash). The restart is discarded; restart 1 is kept.
    net = _NaNAfter(bad={0})
    _count_restarts(monkeypatch, net)
    x, y = _client()
    res = inversion.dlg(net, x, y, steps=30, restarts=2, generator=torch.Generator().manual_seed(0))
    assert res.diverged.tolist() == [1] and res.reconstructed.tolist() == [True] and res.no_reconstruction == 0
    d = res.extra["restart_distance"][0]
    assert math.isnan(float(d[0])) and float(res.grad_distance[0]) == float(d[1])
    assert (res.x_rec - x).abs().max() < 1e-3 and res.y_rec.tolist() == [1]


def test_dlg_line_search_overflow_is_the_error_torch_raises(monkeypatch):
    # Without the catch (a message that never matches), the same restart raises torch's
    # overflow error, as dlg did before: the caught message is torch's own.
    net = _NaNAfter(bad={0})
    _count_restarts(monkeypatch, net)
    monkeypatch.setattr(inversion, "_LINE_SEARCH_OVERFLOW", "a message torch never writes")
    with pytest.raises(RuntimeError, match="cannot be converted to type float without overflow"):
        inversion.dlg(net, *_client(), steps=30, restarts=2, generator=torch.Generator().manual_seed(0))


def test_dlg_without_any_finite_restart_reports_no_reconstruction(monkeypatch):
    # float64: the step never overflows, so these runs end on a NaN iterate instead;
    # every restart of client 1 (restarts 2 and 3) diverges, client 0 is untouched.
    net = _NaNAfter(bad={2, 3}, dtype=torch.float64)
    _count_restarts(monkeypatch, net)
    x = torch.rand(2, 20, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y = torch.tensor([1, 3])
    res = inversion.dlg(net, x, y, steps=20, restarts=2, generator=torch.Generator().manual_seed(0))
    assert res.diverged.tolist() == [0, 2] and res.reconstructed.tolist() == [True, False]
    assert res.no_reconstruction == 1
    assert bool(res.x_rec[1].isnan().all()) and math.isnan(float(res.grad_distance[1]))
    assert res.iterations.tolist()[1] == 0 and res.y_rec.tolist() == [1, 3]   # labels need no search
    assert (res.x_rec[0] - x[0]).abs().max() < 1e-3
