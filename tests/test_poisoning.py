"""Oracles for the poisoning kernels (threatlab.attacks.poisoning) and filters
(threatlab.defenses.spectral_signatures): poisoned sets whose poisons are known exactly, a trigger
whose footprint is known pixel by pixel, synthetic representations with planted
outliers, and feature collision checked against its own objective and bound.
"""
from __future__ import annotations

import math

import pytest
import torch

from threatlab import attacks, models
from threatlab.defenses.spectral_signatures import detection_scores, spectral_signatures
from threatlab.protocols import poisoning as poisoning_protocol
from threatlab.attacks import poisoning as P
from threatlab.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)



@pytest.fixture(scope="module")
def data():
    """Random images [200, 1, 10, 12] in [0, 1] (non-square to catch H/W mix-ups), labels 0..4."""
    g = gen(1)
    x = torch.rand(200, 1, 10, 12, generator=g)
    y = torch.arange(200) % 5
    return x, y


def test_registered():
    assert set(attacks.names("poisoning")) >= {"badnets", "feature_collision", "label_flip_random",
                                                "label_flip_targeted"}


# ------------------------------------------------------------------------------ trigger


@pytest.mark.parametrize("position", [None, (0, 0), (3, 5)])
def test_trigger_stamped_exactly_where_intended(data, position):
    x, _ = data
    trig = P.make_trigger(3, 1, "checkerboard")
    out = P.stamp_trigger(x, trig, position)
    r, c = P.trigger_position(x.shape[1:], trig, position)
    if position is None:
        assert (r, c) == (10 - 3 - 1, 12 - 3 - 1)  # bottom-right, 1 px in
    region = torch.zeros(10, 12, dtype=torch.bool)
    region[r:r + 3, c:c + 3] = True
    assert torch.equal(out[:, :, region], trig.reshape(1, 1, -1).expand(200, 1, 9))
    assert torch.equal(out[:, :, ~region], x[:, :, ~region])   # nothing else moved
    assert torch.equal(trig, torch.tensor([[1., 0, 1], [0, 1, 0], [1, 0, 1]]).unsqueeze(0))


def test_badnets_bookkeeping_exact(data):
    x, y = data
    ps = P.badnets(x, y, rate=0.1, target_class=2, num_classes=5, generator=gen())
    assert ps.n_poison == 20
    changed_rows = ((ps.x != x).flatten(1).any(1)) | (ps.y != y)
    # Every poisoned row is changed and no other row is (random pixels never equal the
    # checkerboard everywhere, so a stamped row always differs).
    assert torch.equal(changed_rows, ps.is_poison)
    assert torch.equal(ps.is_poison.nonzero().squeeze(1), ps.poison_idx)
    assert torch.equal(ps.poison_idx, ps.poison_idx.sort().values)
    assert bool((ps.y[ps.poison_idx] == 2).all())
    assert bool((y[ps.poison_idx] != 2).all())          # drawn from the other classes
    assert torch.equal(ps.y_clean, y)
    src = P.badnets(x, y, rate=0.1, target_class=2, source_class=4, num_classes=5, generator=gen())
    assert src.n_poison == 20 and bool((y[src.poison_idx] == 4).all())
    r, c = ps.extra["position"]
    trig = ps.extra["trigger"]
    assert torch.equal(ps.x[ps.poison_idx], P.stamp_trigger(x[ps.poison_idx], trig, (r, c)))
    # Same generator seed, same poisons; another seed, other poisons.
    again = P.badnets(x, y, rate=0.1, target_class=2, num_classes=5, generator=gen())
    assert torch.equal(again.poison_idx, ps.poison_idx) and torch.equal(again.x, ps.x)
    other = P.badnets(x, y, rate=0.1, target_class=2, num_classes=5, generator=gen(7))
    assert not torch.equal(other.poison_idx, ps.poison_idx)


def test_label_flips_bookkeeping_exact(data):
    x, y = data
    ps = P.label_flip_random(x, y, rate=0.25, num_classes=5, generator=gen())
    assert ps.n_poison == 50
    assert torch.equal(ps.y != y, ps.is_poison)           # every flip is to another class
    assert torch.equal(ps.x, x)
    assert int(ps.y.max()) < 5 and int(ps.y.min()) >= 0
    pt = P.label_flip_targeted(x, y, rate=0.5, source=1, target=3, num_classes=5, generator=gen())
    assert pt.n_poison == 20                               # half of the 40 examples of class 1
    assert torch.equal(pt.y != y, pt.is_poison)
    assert bool((y[pt.poison_idx] == 1).all() and (pt.y[pt.poison_idx] == 3).all())
    assert P.label_flip_random(x, y, rate=0.0, generator=gen()).n_poison == 0
    assert P.label_flip_targeted(x, y, rate=1.0, source=0, target=4, generator=gen()).n_poison == 40


