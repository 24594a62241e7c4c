"""The verdict machinery of register v3: conditions and their reach (G0), checks (G1),
the intersection-union rule over seeds with exact tests on pooled counts (G3)."""
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from threatlab.errors import ConfigError
from threatlab.report import stats as S
from threatlab.report import verdicts as V


def test_machinery_imports_no_judges_and_no_registry():
    code = ("import sys, threatlab.report.verdicts, threatlab.report.stats; "
            "print(sorted(m for m in sys.modules if m.startswith(('threatlab.report.judges', "
            "'threatlab.report.findings'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # The registry imports the judges at top level (no lazy import inside a function).
    code = "import sys, threatlab.report.findings; print('threatlab.report.judges.adversarial' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_condition_margins_in_their_own_unit():
    assert V.Condition("acc", 0.35, 0.30).margin == pytest.approx(0.05)
    assert V.Condition("cost", 0.02, 0.05, op="<=").margin == pytest.approx(0.03)
    assert V.Condition("k x", 6.0, 3.0, unit="ratio", scale="log").margin == pytest.approx(math.log(2))
    assert V.Condition("dB", 20.0, 25.0, unit="dB").margin == -5.0
    with pytest.raises(ValueError, match="positive"):
        V.Condition("k x", 0.0, 3.0, unit="ratio", scale="log")
    with pytest.raises(ValueError, match="op"):
        V.Condition("x", 1.0, 1.0, op="=>")


def test_half_counts_make_24_of_30_pass_an_80_percent_bar():
    c = V.Condition("acc", 24 / 30, 0.80, half=V.half(30), reach=V.RATE)
    assert c.holds and c.margin == pytest.approx(0.5 / 30)
    assert not V.Condition("acc", 23 / 30, 0.80, half=V.half(30), reach=V.RATE).holds
    # "<=" bars get the half count downwards.
    assert V.Condition("drop", 0.0105, 0.01, op="<=", half=V.half(1000)).holds


def test_reach_decides_by_design_whatever_the_margin():
    # "3 x noise" with noise success 0.342: best / noise <= 1 / 0.342 < 3.
    c = V.Condition("best / noise", 0.9 / 0.342, 3.0, unit="ratio", scale="log", reach=V.multiple_reach(0.342))
    assert "cannot be passed" in c.g0
    v = V.judged([c, V.Condition("best", 0.9, 0.3, reach=V.RATE)], {})
    assert v.status == V.INCONCLUSIVE and v.note.startswith("decided by design: best / noise")
    # A bar below the whole reach cannot fail: also decided by design.
    assert "cannot fail" in V.Condition("rho", 0.9, -1.5, unit="rho", reach=V.CORRELATION).g0
    assert V.Condition("x", 0.5, 0.3, reach=V.RATE).g0 == ""
    assert V.Condition("x", 1.0, 0.3, reach=V.RATE).at_ceiling


def test_checks_identity_before_power_before_design():
    cond = V.Condition("x", 0.9, 3.0, reach=(0, 1))          # out of reach
    v = V.judged([cond], {}, checks=[V.power_check("targets >= 5", 3, False),
                                     V.identity_check("exact recovery", 1e-3, False)])
    assert v.status == V.INCONCLUSIVE and v.note.startswith("check failed: exact recovery")
    acc = V.accuracy_check("fashion_mnist", "mlp", 0.80)
    assert not acc.ok and "victim under-trained" in V.judged([V.Condition("y", 1, 0)], {}, checks=[acc]).note
    assert V.accuracy_check("mnist", "lenet5", 0.97).ok and V.accuracy_bar("fashion_mnist", "cnn") == 0.86
    with pytest.raises(ConfigError, match="no accuracy bar"):
        V.accuracy_bar("cifar10", "mlp")
    assert V.victim_checks({"acc_clean": 0.9}, "acc_clean") == []          # no architecture: no invented check
    assert not V.victim_checks({"dataset": "mnist", "architecture": "mlp", "acc_clean": 0.9}, "acc_clean")[0].ok


def _run(a, b, ok=True):
    return V.judged([V.Condition("a", a, 0.2), V.Condition("k x", b, 2.0, unit="ratio", scale="log")], {"n": a},
                    checks=[V.power_check("power", ok, ok)])


def test_intersection_union_rule_equals_hand_computation():
    a = [0.30, 0.28, 0.35, 0.25, 0.32]           # every run above 0.2
    b = [2.5, 3.0, 1.2, 2.8, 2.6]                # one run below 2
    agg = V.decide([_run(x, y) for x, y in zip(a, b)])
    ma = np.array(a) - 0.2
    la = np.log(np.array(b) / 2.0)
    hand_a = stats.t.interval(0.95, 4, loc=ma.mean(), scale=stats.sem(ma))
    hand_b = stats.t.interval(0.95, 4, loc=la.mean(), scale=stats.sem(la))
    sa, sb = agg.conditions
    assert sa.margin == pytest.approx((ma.mean(), *hand_a)) and sb.margin == pytest.approx((la.mean(), *hand_b))
    assert hand_a[0] > 0 and hand_b[0] < 0 < hand_b[1]
    assert agg.status == V.INCONCLUSIVE and "straddles its bar: k x" in agg.note and agg.k == 4
    # The ratio's value interval is geometric; a rate's is a bootstrap percentile interval in [0, 1].
    assert sb.value[0] == pytest.approx(math.exp(np.log(b).mean()))
    below = V.decide([_run(x, y) for x, y in zip(a, [1.2, 1.1, 1.5, 1.3, 1.0])])
    assert below.status == V.NOT_SUPPORTED and "k x" in below.note
    good = V.decide([_run(x, y) for x, y in zip(a, [2.5, 3.0, 2.9, 2.8, 2.6])])
    assert good.status == V.SUPPORTED


def test_inconclusive_runs_leave_the_interval_and_more_than_one_decides():
    a, b = [0.30, 0.28, 0.35, 0.25, 0.32], [2.5, 3.0, 2.9, 2.8, 2.6]
    one = V.decide([_run(x, y, ok=i != 0) for i, (x, y) in enumerate(zip(a, b))])
    assert one.status == V.SUPPORTED and one.conditions[0].runs == 4 and one.inconclusive_runs == 1
    two = V.decide([_run(x, y, ok=i > 1) for i, (x, y) in enumerate(zip(a, b))])
    assert two.status == V.INCONCLUSIVE and "2 of 5 runs inconclusive: power check failed: power (2)" == two.note
    few = V.decide([_run(x, y) for x, y in zip(a[:4], b[:4])])
    assert few.status == V.INCONCLUSIVE and few.note == "4 runs < 5 seeds"
    assert V.decide([V.Verdict(V.NOT_RUN, note="no evidence")] * 5).status == V.NOT_RUN


def test_exact_conditions_combine_by_intersection_union():
    runs = [_run(x, 3.0) for x in (0.30, 0.28, 0.35, 0.25, 0.32)]
    assert V.decide(runs, exact=[V.Exact("fisher", 1, 0.01)]).status == V.SUPPORTED
    assert V.decide(runs, exact=[V.Exact("fisher", 0, 0.3)]).status == V.INCONCLUSIVE
    assert V.decide(runs, exact=[V.Exact("fisher", -1, 0.99)]).status == V.NOT_SUPPORTED


def test_stats_intervals_stay_in_range_and_match_scipy():
    acc = [1.0, 1.0, 0.9667, 1.0, 0.9333]
    m, lo, hi = S.bootstrap_interval(acc)
    assert hi <= 1.0 and lo >= min(acc) and m == pytest.approx(np.mean(acc))
    assert S.bootstrap_interval(acc) == (m, lo, hi)                       # fixed random_state
    assert S.bootstrap_interval([1.0] * 5) == (1.0, 1.0, 1.0)
    k, n = 9, 10
    ci = stats.binomtest(k, n).proportion_ci(method="exact")
    assert S.clopper_pearson(k, n) == pytest.approx((0.9, ci.low, ci.high))
    p_gt, p_lt = S.fisher_one_sided(30, 50, 3, 50)
    assert p_gt == pytest.approx(stats.fisher_exact([[30, 20], [3, 47]], alternative="greater").pvalue)
    assert S.direction(p_gt, p_lt) == 1 and S.direction(0.5, 0.01) == -1 and S.direction(0.5, 0.5) == 0


def test_condition_at_ceiling_in_every_run():
    runs = [V.judged([V.Condition("acc", 1.0, 0.8, reach=V.RATE)], {}) for _ in range(5)]
    s = V.decide(runs).conditions[0]
    assert s.at_ceiling and s.value == (1.0, 1.0, 1.0)
