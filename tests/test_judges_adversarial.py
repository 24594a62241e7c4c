"""Judges F13-F18 (register v2) on constructed evidence: each bar from both sides, the
margins' scale, and every inconclusive path."""
from __future__ import annotations

import copy
import math

import pytest

from threatlab.report import findings
from threatlab.report.findings import INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, SUPPORTED

GOOD = {
    "F13": {"median": {"jsma": {"l0": 20.0, "l2": 3.0, "linf": 1.0},
                       "cw_l2": {"l0": 300.0, "l2": 1.2, "linf": 0.4},
                       "deepfool": {"l0": 400.0, "l2": 1.4, "linf": 0.35},
                       "min_linf": {"l0": 600.0, "l2": 2.5, "linf": 0.12}},
            "success": {"jsma": 0.9, "cw_l2": 1.0, "deepfool": 1.0, "min_linf": 1.0},
            "n_common": 50, "n": 60, "jsma_cap": 78, "jsma_hit_cap": 6},
    "F14": {"eps": [0.1, 0.2, 0.3], "success": {"pgd_linf": [0.5, 0.95, 1.0], "fgsm": [0.3, 0.6, 0.8]},
            "median_l2": {"cw_l2": 1.2, "deepfool": 1.4}, "passes_per_example": {"cw_l2": 1000.0, "deepfool": 40.0}},
    "F15": {"levels": [0.1, 0.25, 0.5], "best": {"score": [20.0, 60.0, 200.0], "decision": [500.0, 1500.0, 4000.0]},
            "budget": {"score": 10000, "decision": 10000}},
    "F16": {"untargeted_at_0.3": 0.6, "targeted_at_0.3": 0.1},
    "F17": {"fooled_in_90pct": {"clean": 0.0, "plain": 0.1, "eot": 0.5}, "clean_accuracy_under_transform": 0.97},
    "F18": {"robust_at": 0.8, "robust_undefended": 0.0, "clean_at": 0.97, "clean_undefended": 0.99,
            "train_passes_at": 40000, "train_passes_standard": 10000,
            "masked_plain_robust": 0.9, "masked_adaptive_robust": 0.1},
}


def judge(fid, ev):
    return findings.get(fid).judge_evidence(ev)


def with_(fid, path, value):
    ev = copy.deepcopy(GOOD[fid])
    d = ev
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return ev


@pytest.mark.parametrize("fid", sorted(GOOD))
def test_good_evidence_is_supported_with_a_positive_margin(fid):
    v = judge(fid, GOOD[fid])
    assert v.status == SUPPORTED, v
    assert v.margin > 0 and v.margin == min(v.margins.values())


# Each case pushes one number across one bar; the named margin must change sign.
CROSSINGS = [
    # F13: JSMA no longer smallest L0 / now smallest L-inf; min_linf loses L-inf / wins L0
    ("F13", ("median", "jsma", "l0"), 350.0, "jsma smallest L0"),
    ("F13", ("median", "jsma", "linf"), 0.1, "jsma not smallest L-inf"),
    ("F13", ("median", "min_linf", "linf"), 0.5, "min_linf smallest L-inf"),
    ("F13", ("median", "min_linf", "l0"), 10.0, "min_linf not smallest L0"),
    # F14: FGSM within 20 points; DeepFool smaller L2; DeepFool slower
    ("F14", ("success", "fgsm"), [0.3, 0.8, 0.9], "PGD - FGSM >= 20 points"),
    ("F14", ("median_l2", "deepfool"), 1.1, "L2 C&W < DeepFool"),
    ("F14", ("passes_per_example", "deepfool"), 2000.0, "cost C&W > DeepFool"),
    # F15: ratio 4 < 5 at one level
    ("F15", ("best", "decision"), [500.0, 240.0, 4000.0], "25%"),
    # F16: below 30 %, or not above targeted
    ("F16", ("untargeted_at_0.3",), 0.25, "untargeted >= 30 %"),
    ("F16", ("targeted_at_0.3",), 0.7, "untargeted > targeted"),
    # F17: EOT only 15 points above plain
    ("F17", ("fooled_in_90pct", "eot"), 0.25, "EOT - plain >= 20 points"),
    # F18: each of its four bars
    ("F18", ("robust_at",), 0.45, "robust AT - undefended >= 50 points"),
    ("F18", ("clean_undefended",), 0.96, "clean AT < undefended"),
    ("F18", ("train_passes_at",), 25000, "AT time >= 3 x standard"),
    ("F18", ("masked_adaptive_robust",), 0.65, "quantization: plain - BPDA >= 30 points"),
]