def test_backdoor_success_counts_only_other_classes():
    class Detector(torch.nn.Module):
        """Predicts class 0 iff the bottom-right corner pixel is bright, else class 1."""

        def forward(self, x):
            hot = x[:, 0, -2, -2] > 0.5
            return torch.stack([hot.float(), (~hot).float()], 1)

    x = torch.zeros(10, 1, 8, 8)
    y = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    trig = P.make_trigger(2, 1, "square")
    assert P.backdoor_success(Detector(), x, y, target_class=0, trigger=trig) == 1.0
    assert P.backdoor_success(Detector(), x, y, target_class=0, trigger=torch.zeros(1, 2, 2)) == 0.0


# -------------------------------------------------------------------- feature collision


class TinyExtractor(torch.nn.Module):
    """A frozen smooth extractor (64 pixels -> 12 tanh features) and a linear head:
    fewer features than pixels, so every target's features have many preimages."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 12), torch.nn.Tanh())
        self.head = torch.nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.features(x))


def test_feature_collision_collapses_distance_on_frozen_extractor():
    """Poisons on a tiny frozen extractor: every feature distance falls below the
    stopping rule's fraction (0.1) of its start, the loop stops early, and the reported
    distance is the poison's own."""
    model = TinyExtractor().eval()
    g = gen(2)
    base = torch.rand(6, 1, 8, 8, generator=g)
    target = torch.rand(2, 1, 8, 8, generator=g).repeat_interleave(3, 0)  # 3 poisons per target
    yb = torch.tensor([0, 0, 0, 1, 1, 1])
    res = attacks.get("feature_collision")(model, base, yb, target=target, steps=2000, rel_tol=0.1)
    assert bool((res.dist_after <= 0.1 * res.dist_before).all())
    assert bool(res.extra["collided"].all())
    assert int(res.extra["steps_run"].max()) < 2000            # stopped by the rule, not the cap
    assert float(res.x_poison.min()) >= 0 and float(res.x_poison.max()) <= 1
    assert torch.equal(res.y_poison, yb)
    with torch.no_grad():   # the reported distance is the poison's true distance
        d = (model.features(res.x_poison) - model.features(target)).norm(dim=1)
    assert torch.allclose(d, res.dist_after, atol=1e-5)
    # Same inputs, same bytes (two runs on this machine); one row alone follows the same
    # trajectory (Adam is elementwise).
    again = attacks.get("feature_collision")(model, base, yb, target=target, steps=2000, rel_tol=0.1)
    assert torch.equal(again.x_poison, res.x_poison)
    # The default beta is Poison Frogs' beta_0 = 0.25 scaled by (feature dim / input dim)^2.
    assert res.extra["beta"] == pytest.approx(0.25 * (12 / 64) ** 2)


def test_feature_collision_stops_a_poison_whose_distance_goes_non_finite():
    """From its 6th call on the extractor answers NaN for poison 0 (calls 1-2 are the
    target's and the bases' features): poison 0 stops, keeps its best finite iterate,
    and the others end exactly as with a healthy extractor."""
    healthy = TinyExtractor().eval()

    class Flaky(torch.nn.Module):
        calls = 0

        def features(self, z):
            out = healthy.features(z)
            Flaky.calls += 1
            return torch.cat([out[:1] * math.nan, out[1:]]) if Flaky.calls >= 6 else out

    g = gen(2)
    base = torch.rand(4, 1, 8, 8, generator=g)
    target = torch.rand(4, 1, 8, 8, generator=g)
    yb = torch.zeros(4, dtype=torch.long)
    kw = dict(target=target, steps=300, rel_tol=0.1)
    res = attacks.get("feature_collision")(Flaky(), base, yb, **kw)
    ref = attacks.get("feature_collision")(healthy, base, yb, **kw)
    assert res.extra["diverged"].tolist() == [True, False, False, False]
    assert not bool(ref.extra["diverged"].any())
    # Poison 0: 3 finite evaluations (iterates 0-2) on calls 3-5, its best of them kept.
    assert int(res.extra["steps_run"][0]) == 3 and not bool(res.extra["collided"][0])
    assert 0 < float(res.dist_after[0]) < float(res.dist_before[0])
    assert bool(torch.isfinite(res.x_poison).all())
    assert torch.equal(res.x_poison[1:], ref.x_poison[1:]) and torch.equal(res.dist_after[1:], ref.dist_after[1:])


