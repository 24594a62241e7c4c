"""Judges of findings F01-F04: model extraction (notebook 01), on the machinery of
`report.verdicts` (the findings' testable rules, applied to the evidence notebook 01 records).

Each judge is a pure function of the evidence dict notebook 01 records; it recomputes
what it decides from the raw numbers (curves, counts), so a judge never trusts a
derived number the notebook could have got wrong. Every condition declares its reach
(G0); a rate measured on n examples is compared with its bar as a half-count (k + 0.5)/n
(G3.2). G1's accuracy check is applied when the evidence records the victim's data set,
architecture and clean accuracy ("dataset", "architecture", "victim_accuracy"): for F01
the MLP victim (the judged one; the LR victim's recovery is an identity), for F02-F04
the substitute experiments' victim.
"""
from __future__ import annotations

import math

import numpy as np

from ...metrics import queries_to_reach
from ..verdicts import (RATE, Condition, Finding, Verdict, grid_ratio_reach, half, identity_check, judged,
                        minus_reach, multiple_reach, num, victim_checks)

#: The findings' constants, fixed before any run.
F01_LR_AGREEMENT = 0.999
F01_PARAM_ERROR = 1e-6        # largest parameter error / largest weight (the identity check)
F01_MLP_GAP = 0.10
F02_LEVELS = (0.80, 0.85)
F02_RATIO = 1.5
F03_LEVEL_BUDGET = 400        # L = the pool baseline's agreement at 400 queries, rounded down to 0.01
F03_RATIO = 2.0
F03_GRID_HEADROOM = 8         # G0: the grid starts at <= 1/8 of the baseline's queries at L
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
        raise ValueError(f"evidence levels {got} are not the finding's {expected}")


def f01(e) -> Verdict:
    """MLP: a substitute trained on the same d+1 pool queries agrees with the victim >= 10
    points more than the linear solver (the only margin, half-counted on n_eval). The LR
    victim's exact recovery from d+1 queries is an identity (G0), reported as a check:
    agreement >= 99.9 %, largest parameter error <= 1e-6 of the largest weight, and at
    most d+1 queries. The solver on d+1 uniform-noise queries is shown, not judged.
    Evidence whose solver and substitute did not read the same answers (recorded as
    "mlp_shared_queries", with distinct queries = queries) is refused."""
    n = num(e["n_eval"])
    d1 = int(num(e["lr_d"])) + 1
    q = num(e["lr_queries"])
    lr_a, solver, sub = num(e["lr_agreement"]), num(e["mlp_solver_agreement"]), num(e["mlp_substitute_agreement"])
    if num(e["mlp_substitute_queries"]) != num(e["mlp_queries"]):
        raise ValueError("the MLP solver and substitute must use the same number of queries")
    if e.get("mlp_shared_queries") is not True or num(e["mlp_distinct_queries"]) != num(e["mlp_queries"]):
        raise ValueError("the MLP solver and substitute must read the same answers to distinct pool queries")
    # Results files round to 6 decimals; the log10 form (when recorded) keeps a 1e-6 check exact.
    rel_err = 10 ** num(e["lr_log10_rel_error"]) if "lr_log10_rel_error" in e \
        else num(e["lr_max_param_error"]) / num(e["lr_max_abs_weight"])
    checks = [identity_check(f"LR recovered exactly: agreement >= {F01_LR_AGREEMENT}, parameter error <= "
                             f"{F01_PARAM_ERROR:g} of the largest weight, queries <= d+1",
                             f"agreement {lr_a:.4g}, relative error {rel_err:.3g}, {q:g} queries",
                             lr_a >= F01_LR_AGREEMENT and rel_err <= F01_PARAM_ERROR and q <= d1),
              *victim_checks(e, "victim_accuracy")]
    cond = Condition("MLP substitute - solver agreement", sub - solver, F01_MLP_GAP, half=half(n),
                     reach=minus_reach(solver), why="agreement <= 1",
                     baseline=f"solver agreement {solver:.3g}")
    return judged([cond], {"LR agreement": lr_a, "LR queries": q, "d+1": d1, "LR relative parameter error": rel_err,
                           "MLP solver agreement": solver, "MLP substitute agreement": sub,
                           "MLP queries": num(e["mlp_queries"]),
                           "MLP solver agreement, uniform-noise queries (shown)": e.get("mlp_noise_solver_agreement"),
                           "log10 LR relative parameter error": math.log10(max(rel_err, 1e-300)),
                           "log10 LR relative parameter error, float64 answers (shown)":
                               e.get("lr_log10_rel_error_float64_answers")},
                   checks=checks)


