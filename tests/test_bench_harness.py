"""The benchmark harness's bookkeeping (benchmarks/ are not tests; their arithmetic is)."""
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import harness  # noqa: E402


def test_merge_rounds_averages_numbers_and_keeps_the_spread():
    rounds = [{"robust_acc": 0.5, "median_l2": 1.0, "valid": "yes", "blank_outputs": 0},
              {"robust_acc": 0.7, "median_l2": math.nan, "valid": "max l2 2 > eps 1", "blank_outputs": 2},
              {"robust_acc": 0.6, "median_l2": 3.0, "valid": "yes", "blank_outputs": 1}]
    row = harness.merge_rounds(rounds)
    assert row["robust_acc"] == pytest.approx(0.6)
    assert row["median_l2"] == pytest.approx(2.0)          # the NaN round is skipped
    assert row["blank_outputs"] == pytest.approx(1.0)
    assert row["valid"] == "max l2 2 > eps 1"               # one bad round marks the row
    assert row["robust_acc_per_round"] == [0.5, 0.7, 0.6]


def test_merge_rounds_all_nan_stays_nan():
    assert math.isnan(harness.merge_rounds([{"median_l2": math.nan}] * 2)["median_l2"])


@pytest.mark.parametrize("threat,eps", [("linf", 0.1), ("l2", 1.5), ("min_l2", None)])
def test_bound_batch_is_a_seeded_point_of_the_ball_in_the_box(threat, eps):
    x = torch.rand(20, 1, 8, 8)
    a = harness.bound_batch(x, threat, eps, seed=0)
    assert torch.equal(a, harness.bound_batch(x, threat, eps, seed=0))
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and not torch.equal(a, x)
    d = (a - x).flatten(1)
    if threat == "linf":
        assert float(d.abs().max()) <= eps + 1e-6
    else:
        assert float(d.norm(dim=1).max()) <= (eps or harness.MIN_L2_RADIUS) + 1e-5


def test_evaluate_evasion_rejects_outputs_outside_the_ball():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.full((5, 4), 0.5)
    y = model(x).argmax(1)
    inside = harness.evaluate_evasion(model, x, y, harness.Outcome(x_adv=x + 0.1), threat="linf", eps=0.1)
    outside = harness.evaluate_evasion(model, x, y, harness.Outcome(x_adv=x + 0.2), threat="linf", eps=0.1)
    assert inside["valid"] == "yes" and inside["robust_acc"] == pytest.approx(
        float((model(x + 0.1).argmax(1) == y).float().mean()))
    assert outside["valid"].startswith("max linf")


def test_fwd_bwd_chunked_does_the_same_passes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x, y = torch.rand(300, 4), torch.randint(0, 3, (300,))
    harness.fwd_bwd(model, x, y)()
    harness.fwd_bwd(model, x, y, chunked=True)()
    assert calls == [300, 100, 100, 100]


def test_identical_share_counts_whole_images_equal_in_every_pixel():
    a = torch.rand(4, 1, 3, 3)
    b = a.clone().double()  # a peer returning float64 of the same values is identical
    b[1, 0, 2, 2] += 1e-3   # one pixel off: that image is not
    b[3] = 0.0
    assert harness.identical_share(a, b) == 0.5


def test_run_case_records_how_often_a_peer_returns_threatlabs_adversarials():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, y = torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.long)

    def ours(ctx):
        return lambda xx, yy, seed: harness.Outcome(x_adv=(xx + 0.1).clamp(0, 1))

    def peer(ctx):
        def run(xx, yy, seed):
            out = (xx + 0.1).clamp(0, 1)
            out[:2] = xx[:2]  # two of six differ
            return harness.Outcome(x_adv=out)
        return run

    case = harness.Case("toy", "linf", {}, {"threatlab": ("", ours), "peer": ("", peer)}, eps=0.1)
    res = harness.run_case(case, {"model": model, "x": x, "y": y, "device": torch.device("cpu")},
                           repeats=2, seed=0, log=lambda s: None)
    assert res["rows"]["peer"]["identical_to_threatlab"] == pytest.approx(4 / 6)
    assert "identical_to_threatlab" not in res["rows"]["threatlab"]
