"""The verdict machinery of register v2: margins, power checks, aggregation over seeds."""
import math

import pytest
from scipy import stats

from threatlab.report import findings as F


def test_margins_are_zero_at_the_bar():
    assert F.log_ratio_margin(3.0, 3.0) == 0.0
    assert F.log_ratio_margin(6.0, 3.0) == pytest.approx(math.log(2))
    assert F.diff_margin(0.35, 0.30) == pytest.approx(0.05)
    for bad in (float("nan"), float("inf"), None):
        with pytest.raises(ValueError):
            F.diff_margin(bad, 0.3)
    with pytest.raises(ValueError, match="positive"):
        F.log_ratio_margin(0.0, 3.0)


def test_judged_takes_the_smallest_margin_and_power_checks():
    v = F.judged({"a": 0.2, "b": 0.05}, {"x": 1})
    assert v.status == F.SUPPORTED and v.margin == 0.05 and v.margins == {"a": 0.2, "b": 0.05}
    v = F.judged({"a": 0.2, "b": -0.01}, {})
    assert v.status == F.NOT_SUPPORTED and v.margin == -0.01
    v = F.judged({"a": 0.0}, {})
    assert v.status == F.NOT_SUPPORTED            # the claim holds iff margin > 0
    v = F.judged({"a": 0.5}, {}, checks=[F.power_check("clean accuracy(AT) >= 0.95", 0.67, False)])
    assert v.status == F.INCONCLUSIVE and "clean accuracy(AT) >= 0.95 = 0.67" in v.note
    with pytest.raises(ValueError):
        F.judged({}, {})


def _finding(pooled=None):
    def judge(e):
        return F.judged({"m": e["m"]}, {"value": e["value"]},
                        checks=[F.power_check("power", e.get("power", 1), e.get("power", 1) > 0)])
    return F.Finding("F99", "adversarial", "claim", "rule", "fig", judge, pooled=pooled)


def test_aggregate_matches_a_hand_computed_t_interval():
    margins = [0.10, 0.12, 0.08, 0.15, 0.11]
    evs = [{"m": m, "value": 10 * m} for m in margins]
    agg = F.aggregate(_finding(), "mnist", evs)
    n, mean = len(margins), sum(margins) / len(margins)
    sd = math.sqrt(sum((m - mean) ** 2 for m in margins) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert agg.status == F.SUPPORTED and agg.k == 5 and agg.n == 5
    assert agg.margin == pytest.approx((mean, mean - half, mean + half))
    assert agg.numbers["value"] == pytest.approx((10 * mean, 10 * (mean - half), 10 * (mean + half)))


def test_aggregate_straddling_below_and_underpowered():
    straddle = F.aggregate(_finding(), "mnist", [{"m": m, "value": 0} for m in (0.1, -0.1, 0.05, -0.05, 0.02)])
    assert straddle.status == F.INCONCLUSIVE and "straddles" in straddle.note and straddle.k == 3
    below = F.aggregate(_finding(), "mnist", [{"m": -m, "value": 0} for m in (0.1, 0.12, 0.08, 0.15, 0.11)])
    assert below.status == F.NOT_SUPPORTED and below.k == 0
    few = F.aggregate(_finding(), "mnist", [{"m": 0.1, "value": 0}] * 4)
    assert few.status == F.INCONCLUSIVE and "4 runs < 5" in few.note
    weak = [{"m": 0.1, "value": 0, "power": 0}] * 2 + [{"m": 0.1, "value": 0}] * 3
    agg = F.aggregate(_finding(), "mnist", weak)
    assert agg.status == F.INCONCLUSIVE and agg.inconclusive_runs == 2


def test_aggregate_not_run_and_pooled_condition():
    assert F.aggregate(_finding(), "fashion_mnist", [None] * 5).status == F.NOT_RUN
    partial = F.aggregate(_finding(), "mnist", [{"m": 0.1, "value": 0}] * 5 + [None])
    assert partial.status == F.SUPPORTED and partial.not_run == 1
    seen = []

    def pooled(evs):
        seen.append(len(evs))
        return {"margin": -0.01, "numbers": {"p": 0.06}}

    agg = F.aggregate(_finding(pooled), "mnist", [{"m": 0.1 + i / 100, "value": 0} for i in range(5)])
    assert seen == [5] and agg.status == F.NOT_SUPPORTED and agg.pooled["numbers"]["p"] == 0.06


def test_v1_judges_have_no_margin_and_aggregate_inconclusive():
    v1 = F.Finding("F98", "poisoning", "c", "r", "f", F.v1_judge(lambda e: (True, {"x": 1})))
    assert v1.judge_evidence({}).status == F.SUPPORTED and v1.judge_evidence({}).margin is None
    assert F.aggregate(v1, "mnist", [{}] * 5).status == F.INCONCLUSIVE


def test_every_finding_has_a_notebook_and_judge():
    assert [f.id for f in F.FINDINGS] == [f"F{i:02d}" for i in range(1, 19)]
    assert {f.notebook for f in F.FINDINGS} == set(F.NOTEBOOK.values())