def f02(e) -> Verdict:
    """At agreement 0.80 and 0.85, queries(label) / queries(probs) >= 1.5, each read from
    the agreement-vs-queries curve (log-scale interpolation, never reached = largest
    budget x 2). G0: given probs' queries q_p, the ratio lies in [smallest budget / q_p,
    largest budget x 2 / q_p]; a level probs never reach caps it at 1."""
    _levels(e, F02_LEVELS)
    budgets, agr = e["budgets"], e["agreement"]
    conds, numbers = [], {}
    for level in F02_LEVELS:
        qp, rp = _curve_queries(budgets, agr["probs"], level)
        ql, rl = _curve_queries(budgets, agr["label"], level)
        lo_b, hi_b = grid_ratio_reach(budgets, NOT_REACHED_FACTOR)
        top = max(num(b) for b in budgets) * NOT_REACHED_FACTOR
        conds.append(Condition(f"label/probs queries at {level:.2f}", ql / qp, F02_RATIO, unit="ratio", scale="log",
                               reach=(top * lo_b / qp, top / qp),
                               why="label queries lie between the grid's first budget and its largest x 2",
                               baseline=f"probs {qp:.0f} queries"))
        numbers[f"queries probs {level:.2f}"] = round(qp, 1)
        numbers[f"queries label {level:.2f}"] = round(ql, 1)
        numbers[f"reached probs/label {level:.2f}"] = f"{rp}/{rl}"
    return judged(conds, numbers, checks=victim_checks(e, "victim_accuracy"))


def f03_level(budgets, pool) -> float:
    """The comparison level L: the pool baseline's agreement at 400 queries
    (interpolated in log queries), rounded down to 0.01 (F03's rule)."""
    b = np.log(np.asarray([num(x) for x in budgets], dtype=float))
    a = np.interp(math.log(F03_LEVEL_BUDGET), b, [num(x) for x in pool])
    if not b[0] <= math.log(F03_LEVEL_BUDGET) <= b[-1]:
        raise ValueError(f"budgets {list(budgets)} do not span {F03_LEVEL_BUDGET} queries")
    return math.floor(float(a) * 100 + 1e-9) / 100


def f03(e) -> Verdict:
    """The best informed strategy reaches L with <= 1/2 the pool baseline's queries (a
    strategy never reaching L counts as its largest budget x 2); L per `f03_level`.
    G0: the grid must start at <= 1/8 of the baseline's queries at L, else a saving
    cannot show; the ratio's reach is [q_pool / (largest x 2), q_pool / smallest]."""
    budgets, agr = e["budgets"], e["agreement"]
    lo_b, hi_b = min(num(b) for b in budgets), max(num(b) for b in budgets)
    spans = lo_b <= F03_LEVEL_BUDGET <= hi_b
    # A grid that never reaches the rule's 400 queries (the smoke profile's) cannot set L
    # by rule: read L at the grid's nearest end and let G0 say the design decided it.
    level = f03_level(budgets, agr[F03_BASELINE]) if spans else math.floor(
        num(agr[F03_BASELINE][[num(b) for b in budgets].index(hi_b if hi_b < F03_LEVEL_BUDGET else lo_b)])
        * 100 + 1e-9) / 100
    q = {name: _curve_queries(budgets, agr[name], level) for name in (*F03_INFORMED, F03_BASELINE)}
    best = min(F03_INFORMED, key=lambda k: q[k][0])
    q_pool, start = q[F03_BASELINE][0], min(num(b) for b in budgets)
    design = "" if start <= q_pool / F03_GRID_HEADROOM else (
        f"pool / best: the grid starts at {start:g} queries, above 1/{F03_GRID_HEADROOM} of the pool "
        f"baseline's {q_pool:.0f} queries at L = {level:.2f}")
    if not spans:
        design = (f"pool / best: the budget grid {lo_b:g}..{hi_b:g} does not reach the {F03_LEVEL_BUDGET} "
                  "queries at which the rule sets the comparison level")
    cond = Condition("pool / best informed queries", q_pool / q[best][0], F03_RATIO, unit="ratio", scale="log",
                     reach=(q_pool / (max(num(b) for b in budgets) * NOT_REACHED_FACTOR), q_pool / start),
                     why="an informed strategy needs at least the grid's first budget", design=design,
                     baseline=f"pool {q_pool:.0f} queries")
    numbers = {"level L": level, "best strategy": best, "queries best": round(q[best][0], 1),
               "queries pool": round(q_pool, 1), **{f"queries {k}": round(q[k][0], 1) for k in F03_INFORMED}}
    if F03_SECOND_BASELINE in agr:
        numbers["queries noise"] = round(_curve_queries(budgets, agr[F03_SECOND_BASELINE], level)[0], 1)
    return judged([cond], numbers, checks=victim_checks(e, "victim_accuracy"))


