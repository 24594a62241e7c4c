"""The notebook-04 protocol helpers (protocols.evasion): matched-success levels, the
transformation rule, matched-set norm medians, model-pass counting, AT vs standard."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threatlab import attacks, models
from threatlab.attacks.result import AttackResult
from threatlab.errors import ConfigError
from threatlab.protocols import evasion
from threatlab.transforms import RandomTransform

from test_blackbox import digits_cnn  # noqa: F401  (fixture)


def test_queries_at_levels_reads_the_success_curve():
    inf = math.inf
    q2s = torch.tensor([5.0, 1.0, inf, 3.0, 9.0, inf, 2.0, 7.0, inf, inf])
    # 10 examples: 10 % -> 1st smallest, 25 % -> 3rd (ceil 2.5), 50 % -> 5th, 70 % -> never
    assert evasion.queries_at_levels(q2s, [0.1, 0.25, 0.5, 0.6, 0.7]) == [1.0, 3.0, 7.0, 9.0, None]
    # consistent with success_vs_queries: at the returned budget the level is reached,
    # one query fewer it is not
    for p, q in zip([0.1, 0.25, 0.5], [1.0, 3.0, 7.0]):
        assert evasion.success_vs_queries(q2s, [q])[0] >= p > evasion.success_vs_queries(q2s, [q - 1])[0]
    with pytest.raises(ConfigError, match="level=0"):
        evasion.queries_at_levels(q2s, [0])


def test_best_at_levels_takes_the_fewest_queries_per_level():
    assert evasion.best_at_levels({"a": [10.0, None, None], "b": [20.0, 30.0, None]}) == [10.0, 30.0, None]
    assert evasion.best_at_levels({}) == []


class Threshold(nn.Module):
    """Class 1 iff the mean pixel exceeds 0.5: noise rarely flips images far from 0.5."""
    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([0.5 - m, m - 0.5], 1) * 50


def test_choose_transform_takes_the_largest_scale_that_keeps_accuracy():
    x = torch.cat([torch.full((20, 1, 8, 8), 0.45), torch.full((20, 1, 8, 8), 0.9)])
    y = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    base = dict(max_shift=0.0, max_angle=0.0, max_blur=0.0, noise_std=1.0)
    out = evasion.choose_transform(Threshold(), x, y, kinds=["noise"], base=base, scales=[0.1, 1.0, 0.01],
                                   min_accuracy=0.99, draws=10, seed=0)
    # noise std 1 flips many of the 0.45 images, std 0.1 some (mean of 64 pixels: std 0.0125,
    # 4 std from the threshold: none), so the rule stops at 0.1 without trying 0.01
    assert out["scale"] == 0.1
    assert list(out["calibration_accuracy"]) == ["1.0", "0.1"]
    assert out["calibration_accuracy"]["1.0"] < 0.99 <= out["calibration_accuracy"]["0.1"]
    assert isinstance(out["transform"], RandomTransform) and out["params"]["noise_std"] == pytest.approx(0.1)
    # nothing qualifies: the smallest scale
    out = evasion.choose_transform(Threshold(), x, y, kinds=["noise"], base=base, scales=[1.0, 0.9],
                                   min_accuracy=1.0, draws=10, seed=0)
    assert out["scale"] == 0.9
    with pytest.raises(ConfigError, match="scales"):
        evasion.choose_transform(Threshold(), x, y, kinds=["noise"], base=base, scales=[], min_accuracy=0.9,
                                 draws=2, seed=0)


def test_fooled_fractions_uses_the_same_draws_for_every_set():
    x = torch.full((10, 1, 8, 8), 0.3)
    y = torch.zeros(10, dtype=torch.long)
    t = RandomTransform(["noise"], noise_std=0.0)
    out = evasion.fooled_fractions(Threshold(), {"clean": x, "adv": x + 0.5, "same": x.clone()}, y, t,
                                   draws=5, threshold=0.9, seed=0)
    assert out["clean"] == {"untransformed": 0.0, "mean_over_draws": 0.0, "fooled_in_most_draws": 0.0}
    assert out["adv"] == {"untransformed": 1.0, "mean_over_draws": 1.0, "fooled_in_most_draws": 1.0}
    assert out["same"] == out["clean"]


def test_minimal_norms_uses_the_examples_every_attack_fooled():
    x = torch.zeros(4, 3)
    a = AttackResult(torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [0, 0, 0]]),
                     torch.tensor([True, True, True, False]))
    b = AttackResult(torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [9.0, 9.0, 9.0], [1.0, 1.0, 1.0]]),
                     torch.tensor([True, True, False, True]))
    out = evasion.minimal_norms(x, {"a": a, "b": b})
    assert out["n_common"] == 2 and out["n"] == 4
    assert out["median"]["a"]["l0"] == 1.0 and out["median"]["b"]["l0"] == 2.0
    # over a's own successes (1, 2, 3) the median L-inf would be 2; over the matched
    # set (1, 2) it is 1 (metrics.median: torch's lower median)
    assert out["median"]["a"]["linf"] == 1.0
    assert out["success"] == {"a": 0.75, "b": 0.75}


def test_first_eps_reaching():
    assert evasion.first_eps_reaching([0.3, 0.1, 0.2], [1.0, 0.5, 0.95], 0.9) == 2
    assert evasion.first_eps_reaching([0.1, 0.2], [0.5, 0.6], 0.9) is None


def test_pass_counter_counts_forward_and_backward_rows():
    model = nn.Linear(4, 3)
    c = evasion.PassCounter(model)
    x = torch.rand(5, 4, requires_grad=True)
    out = c(x)
    for k in range(3):  # three gradients through one forward: DeepFool's pattern
        torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)
    with torch.no_grad():
        c(torch.rand(2, 4))
    assert (c.forward_rows, c.backward_rows, c.passes) == (7, 15, 22)


def test_counted_attack_counts_what_the_kernel_does(digits_cnn):
    model, x, y = digits_cnn
    res, secs, per = evasion.counted_attack("pgd_linf", model, x, y, eps=0.1, steps=7,
                                            generator=torch.Generator().manual_seed(0))
    # 7 forward + 7 backward per example, plus the final success check
    assert per == 15.0 and secs > 0 and res.success.shape == y.shape


def test_adversarial_vs_standard_shares_the_recipe_and_counts_passes():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:256], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:256])
    out = evasion.adversarial_vs_standard("mlp", x, y, eps=0.1, method="fgsm_rs", steps=1, epochs=2,
                                          batch_size=64, lr=1e-3, warmup=0.0, seed=0, num_classes=10,
                                          device=torch.device("cpu"))
    assert out["optimizer_steps"] == 8
    # standard: 256 rows forward + backward per epoch; FGSM-RS adds one attack pass of each
    assert out["passes"] == {"standard": 2 * 2 * 256, "adversarial": 2 * 2 * 2 * 256}
    assert out["pass_ratio"] == 2.0
    assert not out["standard"].training and not out["adversarial"].training
    # same initialisation, different training: the models differ
    p_std = next(out["standard"].parameters())
    p_adv = next(out["adversarial"].parameters())
    assert not torch.equal(p_std, p_adv)
    acc = models.accuracy(out["adversarial"], x, y)
    assert 0.0 <= acc <= 1.0


def test_robust_accuracy_is_judged_on_the_defended_model(digits_cnn):
    model, x, y = digits_cnn
    r = evasion.robust_accuracy(model, x, y, eps=0.3, steps=10, seed=0)
    res = attacks.get("pgd_linf")(model, x, y, eps=0.3, steps=10, generator=torch.Generator().manual_seed(0))
    assert r == pytest.approx(1 - res.success_rate)
