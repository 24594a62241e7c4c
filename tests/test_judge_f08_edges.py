"""F08's judge at the edge of every condition (register v3: all bars one-sided).

At the bar each condition holds (">=" / "<=" include equality); a step past it fails,
and in the direction the claim favours it stays supported: no condition is two-sided.
Numbers are chosen exactly representable so equality is exact.
"""
import copy

import pytest

from threatlab.report.findings import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, get

NOISE = [0.0, 1e-4, 1e-3, 1e-2, 1e-1]


def evidence(b1=25.0, b4=15.0, end=15.0, black=10.0, mean_image=12.0, sizes=(1, 2, 4), noise_psnr=None):
    """Batch 1 at 25 dB (bar 25), 13 dB above the better baseline (bar 10), batch 4 at
    b1 - 10 (bar), PSNR at the largest noise = better baseline + 3 (bar)."""
    by_batch = {1: b1, 2: (b1 + b4) / 2, 4: b4}
    return {"baseline_psnr": {"black": black, "mean_image": mean_image}, "batch_sizes": list(sizes),
            "noise": NOISE,
            "rows": {"sigmoid_lenet": {"label_acc_batch1": 1.0, "psnr_vs_batch": [by_batch[b] for b in sizes],
                                       "psnr_vs_noise": noise_psnr or [b1, b1, 20.0, 16.0, end]}}}


def judge(e):
    return get("F08").judge_evidence(copy.deepcopy(e), "mnist")


def test_every_condition_at_its_bar_holds():
    v = judge(evidence())
    assert v.status == SUPPORTED, v.note
    assert all(m == pytest.approx(0.0, abs=1e-12) for name, m in v.margins.items()
               if name != "PSNR batch 1 - better baseline")
    assert v.margins["PSNR batch 1 - better baseline"] == pytest.approx(3.0)


@pytest.mark.parametrize("change, failing", [
    (dict(b1=24.5, b4=14.5, noise_psnr=[24.5, 24.5, 20.0, 16.0, 15.0]), "PSNR batch 1"),
    (dict(mean_image=15.5, end=18.5, b1=25.0, noise_psnr=[25.0, 25.0, 20.0, 19.0, 18.5]),
     "PSNR batch 1 - better baseline"),
    (dict(b4=15.5), "PSNR batch 4 - batch 1"),
    (dict(end=15.5), "PSNR max noise - better baseline"),
])
def test_a_step_past_each_bar_fails_that_condition_only(change, failing):
    v = judge(evidence(**change))
    assert v.status == NOT_SUPPORTED
    assert [c.name for c in v.conditions if not c.holds] == [failing]


@pytest.mark.parametrize("change", [dict(b1=40.0, noise_psnr=[40.0, 40.0, 20.0, 16.0, 15.0]),  # far above 25 dB
                                    dict(b4=5.0),    # batch 4 far worse than batch 1: one-sided, still holds
                                    dict(end=2.0)])  # noise far below the baseline: still holds
def test_beyond_each_bar_in_the_claimed_direction_stays_supported(change):
    assert judge(evidence(**change)).status == SUPPORTED


def test_without_batch_4_the_batch_bar_is_not_silently_dropped():
    v = judge(evidence(sizes=(1, 2)))
    assert v.status == INCONCLUSIVE and "batch sizes include 1 and 4" in v.note


def test_reports_the_smallest_noise_at_which_the_leak_is_gone():
    v = judge(evidence(noise_psnr=[25.0, 24.0, 15.0, 14.0, 13.0]))
    assert v.numbers["smallest noise multiplier with the leak gone"] == 1e-3   # 15.0 <= 12 + 3
    v = judge(evidence(noise_psnr=[25.0, 24.0, 20.0, 19.0, 15.0]))
    assert v.numbers["smallest noise multiplier with the leak gone"] == 1e-1