def f04(e) -> Verdict:
    """Best transfer success >= 3 x random sign noise of equal L-inf norm, and >= 30 %
    (half-counts). A noise baseline with no success counts as one success (1/n) so the
    ratio stays finite. G0: the ratio's reach is [0, 1 / noise] (half-counted); noise success
    above 1/3 puts "3 x noise" out of reach."""
    n = num(e["n_examples"])
    best = max(num(v) for v in e["transfer_success"])
    noise = num(e["noise_success"])
    if num(e["noise_linf_max"]) > num(e["eps"]) + 1e-6:
        raise ValueError("the noise baseline exceeds the transfer attack's L-inf budget")
    floor = max(noise, 1.0 / n)
    conds = [Condition("best transfer / noise success", best / floor, F04_RATIO, unit="ratio", scale="log",
                       half=half(n) / floor, reach=multiple_reach(floor), why="success <= 1",
                       baseline=f"noise success {noise:.3g}"),
             Condition("best transfer success", best, F04_SUCCESS, half=half(n), reach=RATE, why="a rate")]
    return judged(conds, {"best transfer success": best, "noise success": noise, "examples": int(n),
                          "eps": num(e["eps"])}, checks=victim_checks(e, "victim_accuracy"))


FINDINGS: tuple[Finding, ...] = (
    Finding("F01", "extraction",
            "Solving equations from confidence scores copies a model exactly when it is linear in its logits, "
            "and falls clearly behind a trained substitute once a hidden non-linear layer is added.",
            "check: LR recovered exactly (agreement >= 99.9 %, parameter error <= 1e-6 of the largest weight, "
            "<= d+1 queries); judged: an MLP substitute trained on the same 785 pool images agrees >= 10 points "
            "more than the linear solver",
            "01_equation_solving", f01, baselines=("MLP solver agreement",)),
    Finding("F02", "extraction",
            "The more an API reveals per answer, the fewer queries a copy needs: a substitute trained on "
            "probabilities reaches the same agreement with fewer queries than one trained on labels.",
            "at agreement 0.80 and 0.85, queries(label) / queries(probs) >= 1.5 (log-scale interpolation; "
            "never reached = largest budget x 2)",
            "01_agreement_vs_queries", f02),
    Finding("F03", "extraction",
            "Choosing queries well (Jacobian augmentation with its seed images counted, a cross-domain transfer "
            "set, active selection) "
            "beats asking random ones from the attacker's own pool.",
            "best informed strategy reaches L (the pool baseline's agreement at 400 queries, rounded down to "
            "0.01) with <= 1/2 the pool baseline's queries (never reached = largest budget x 2); decided by "
            "design when the grid starts above 1/8 of the baseline's queries at L",
            "01_query_strategies", f03, baselines=("queries pool", "queries noise")),
    Finding("F04", "extraction",
            "A stolen copy is a stepping stone: adversarial examples made white-box on it transfer to the "
            "black-box victim.",
            "best transfer success >= 3 x random sign noise of equal L-inf norm, and >= 30 % (decided by design "
            "when noise success > 1/3)",
            "01_transfer_from_substitute", f04, baselines=("noise success",)),
)

__all__ = ["FINDINGS", "f01", "f02", "f03", "f03_level", "f04"]