def test_feature_collision_respects_bound_and_cap():
    model = models.build("mlp", in_shape=(1, 8, 8), num_classes=3, seed=0, hidden=(32,)).eval()
    g = gen(2)
    base = torch.rand(4, 1, 8, 8, generator=g)
    target = torch.rand(4, 1, 8, 8, generator=g)
    yb = torch.zeros(4, dtype=torch.long)
    eps = 0.05
    res = P.feature_collision(model, base, yb, target=target, eps=eps, steps=30, rel_tol=0.01)
    assert float((res.x_poison - base).abs().max()) <= eps + 1e-6
    assert bool((res.dist_after < res.dist_before).all())
    assert not bool(res.extra["collided"].any())              # a tight ball cannot collide ...
    assert res.extra["steps_run"].tolist() == [30] * 4        # ... so the cap ends the run
    wide = P.feature_collision(model, base, yb, target=target, eps=0.3, steps=30, rel_tol=0.01)
    assert float(wide.dist_after.mean()) < float(res.dist_after.mean())


def test_confusion_rate_on_constructed_predictions():
    from threatlab import metrics

    # 10 examples of class 3: 4 predicted 8, 1 predicted 5, 5 right; 5 of class 8, 2 predicted 3.
    y = torch.tensor([3] * 10 + [8] * 5)
    pred = torch.tensor([8, 8, 8, 8, 5, 3, 3, 3, 3, 3, 3, 3, 8, 8, 8])
    assert metrics.confusion_rate(pred, y, source=3, target=8) == pytest.approx(0.4)
    assert metrics.confusion_rate(pred, y, source=8, target=3) == pytest.approx(0.4)
    assert metrics.confusion_rate(pred, y, source=3, target=5) == pytest.approx(0.1)
    assert metrics.confusion_rate(pred, y, source=1, target=8) != metrics.confusion_rate(pred, y, source=1, target=8)
    cm = metrics.confusion_matrix(pred, y, 10)
    assert cm[3].tolist()[3] == 5 and cm[3, 8] == 4 and cm[8, 3] == 2 and int(cm.sum()) == 15
    # Random flips relabel other classes *as* 3, which can raise class 3's recall; the
    # confusion rate counts only 3 -> 8 and does not move with them.
    model = type("Fixed", (torch.nn.Module,), {"forward": lambda self, x: torch.nn.functional.one_hot(
        pred, 10).float()})()
    eff = poisoning_protocol.flip_effects(model, torch.zeros(15, 1, 2, 2), y, source=3, target=8, num_classes=10)
    assert eff == {"acc": pytest.approx(8 / 15), "confusion": pytest.approx(0.4), "source_recall": pytest.approx(0.5)}


