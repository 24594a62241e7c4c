"""Judges of findings F01-F04: model extraction (notebook 01), register v2.

Each judge is a pure function of the evidence dict notebook 01 records; it recomputes
what it decides from the raw numbers (curves, counts), so a judge never trusts a
derived number the notebook could have got wrong. Margins are scaled so 0 is the bar:
log-ratios for "k x" bars, differences for point bars on fractions.

Two exactness conventions (the register's bars are ">=", the verdict is "margin > 0"):
a count bar "q <= d + 1" on integer queries is the strict "q < d + 2"; a fraction k/n
measured on n examples is compared with its bar shifted down by half a count (0.5 / n),
so a value exactly at the bar passes and nothing else changes.
"""
from __future__ import annotations

from ...metrics import queries_to_reach
from ..findings import Finding, Verdict, diff_margin, judged, log_ratio_margin, num

#: Register v2 constants (FINDINGS.md), fixed before any run.
F01_LR_AGREEMENT = 0.999
F01_MLP_GAP = 0.10
F02_LEVELS = (0.80, 0.85)
F02_RATIO = 1.5
F03_LEVEL = 0.80
F03_RATIO = 2.0
F03_INFORMED = ("jacobian", "knockoff", "active")
F03_BASELINE, F03_SECOND_BASELINE = "pool", "noise"
F04_RATIO = 3.0
F04_SUCCESS = 0.30
NOT_REACHED_FACTOR = 2.0      # "a level never reached counts as the largest budget x 2"


def _curve_queries(budgets, agreement, level: float) -> tuple[float, bool]:
    if len(budgets) != len(agreement):
        raise ValueError(f"{len(budgets)} budgets but {len(agreement)} agreement values")
    return queries_to_reach([num(b) for b in budgets], [num(a) for a in agreement], level,
                            not_reached_factor=NOT_REACHED_FACTOR)


def _levels(e, expected) -> None:
    got = tuple(float(v) for v in e["levels"])
    if len(got) != len(expected) or any(abs(a - b) > 1e-12 for a, b in zip(got, expected)):
        raise ValueError(f"evidence levels {got} are not the register's {expected}")


def f01(e) -> Verdict:
    """LR agreement >= 99.9 % with queries <= d + 1; MLP: the solver's agreement at least
    10 points below a substitute trained on as many queries."""
    n = num(e["n_eval"])
    d1 = int(num(e["lr_d"])) + 1
    q = num(e["lr_queries"])
    lr_a, solver, sub = num(e["lr_agreement"]), num(e["mlp_solver_agreement"]), num(e["mlp_substitute_agreement"])
    if num(e["mlp_substitute_queries"]) != num(e["mlp_queries"]):
        raise ValueError("the MLP solver and substitute must use the same number of queries")
    margins = {"LR agreement": diff_margin(lr_a + 0.5 / n, F01_LR_AGREEMENT),
               "LR queries": log_ratio_margin(d1 + 1, q),
               "MLP substitute - solver": diff_margin(sub - solver + 0.5 / n, F01_MLP_GAP)}
    return judged(margins, {"LR agreement": lr_a, "LR queries": q, "d+1": d1, "MLP solver agreement": solver,
                            "MLP substitute agreement": sub, "MLP queries": num(e["mlp_queries"])})


def f02(e) -> Verdict:
    """At agreement 0.80 and 0.85, queries(label) / queries(probs) >= 1.5, each read from
    the agreement-vs-queries curve (log-scale interpolation, never reached = largest
    budget x 2); the margin is the smaller log-ratio minus log 1.5."""
    _levels(e, F02_LEVELS)
    budgets, agr = e["budgets"], e["agreement"]
    margins, numbers = {}, {}
    for level in F02_LEVELS:
        qp, rp = _curve_queries(budgets, agr["probs"], level)
        ql, rl = _curve_queries(budgets, agr["label"], level)
        margins[f"label/probs at {level:.2f}"] = log_ratio_margin(ql / qp, F02_RATIO)
        numbers[f"queries probs {level:.2f}"] = round(qp, 1)
        numbers[f"queries label {level:.2f}"] = round(ql, 1)
        numbers[f"ratio {level:.2f}"] = round(ql / qp, 4)
        numbers[f"reached probs/label {level:.2f}"] = f"{rp}/{rl}"
    return judged(margins, numbers)


