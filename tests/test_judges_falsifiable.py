"""G0: every judge can say supported, not supported and decided by design (or check failed)
on plausible synthetic evidence shaped like what notebooks 01-04 record."""
import pytest

from threatlab.report import findings
from judge_cases import CASES, judge


@pytest.mark.parametrize("fid, case, evidence, dataset, status, says", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_judge_says(fid, case, evidence, dataset, status, says):
    v = judge(fid, evidence, dataset)
    assert v.status == status, (v.status, v.note, v.margins)
    assert says in v.note


#: Judges that today's evidence cannot make say supported / not supported (none left:
#: F13's two-model protocol replaced its form that held by construction).
BY_CONSTRUCTION: set[str] = set()


def test_every_judge_has_three_outcomes():
    for f in findings.FINDINGS:
        if f.id in BY_CONSTRUCTION:
            continue
        got = {c[4] for c in CASES if c[0] == f.id}
        assert {"supported", "not supported"} <= got and len([c for c in CASES if c[0] == f.id]) >= 3, f.id


def test_f03_grid_short_of_the_rules_400_queries_is_decided_by_design():
    # The smoke profile's grid (50-200 queries) cannot set the comparison level by rule.
    from judge_cases import F03, _with

    short = _with(F03, budgets=[50, 100, 200],
                  agreement={k: v[1:4] for k, v in F03["agreement"].items()})
    v = judge("F03", short, "mnist")
    assert v.status == "inconclusive" and "does not reach the 400 queries" in v.note, (v.status, v.note)
