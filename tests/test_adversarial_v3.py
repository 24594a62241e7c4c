"""Notebook 04's protocols for F13-F18 (register v3) against oracles: toy linear models
whose minimal perturbations are known in closed form, hand-computed baselines, and the
rules that fix F17's budget and scored examples."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threatlab.errors import ConfigError
from threatlab.protocols import evasion
from threatlab.report.judges import adversarial as judges
from threatlab.transforms import RandomTransform

F13 = next(f for f in judges.FINDINGS if f.id == "F13")


class Linear2(nn.Module):
    """Two classes on 1x2x2 images: logits [0, s * (w . (x - 0.5) + b)]. With every pixel
    at v > 0.5 (class 1), the minimal L-inf perturbation lowers every pixel with w_i > 0
    by (w . (v - 0.5) + b) / ||w||_1, and the minimal L0 one sets the fewest pixels of
    largest w_i to 0 (each removes w_i * v)."""

    def __init__(self, w, b, scale=1.0):
        super().__init__()
        self.w, self.b, self.s = torch.tensor(w, dtype=torch.float32), b, scale

    def forward(self, x):
        g = self.s * ((x.flatten(1) - 0.5) @ self.w + self.b)
        return torch.stack([torch.zeros_like(g), g], 1)


def closed_form(w, b, v):
    g = sum(wi * (v - 0.5) for wi in w) + b
    linf = g / sum(abs(wi) for wi in w)
    k, left = 0, g
    for wi in sorted(w, reverse=True):
        if left < 0:
            break
        left -= wi * v
        k += 1
    return linf, k


LEVELS = (0.6, 0.7, 0.8)
STANDARD = ((1.0, 1.0, 1.0, 1.0), 0.0)
SPARSE = ((1.0, 0.0, 0.0, 0.0), 0.3)   # robust in L-inf (2.5 x the distance), not in L0
FAR = ((1.0, 1.0, 1.0, 1.0), 1.4)      # a standard model already past half the box in L-inf


def _x():
    x = torch.stack([torch.full((1, 2, 2), v) for v in LEVELS])
    return x, torch.ones(len(LEVELS), dtype=torch.long)


def _evidence(models_, x, y, standard, adversarial):
    norms = evasion.norm_robustness(models_, x, y, jsma_cap=1.0, pointwise_queries=300, pointwise_init_steps=20,
                                    bisection_steps=12, steps=20, seed=0)
    return norms, evasion.evidence_f13(norms, standard=standard, adversarial=adversarial, dataset="mnist",
                                       architecture="lenet5", accuracy=0.99)


def test_f13_on_linear_models_with_known_minimal_perturbations():
    x, y = _x()
    models_ = {"standard": Linear2(*STANDARD), "scaled copy": Linear2(*STANDARD, scale=3.0),
               "sparse": Linear2(*SPARSE)}
    norms, _ = _evidence(models_, x, y, "standard", "sparse")
    for name, (w, b) in (("standard", STANDARD), ("scaled copy", STANDARD), ("sparse", SPARSE)):
        got = norms["models"][name]
        want = [closed_form(w, b, v) for v in LEVELS]
        assert got["linf"] == pytest.approx([lw for lw, _ in want], abs=2e-3)
        assert got["l0"] == [float(k) for _, k in want]  # L0 cannot go below the minimum; 4 pixels are searched fully
    # scaling the logits moves no decision boundary: the "defense" buys nothing
    assert F13.judge_evidence(_evidence(models_, x, y, "standard", "scaled copy")[1]).status == "not supported"
    # L-inf doubles and L0 does not grow: the claim holds
    v = F13.judge_evidence(_evidence(models_, x, y, "standard", "sparse")[1])
    assert v.status == "supported", v.note
    assert v.margins["median minimal L-inf AT / standard"] == pytest.approx(math.log(0.5 / 0.2 / 2), abs=0.02)


def test_f13_is_decided_by_design_when_doubling_leaves_the_box():
    x, y = _x()
    models_ = {"standard": Linear2(*FAR), "sparse": Linear2(*SPARSE)}
    v = F13.judge_evidence(_evidence(models_, x, y, "standard", "sparse")[1])
    assert v.status == "inconclusive" and "decided by design" in v.note


def test_norm_robustness_refuses_misclassified_images_and_counts_failures_as_infinite():
    x, y = _x()
    with pytest.raises(ConfigError, match="misclassifies"):
        evasion.norm_robustness({"m": Linear2(*STANDARD)}, x, 1 - y)
    assert evasion._median([1.0, math.inf, math.inf]) == math.inf
    assert evasion._median([1.0, 2.0, math.inf]) == 2.0


def test_sign_noise_success_is_the_mean_over_models_of_a_hand_computed_rate():
    x = torch.full((200, 1, 2, 2), 0.5)
    y = torch.ones(200, dtype=torch.long)
    # the first pixel alone decides: noise fools "standard" iff it lowers pixel 0 (half the draws)
    one = Linear2((1.0, 0.0, 0.0, 0.0), 0.05)
    never = Linear2((0.0, 0.0, 0.0, 0.0), 1.0)
    rate = evasion.sign_noise_success({"one": one, "never": never}, x, y, eps=0.1, seed=3)
    gen = torch.Generator().manual_seed(3)
    sign = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
    assert rate == pytest.approx(float((sign[:, 0, 0, 0] < 0).float().mean()) / 2)
    assert 0.15 < rate < 0.35


def test_eps_by_rule_takes_the_smallest_budget_that_fools_ninety_percent():
    x, y = _x()
    m = Linear2(*STANDARD)  # minimal L-inf 0.1, 0.2, 0.3 on the three images
    r = evasion.eps_by_rule(m, x, y, grid=(0.05, 0.15, 0.25, 0.35), steps=20)
    assert r["eps"] == 0.35 and r["reached"] and r["success"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    r = evasion.eps_by_rule(m, x, y, grid=(0.05, 0.15), steps=20)
    assert r == {"eps": 0.15, "reached": False, "success": pytest.approx([0, 1 / 3])}


def test_stable_examples_keep_only_what_clean_draws_do_not_break():
    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.52, 0.9, 0.95, 0.51)])
    y = torch.ones(4, dtype=torch.long)
    m = Linear2(*STANDARD)
    t = RandomTransform(["noise"], noise_std=0.1)  # noise flips images near the boundary (0.5), not far ones
    out = evasion.stable_examples(m, x, y, t, n=2, draws=20, seed=0)
    assert out["stable"] == 2 and torch.equal(out["x"], x[1:3])
    with pytest.raises(ConfigError, match="only 2 of 4"):
        evasion.stable_examples(m, x, y, t, n=3, draws=20, seed=0)


def test_training_cost_reports_passes_and_a_wall_time_ratio_only_when_both_were_trained():
    at = {"cost": {"forward_per_step": 8.0, "backward_per_step": 8.0, "optimizer_steps": 5000,
                   "train_seconds": 400.0}}
    g1 = {"train_seconds": {"lenet5": 30.0}, "epochs_run": {"lenet5": 10}}
    c = evasion.training_cost(at, g1, "lenet5", n_train=20000)
    steps = 10 * math.ceil(19000 / 64)
    assert c["forward_per_step"] == 8.0 and c["wall_time_ratio"] == pytest.approx((400 / 5000) / (30 / steps))
    assert evasion.training_cost(at, {**g1, "train_seconds": {"lenet5": None}}, "lenet5",
                                 n_train=20000)["wall_time_ratio"] is None


def test_augmented_target_is_trained_once_then_read_from_the_cache(tmp_path):
    from threatlab import data

    x, y = data.load("digits", "train")
    m1, i1 = evasion.augmented_target("mlp", "digits", x, y, seed=0, num_classes=10, cache_dir=tmp_path)
    m2, i2 = evasion.augmented_target("mlp", "digits", x, y, seed=0, num_classes=10, cache_dir=tmp_path)
    assert not i1["from_cache"] and i2["from_cache"] and i2["train_seconds"] is None
    assert 3 <= i1["best_epoch"] == i2["best_epoch"] <= 15
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
