"""Budgets per data set (FINDINGS.md rule G2): the table, its resolution, the grids built
on it, and how notebooks 01 and 04 read it through their parameters."""
import json
import math

import pytest

from threatlab import budgets, run, validate
from threatlab.errors import ConfigError
from threatlab.protocols import evasion


def test_the_table_is_g2():
    assert budgets.EPS_LINF == {"mnist": 0.3, "fashion_mnist": 0.1}
    assert budgets.EPS_GRID_STEP == {"mnist": 0.025, "fashion_mnist": 0.0125}


@pytest.mark.parametrize("dataset,eps", [("mnist", 0.3), ("fashion_mnist", 0.1)])
def test_none_resolves_to_the_data_sets_budget(dataset, eps):
    assert budgets.eps_linf(dataset) == (eps, False)
    assert budgets.eps_linf(dataset, None) == (eps, False)


def test_an_override_is_used_and_said_even_when_equal_to_the_table():
    assert budgets.eps_linf("mnist", 0.2) == (0.2, True)
    assert budgets.eps_linf("fashion_mnist", 0.3) == (0.3, True)
    assert budgets.eps_linf("mnist", 0.3) == (0.3, True)
    assert budgets.eps_linf("digits", 0.25) == (0.25, True)  # outside the table: only with an eps


@pytest.mark.parametrize("dataset", ["digits", "cifar10", "MNIST", None, 3])
def test_unknown_data_set_is_a_config_error(dataset):
    with pytest.raises(ConfigError, match=r"dataset=.* has no L-inf budget; allowed: \['fashion_mnist', 'mnist'\]"):
        budgets.eps_linf(dataset)
    with pytest.raises(ConfigError, match="has no L-inf budget"):
        budgets.eps_grid(dataset)


@pytest.mark.parametrize("bad,msg", [(0, "outside the allowed range"), (1.5, "outside the allowed range"),
                                     (-0.1, "outside"), (math.nan, "not NaN"), (math.inf, "finite"),
                                     ("0.3", "must be a number"), (True, "must be a number")])
def test_bad_override_is_a_one_line_config_error(bad, msg):
    with pytest.raises(ConfigError, match=msg) as err:
        budgets.eps_linf("mnist", bad)
    assert str(err.value).startswith("eps=") and "\n" not in str(err.value)


def test_f14_grid_runs_in_register_steps_up_to_the_budget():
    g = budgets.eps_grid("mnist")
    assert len(g) == 12 and g[-1] == 0.3 and g[0] == 0.025
    assert all(b - a == pytest.approx(0.025) for a, b in zip(g, g[1:]))
    f = budgets.eps_grid("fashion_mnist")
    assert len(f) == 8 and f[-1] == 0.1 and f[0] == 0.0125
    assert all(b - a == pytest.approx(0.0125) for a, b in zip(f, f[1:]))
    assert budgets.eps_grid("mnist", 0.2)[-1] == 0.2 and len(budgets.eps_grid("mnist", 0.2)) == 8
    odd = budgets.eps_grid("mnist", 0.1234567)
    assert odd[-1] == 0.1234567 and len(odd) == 5  # round(0.1234567 / 0.025) equal steps, top exact
    assert budgets.eps_grid("mnist", 0.01) == [0.01]  # at least one point
    assert budgets.eps_grid("digits", 0.24) == pytest.approx([0.02 * i for i in range(1, 13)])


def test_fractions_end_at_the_budget_exactly():
    assert budgets.fractions_of(0.3) == [0.1, 0.2, 0.3]
    assert budgets.fractions_of(0.1) == [0.033333, 0.066667, 0.1]
    assert budgets.fractions_of(0.1234567)[-1] == 0.1234567
    assert budgets.fractions_of(0.3, [0.5, 1]) == [0.15, 0.3]
    with pytest.raises(ConfigError, match=r"fractions\[1\]=1.5 is outside"):
        budgets.fractions_of(0.3, [0.5, 1.5])
    with pytest.raises(ConfigError, match=r"fractions=\[\] must name"):
        budgets.fractions_of(0.3, [])
    with pytest.raises(ConfigError, match="eps=nan"):
        budgets.fractions_of(math.nan)


# ------------------------------------------------------ F16's evidence at the budget

def test_f16_evidence_is_read_at_the_budget():
    mean = {"untargeted": [0.2, 0.5, 0.9], "targeted": [0.0, 0.1, 0.3]}
    e = evasion.evidence_f16(mean, budgets.fractions_of(0.1), eps=0.1)
    assert (e["eps_judged"], e["untargeted_at_eps"], e["targeted_at_eps"]) == (0.1, 0.9, 0.3)
    assert "untargeted_at_0.3" not in e  # the MNIST-only names are not given to another budget
    e3 = evasion.evidence_f16(mean, [0.1, 0.3, 0.4], eps=0.3)
    assert (e3["untargeted_at_eps"], e3["untargeted_at_0.3"], e3["targeted_at_0.3"]) == (0.5, 0.5, 0.1)
    with pytest.raises(ConfigError, match=r"must be a list including 0.1 \(F16 is judged there\)"):
        evasion.evidence_f16(mean, [0.2, 0.3, 0.4], eps=0.1)


# ------------------------------------------------------- notebooks read the table

@pytest.mark.parametrize("nb", ["01_model_extraction", "04_adversarial"])
def test_notebook_eps_parameters_default_to_the_table(nb):
    declared = run.notebook_parameters(run.NOTEBOOKS / f"{nb}.ipynb")
    assert declared["eps"] is None
    if nb == "04_adversarial":
        assert declared["eps_grid"] is None and declared["transfer_eps"] is None and declared["eps_at"] is None


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_no_profile_pins_an_mnist_budget(profile):
    prof = run.load_profile(profile)
    for nb in ("01_model_extraction", "04_adversarial"):
        own = prof["notebooks"].get(nb) or {}
        assert not {"eps", "eps_grid", "transfer_eps", "eps_at"} & set(own), (profile, nb)