def test_finetune_transfer_freezes_features():
    model = models.build("mlp", in_shape=(1, 8, 8), num_classes=3, seed=0, hidden=(16,)).eval()
    x, y = torch.rand(32, 1, 8, 8, generator=gen()), torch.arange(32) % 3
    m = poisoning_protocol.finetune(model, x, y, regime="transfer", epochs=1, lr=1e-2)
    for a, b in zip(model.features.parameters(), m.features.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(model.head.weight, m.head.weight)
    e = poisoning_protocol.finetune(model, x, y, regime="end2end", epochs=1, lr=1e-2)
    assert not torch.equal(model.features[2].weight, e.features[2].weight)


# ------------------------------------------------------------------- spectral signatures


def test_spectral_signatures_flag_planted_outliers():
    g = gen(3)
    n, d = 400, 32
    feats = torch.randn(n, d, generator=g)
    labels = torch.arange(n) % 4
    # Plant 20 poisons in class 1: shifted along one direction, as a backdoor does.
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    poison = (labels == 1).nonzero().squeeze(1)[:20]
    feats[poison] += 12.0 * direction
    is_poison = torch.zeros(n, dtype=torch.bool)
    is_poison[poison] = True
    res = spectral_signatures(feats, labels, remove_fraction=1.5 * 20 / 100)
    recall, precision = detection_scores(res.flagged, is_poison)
    assert recall == 1.0
    assert res.removed_per_class.tolist() == [30, 30, 30, 30]
    assert precision == pytest.approx(20 / 120)
    # Within the poisoned class the poisons hold the 20 highest scores.
    s1 = res.scores[labels == 1]
    assert set(s1.topk(20).indices.tolist()) == set(range(20))
    none = spectral_signatures(feats, labels, remove_fraction=0.0)
    assert not bool(none.flagged.any())


# --------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize("call, needle", [
    (lambda x, y: P.badnets(x, y, rate=-0.1, target_class=0), "rate=-0.1"),
    (lambda x, y: P.badnets(x, y, rate=1.5, target_class=0), "rate=1.5"),
    (lambda x, y: P.label_flip_random(x, y, rate=2), "rate=2"),
    (lambda x, y: P.label_flip_targeted(x, y, rate=-1, source=0, target=1), "rate=-1"),
    (lambda x, y: P.badnets(x, y, rate=0.1, target_class=0, trigger=torch.ones(1, 11, 3)), "larger than"),
    (lambda x, y: P.badnets(x, y, rate=0.1, target_class=0, trigger=torch.ones(2, 3, 3)), "channels"),
    (lambda x, y: P.badnets(x, y, rate=0.1, target_class=0, position=(9, 0)), "position"),
    (lambda x, y: P.stamp_trigger(x, torch.ones(1, 3, 13)), "larger than"),
    (lambda x, y: P.badnets(x, y, rate=0.1, target_class=5), "target_class=5"),
    (lambda x, y: P.badnets(x, y, rate=0.1, target_class=-1, num_classes=5), "target_class=-1"),
    (lambda x, y: P.label_flip_targeted(x, y, rate=0.1, source=0, target=7), "target=7"),
    (lambda x, y: P.label_flip_targeted(x, y, rate=0.1, source=2, target=2), "equals source"),
    (lambda x, y: P.badnets(x, y, rate=0.9, target_class=0), "only 160"),
    (lambda x, y: P.badnets(x, y, rate=0.1, target_class=0, source_class=0), "source_class=0"),
    (lambda x, y: P.badnets(x, y, rate=0.3, target_class=0, source_class=1), "only 40"),
    (lambda x, y: P.feature_collision(models.build("mlp", in_shape=(1, 10, 12), num_classes=5, seed=0), x, y,
                                      target=x, eps=0.0), "eps=0.0"),
    (lambda x, y: P.feature_collision(models.build("mlp", in_shape=(1, 10, 12), num_classes=5, seed=0), x, y,
                                      target=x[:3], eps=0.1), "target"),
    (lambda x, y: P.feature_collision(models.build("mlp", in_shape=(1, 10, 12), num_classes=5, seed=0), x, y,
                                      target=x, rel_tol=1.0), "rel_tol=1.0"),
    (lambda x, y: P.feature_collision(models.build("mlp", in_shape=(1, 10, 12), num_classes=5, seed=0), x, y,
                                      target=x, step_size=float("inf")), "step_size=inf"),
    (lambda x, y: P.feature_collision(models.build("mlp", in_shape=(1, 10, 12), num_classes=5, seed=0), x, y,
                                      target=x, beta=float("nan")), "beta=nan"),
    (lambda x, y: P.feature_collision(models.build("mlp", in_shape=(1, 10, 12), num_classes=5, seed=0),
                                      x.clone().fill_(float("nan")), y, target=x), "finite"),
    (lambda x, y: spectral_signatures(torch.zeros(200, 4), y, remove_fraction=1.2),
     "remove_fraction=1.2"),
])
def test_bad_parameters_raise_before_compute(data, call, needle, monkeypatch):
    x, y = data
    # "Before compute": no poison is chosen and no stamping or model forward happens.
    def boom(*a, **k):
        raise AssertionError("computed before validating")
    monkeypatch.setattr(P, "_choose", boom)
    monkeypatch.setattr(P.LinfBall, "project", boom)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        call(x, y)


