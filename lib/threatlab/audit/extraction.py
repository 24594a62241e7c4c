"""Audit section "extraction": how many queries a substitute needs to copy the model.

Notebook 01's F02 protocol (`protocols.extraction.mode_curves`): the attacker owns
unlabelled images of the task (test records the model did not train on), asks them in
random order through a `BlackBox` that answers full probabilities or only the label,
and fits a fresh substitute (an MLP, as in F02/F03) at every budget of the grid. The
answer is the number of queries at which the substitute first agrees with the model on
90 % of held-out test records (`ExtractionCurve.queries_to_level`: log-scale
interpolation between budgets), or "not reached within the grid". Tramèr et al. (2016),
"Stealing Machine Learning Models via Prediction APIs", arXiv 1609.02943; Papernot et
al. (2017), arXiv 1602.02697; survey: model extraction, He et al. arXiv 1911.12562.
"""
from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from ..attacks import extraction as ex
from ..oracle import BlackBox
from ..protocols.extraction import mode_curves
from ..runtime import progress_disabled

__all__ = ["LEVEL", "MODES", "THREAT_MODEL", "run_extraction"]

THREAT_MODEL = ("Black-box attacker of a prediction API who owns unlabelled in-distribution images, "
                "pays per query, and trains a copy that agrees with the model's labels.")
#: Agreement the copy must reach.
LEVEL = 0.90
#: The two APIs compared (F02's extremes).
MODES = ("probs", "label")


def run_extraction(model: torch.nn.Module, pool: torch.Tensor, x_eval: torch.Tensor, *, budgets: list[int],
                   num_classes: int, seed: int, substitute_hidden: int, max_epochs: int, patience: int,
                   min_steps: int) -> dict[str, Any]:
    """Agreement curves under both APIs and the queries to reach `LEVEL`.

    pool: the attacker's images (at least budgets[-1] rows); x_eval: held-out records on
    which agreement is measured, labelled by a separate evaluation oracle so the
    attacker's counter holds only the attacker's queries."""
    evaluator = BlackBox(model, mode="label")
    eval_labels = ex.victim_labels(evaluator, x_eval)
    sub_kw = {"arch": "mlp", "arch_params": {"hidden": [substitute_hidden]}, "max_epochs": max_epochs,
              "patience": patience, "min_steps": min_steps, "num_classes": num_classes}
    curves, oracles = {}, {}
    # One mode at a time for the progress bar; mode_curves seeds each mode afresh, so
    # this is one call with both modes and stacked=False (each substitute fitted alone).
    for mode in tqdm(MODES, desc="audit extraction: APIs", disable=progress_disabled(), leave=False):
        c, o = mode_curves(model, pool, budgets, eval_x=x_eval, eval_labels=eval_labels, decimals=2, seed=seed,
                           sub_kw=sub_kw, modes=(mode,), log_modes=())
        curves.update(c)
        oracles.update(o)
    out: dict[str, Any] = {"threat_model": THREAT_MODEL, "level": LEVEL, "budgets": list(budgets),
                           "n_eval": int(x_eval.shape[0]), "substitute": f"MLP, hidden {substitute_hidden}",
                           "modes": {}}
    for mode, c in curves.items():
        q, reached = c.queries_to_level(LEVEL)
        out["modes"][mode] = {"agreement": [float(a) for a in c.agreement], "queries": list(c.queries),
                              "queries_to_level": round(q, 1) if reached else None, "reached": bool(reached),
                              "answer": (f"{q:,.0f} queries" if reached else
                                         f"not reached within the grid (best {max(c.agreement):.1%} at "
                                         f"{c.queries[-1]:,} queries)")}
    out["oracle_queries"] = {**{k: int(o.total) for k, o in oracles.items()}, "evaluation": int(evaluator.total)}
    return out