def _validation_cell(nb):
    cells = json.loads((run.NOTEBOOKS / f"{nb}.ipynb").read_text())["cells"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    return "".join(cells[i + 1]["source"])


@pytest.mark.parametrize("dataset,override,expect", [
    ("mnist", {}, {"eps_linf": 0.3, "overridden": False, "eps_grid": budgets.eps_grid("mnist"),
                   "transfer_eps": [0.1, 0.2, 0.3], "eps_at": 0.3}),
    ("fashion_mnist", {}, {"eps_linf": 0.1, "overridden": False, "eps_grid": budgets.eps_grid("fashion_mnist"),
                           "transfer_eps": [0.033333, 0.066667, 0.1], "eps_at": 0.1}),
    ("fashion_mnist", {"eps": 0.2, "eps_at": 0.05}, {"eps_linf": 0.2, "overridden": True,
                                                      "eps_grid": budgets.eps_grid("fashion_mnist", 0.2),
                                                      "transfer_eps": [0.066667, 0.133333, 0.2], "eps_at": 0.05}),
])
def test_04_validation_cell_resolves_and_records_the_budget(dataset, override, expect):
    params = {**run.notebook_parameters(run.NOTEBOOKS / "04_adversarial.ipynb"), "dataset": dataset, **override}
    ns = dict(params)
    exec(_validation_cell("04_adversarial"), ns)  # the cell the notebook runs, on these parameters
    assert ns["PARAMS"]["budget"] == expect
    assert ns["PARAMS"]["eps"] == override.get("eps")  # the parameter itself stays as given
    assert (ns["eps"], ns["eps_grid"], ns["transfer_eps"], ns["eps_at"]) == (
        expect["eps_linf"], expect["eps_grid"], expect["transfer_eps"], expect["eps_at"])


@pytest.mark.parametrize("dataset,override,expect", [
    ("mnist", {}, {"eps_linf": 0.3, "overridden": False}),
    ("fashion_mnist", {}, {"eps_linf": 0.1, "overridden": False}),
    ("mnist", {"eps": 0.25}, {"eps_linf": 0.25, "overridden": True}),
])
def test_01_validation_cell_resolves_and_records_the_budget(dataset, override, expect):
    params = {**run.notebook_parameters(run.NOTEBOOKS / "01_model_extraction.ipynb"), "dataset": dataset, **override}
    ns = dict(params)
    exec(_validation_cell("01_model_extraction"), ns)
    assert ns["PARAMS"]["budget"] == expect and ns["eps"] == expect["eps_linf"]


@pytest.mark.parametrize("override,msg", [
    ({"dataset": "digits"}, r"dataset='digits'"),  # 04 runs where G2 fixes a budget
    ({"eps": math.nan}, r"eps=nan"),
    ({"eps": 1.5}, r"eps=1.5 is outside"),
    ({"dataset": "fashion_mnist", "transfer_eps": [0.2, 0.3]}, r"transfer_eps=\[0.2, 0.3\] must include eps=0.1"),
    ({"eps_grid": [0.1, 2.0]}, r"eps_grid\[1\]=2.0 is outside"),
])
def test_04_validation_cell_refuses_bad_budgets(override, msg):
    params = {**run.notebook_parameters(run.NOTEBOOKS / "04_adversarial.ipynb"), **override}
    with pytest.raises(ConfigError, match=msg):
        exec(_validation_cell("04_adversarial"), dict(params))


def test_runner_preflight_checks_an_explicit_budget_before_any_notebook_runs():
    path = run.NOTEBOOKS / "04_adversarial.ipynb"
    run.preflight(path, {"eps": 0.1})  # None defaults pass: the notebook resolves them
    with pytest.raises(ConfigError, match=r"transfer_eps=\[0.3\], eps=0.1: .* does not hold"):
        run.preflight(path, {"eps": 0.1, "transfer_eps": [0.3]})
    with pytest.raises(ConfigError, match=r"eps_at=0.0 is outside"):
        run.preflight(path, {"eps_at": 0.0})


def test_optional_rule_admits_none_only_when_declared():
    rule = {"low": 0, "high": 1, "low_open": True}
    assert validate.check_rule("eps", None, {**rule, "optional": True}) is None
    assert validate.check_rule("eps", 0.5, {**rule, "optional": True}) == 0.5
    with pytest.raises(ConfigError, match="eps=None must be a number"):
        validate.check_rule("eps", None, rule)
    with pytest.raises(ConfigError, match="eps=0 is outside"):
        validate.check_rule("eps", 0, {**rule, "optional": True})


@pytest.mark.parametrize("nb", ["01_model_extraction", "04_adversarial"])
def test_only_the_validation_cell_binds_eps(nb):
    """The resolved budget must reach F04 / F16 unchanged: a later `for eps in ...` would
    leave `eps` at the loop's last value (seen in 04's transfer sweep)."""
    import ast

    cells = json.loads((run.NOTEBOOKS / f"{nb}.ipynb").read_text())["cells"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    for j, c in enumerate(cells[i + 2:], start=i + 2):
        if c["cell_type"] != "code":
            continue
        tree = ast.parse("".join(l for l in c["source"] if not l.lstrip().startswith(("%", "!"))))
        stores = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "eps"
                  and isinstance(n.ctx, ast.Store)]
        assert not stores, f"{nb} cell {j} rebinds eps (lines {stores})"