def test_collision_trials_counts_each_target_once():
    """A victim whose head is steered by the poisons: transfer-only retraining on
    poisons labelled 1 sitting exactly on each target flips those targets."""
    model = models.build("mlp", in_shape=(1, 4, 4), num_classes=2, seed=0, hidden=(8,)).eval()
    g = gen(4)
    x_clean = torch.rand(20, 1, 4, 4, generator=g)
    y_clean = torch.zeros(20, dtype=torch.long)
    x_target = torch.rand(3, 1, 4, 4, generator=g)
    x_poison = x_target.unsqueeze(1).repeat(1, 15, 1, 1, 1)        # 15 exact copies per target
    y_poison = torch.ones(3, dtype=torch.long)
    out = poisoning_protocol.collision_trials(model, x_clean, y_clean, x_poison, y_poison, x_target,
                                              regimes=("transfer",), epochs=30, lr=0.05, batch_size=35)
    assert list(out) == ["transfer"] and len(out["transfer"]) == 3
    assert all(isinstance(v, bool) for v in out["transfer"])
    assert out["transfer"] == [True, True, True]
    with pytest.raises(ConfigError, match="x_poison"):
        poisoning_protocol.collision_trials(model, x_clean, y_clean, x_poison, y_poison[:2], x_target)


class RecordingVictim:
    """A notebook-style victim(x, y, tag): trains a small MLP on (x, y) and remembers the call."""

    def __init__(self):
        self.calls: list[tuple[str, torch.Tensor, torch.Tensor, torch.nn.Module]] = []

    def __call__(self, x, y, tag):
        m = models.build("mlp", in_shape=tuple(x.shape[1:]), num_classes=10, seed=0, hidden=(32,))
        models.train(m, x, y, epochs=15, batch_size=32, lr=3e-3, seed=0, progress=False)
        self.calls.append((tag, x, y, m.eval()))
        return m.eval()


def test_badnets_sweep_trains_one_victim_per_rate(digits):
    x, y = digits
    x_tr, y_tr, x_te, y_te = x[:600], y[:600], x[1000:1300], y[1000:1300]
    trig = P.make_trigger(3, 1)
    victim = RecordingVictim()
    clean = victim(x_tr, y_tr, "clean")
    kw = dict(rates=[0.0, 0.2], target_class=0, trigger=trig, num_classes=10, seed=5)
    bd, rows = poisoning_protocol.badnets_sweep(victim, clean, x_tr, y_tr, x_te, y_te, **kw)
    assert [c[0] for c in victim.calls] == ["clean", "badnets_0.0", "badnets_0.2"]
    assert bd["n_poison"] == [0, 120]
    # Rate 0 trains on the clean set; each rate's poisons come from a fresh generator seeded `seed`.
    assert torch.equal(victim.calls[1][1], x_tr) and torch.equal(victim.calls[1][2], y_tr)
    ps = P.badnets(x_tr, y_tr, rate=0.2, target_class=0, trigger=trig, num_classes=10, generator=gen(5))
    assert torch.equal(victim.calls[2][1], ps.x) and torch.equal(victim.calls[2][2], ps.y)
    for i, (_, _, _, m) in enumerate(victim.calls[1:]):
        assert bd["success"][i] == P.backdoor_success(m, x_te, y_te, target_class=0, trigger=trig)
        assert bd["clean_acc"][i] == models.accuracy(m, x_te, y_te)
    assert bd["success_unpoisoned"] == P.backdoor_success(clean, x_te, y_te, target_class=0, trigger=trig)
    # The backdoor took: 20% poisons send most triggered images to class 0, the clean victim does not.
    assert bd["success"][1] > 0.8 and bd["success_unpoisoned"] < 0.3 and bd["clean_acc"][1] > 0.8
    assert rows == [{"rate": r, "poisons": bd["n_poison"][i], "attack success": bd["success"][i],
                     "clean accuracy": bd["clean_acc"][i]} for i, r in enumerate(kw["rates"])]
    again, _ = poisoning_protocol.badnets_sweep(RecordingVictim(), clean, x_tr, y_tr, x_te, y_te, **kw)
    assert again == bd                                                       # same seed, same numbers


@pytest.mark.parametrize("change, needle", [
    ({"rates": [0.1, 1.5]}, "rates[1]=1.5"),
    ({"rates": []}, "rates=[]"),
    ({"target_class": 10}, "target_class=10"),
    ({"trigger": torch.ones(1, 9, 3)}, "larger than"),
    ({"victim": "mlp"}, "victim='mlp'"),
])
def test_badnets_sweep_rejects_bad_input_before_any_victim(digits, change, needle):
    x, y = digits
    victim = RecordingVictim()
    kw = dict(victim=victim, rates=[0.0, 0.1], target_class=0, trigger=P.make_trigger(3, 1), num_classes=10, seed=0)
    kw.update(change)
    v = kw.pop("victim")
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        poisoning_protocol.badnets_sweep(v, None, x[:100], y[:100], x[:50], y[:50], **kw)
    assert victim.calls == []