def f03(e) -> Verdict:
    """The best informed strategy reaches 80 % agreement with <= 1/2 the queries of random
    pool queries (never reached = largest budget x 2); uniform noise is shown beside it."""
    if abs(float(e["level"]) - F03_LEVEL) > 1e-12:
        raise ValueError(f"evidence level {e['level']} is not the register's {F03_LEVEL}")
    budgets, agr = e["budgets"], e["agreement"]
    q = {name: _curve_queries(budgets, agr[name], F03_LEVEL) for name in (*F03_INFORMED, F03_BASELINE)}
    best = min(F03_INFORMED, key=lambda k: q[k][0])
    numbers = {"best strategy": best, "queries best": round(q[best][0], 1),
               "queries pool": round(q[F03_BASELINE][0], 1),
               **{f"queries {k}": round(q[k][0], 1) for k in F03_INFORMED}}
    if F03_SECOND_BASELINE in agr:
        numbers["queries noise"] = round(_curve_queries(budgets, agr[F03_SECOND_BASELINE], F03_LEVEL)[0], 1)
    margin = log_ratio_margin(q[F03_BASELINE][0] / q[best][0], F03_RATIO)
    return judged({"pool / best": margin}, numbers)


def f04(e) -> Verdict:
    """Best transfer success >= 3 x random sign noise of equal L-inf norm, and >= 30 %.

    Rates are k/n on n examples; a noise baseline with no success counts as one success
    (1/n, the measurement's resolution) so the ratio stays finite: this only makes the
    bar harder to pass."""
    n = num(e["n_examples"])
    best = max(num(v) for v in e["transfer_success"])
    noise = num(e["noise_success"])
    if num(e["noise_linf_max"]) > num(e["eps"]) + 1e-6:
        raise ValueError("the noise baseline exceeds the transfer attack's L-inf budget")
    margins = {"best / noise": log_ratio_margin((best + 0.5 / n) / max(noise, 1.0 / n), F04_RATIO),
               "best success": diff_margin(best + 0.5 / n, F04_SUCCESS)}
    return judged(margins, {"best transfer success": best, "noise success": noise, "examples": int(n),
                            "eps": num(e["eps"])})


FINDINGS: tuple[Finding, ...] = (
    Finding("F01", "extraction",
            "Solving equations from confidence scores copies a model exactly when it is linear in its logits, "
            "and falls clearly behind a trained substitute once a hidden non-linear layer is added.",
            "LR agreement >= 99.9% with <= d+1 queries; MLP: solver at least 10 points below a substitute "
            "trained on as many queries",
            "01_equation_solving", f01),
    Finding("F02", "extraction",
            "The more an API reveals per answer, the fewer queries a copy needs: a substitute trained on "
            "probabilities reaches the same agreement with fewer queries than one trained on labels.",
            "at agreement 0.80 and 0.85, queries(label) / queries(probs) >= 1.5 (log-scale interpolation; "
            "never reached = largest budget x 2)",
            "01_agreement_vs_queries", f02),
    Finding("F03", "extraction",
            "Choosing queries well (Jacobian augmentation, natural out-of-distribution images, active selection) "
            "beats asking random ones from the attacker's own pool.",
            "best informed strategy reaches 80% agreement with <= 1/2 the queries of random pool queries "
            "(never reached = largest budget x 2; uniform noise shown as a second baseline)",
            "01_query_strategies", f03, baselines=("queries pool", "queries noise")),
    Finding("F04", "extraction",
            "A stolen copy is a stepping stone: adversarial examples made white-box on it transfer to the "
            "black-box victim.",
            "best transfer success >= 3 x random sign noise of equal L-inf norm, and >= 30%",
            "01_transfer_from_substitute", f04, baselines=("noise success",)),
)

__all__ = ["FINDINGS", "f01", "f02", "f03", "f04"]