@pytest.mark.parametrize("fid, path, value, margin", CROSSINGS)
def test_each_bar_decides_from_both_sides(fid, path, value, margin):
    good = judge(fid, GOOD[fid])
    bad = judge(fid, with_(fid, path, value))
    assert good.margins[margin] > 0
    assert bad.margins[margin] <= 0
    assert bad.status == NOT_SUPPORTED and bad.margin == bad.margins[margin]


def test_margins_are_on_the_registers_scale():
    v = judge("F15", GOOD["F15"])
    assert v.margins["10%"] == pytest.approx(math.log(25 / 5))
    assert v.margins["50%"] == pytest.approx(math.log(20 / 5))
    v = judge("F17", GOOD["F17"])
    assert v.margins["EOT - plain >= 20 points"] == pytest.approx(0.2)
    v = judge("F18", GOOD["F18"])
    assert v.margins["AT time >= 3 x standard"] == pytest.approx(math.log(4 / 3))
    assert v.margins["robust AT - undefended >= 50 points"] == pytest.approx(0.3)
    v = judge("F13", GOOD["F13"])
    assert v.margins["jsma smallest L0"] == pytest.approx(math.log(300 / 20))
    assert v.margins["min_linf smallest L-inf"] == pytest.approx(math.log(0.35 / 0.12))
    v = judge("F14", GOOD["F14"])
    assert v.numbers["eps"] == 0.2  # the smallest eps where PGD >= 90 %
    assert v.margins["PGD - FGSM >= 20 points"] == pytest.approx(0.15)


def test_f15_one_sided_levels():
    # 50 % reached only by the score-based side: supports (>= +0.01) even when the
    # stand-in (2 x budget) ratio would not reach 5 x
    ev = with_("F15", ("best", "decision"), [500.0, 1500.0, None])
    ev["best"]["score"] = [20.0, 60.0, 9000.0]
    v = judge("F15", ev)
    assert v.margins["50%"] == pytest.approx(0.01) and v.status == SUPPORTED
    # a level reached only by the decision-based side counts against
    ev = with_("F15", ("best", "score"), [20.0, 60.0, None])
    v = judge("F15", ev)
    assert v.margins["50%"] < 0 and v.status == NOT_SUPPORTED
    # a level neither reaches is skipped
    ev = with_("F15", ("best", "score"), [20.0, 60.0, None])
    ev["best"]["decision"] = [500.0, 1500.0, None]
    v = judge("F15", ev)
    assert "50%" not in v.margins and v.status == SUPPORTED


def test_f15_inconclusive_when_no_level_is_reached_or_budget_too_small():
    ev = with_("F15", ("best", "score"), [None, None, None])
    ev["best"]["decision"] = [None, None, None]
    v = judge("F15", ev)
    assert v.status == INCONCLUSIVE and v.margin is None
    v = judge("F15", with_("F15", ("budget", "decision"), 5000))
    assert v.status == INCONCLUSIVE and v.margin > 0


def test_f14_inconclusive_when_pgd_never_reaches_90_percent():
    ev = with_("F14", ("success", "pgd_linf"), [0.5, 0.7, 0.85])
    v = judge("F14", ev)
    assert v.status == INCONCLUSIVE
    assert v.numbers["eps"] == 0.3  # read at the largest eps
    assert v.checks[0]["ok"] is False


def test_f17_inconclusive_when_the_model_does_not_handle_the_distribution():
    v = judge("F17", with_("F17", ("clean_accuracy_under_transform",), 0.94))
    assert v.status == INCONCLUSIVE and v.margin > 0
    assert "clean accuracy under the transformations" in v.note
    assert "clean fooled in >= 90 % of draws" in findings.get("F17").baselines


def test_f18_inconclusive_when_the_at_model_is_too_weak():
    v = judge("F18", with_("F18", ("clean_at",), 0.9))
    assert v.status == INCONCLUSIVE
    assert judge("F18", with_("F18", ("clean_at",), 0.95)).status == SUPPORTED


@pytest.mark.parametrize("fid, path, value", [
    ("F13", ("median", "jsma", "l0"), float("nan")),   # no successful JSMA example
    ("F13", ("median", "min_linf"), None),
    ("F14", ("median_l2", "cw_l2"), None),
    ("F15", ("budget",), {}),
    ("F17", ("fooled_in_90pct", "eot"), None),
    ("F18", ("train_passes_standard",), 0),
])
def test_broken_evidence_is_not_run(fid, path, value):
    assert judge(fid, with_(fid, path, value)).status == NOT_RUN


def test_findings_are_registered_in_order():
    from threatlab.report.judges import adversarial

    assert [f.id for f in adversarial.FINDINGS] == ["F13", "F14", "F15", "F16", "F17", "F18"]
    assert all(findings.get(f.id) is f for f in adversarial.FINDINGS)
