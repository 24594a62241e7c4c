"""Measuring model extraction (notebook 01, F01-F04) and PRADA against it.

The kernels in `threatlab.attacks.extraction` steal a victim through a counting
`BlackBox`; this module lays out the attacker's data, runs the curves each finding
needs, reads queries at matched agreement and runs the PRADA detector on every query
stream, so notebook 01 stays a short sequence of calls.

Data layout for a victim trained on data set D (mnist | fashion_mnist):

* victims: the first `n_train` training images of D;
* the attacker's unlabelled in-distribution pool: the last `n_pool` training images;
* the cross-domain transfer set (Knockoff-style): `n_pool` training images of the other
  data set (Fashion-MNIST for an MNIST victim and vice versa), labelled as cross-domain,
  not as natural images;
* agreement: the first `n_eval` test images of D (labels from a separate oracle);
* PRADA benign clients: calibration streams from the unused middle of D's training
  split, evaluation streams from D's test images after the first `n_eval`.

    >>> task = attacker_data("mnist", n_train=10000, n_pool=10000, n_eval=2000,
    ...                      stream_length=3200, calibration_clients=4, benign_clients=2)
    >>> q = matched_queries(curves, levels=F02_LEVELS)
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import data, metrics, models, validate
from ..attacks import extraction as ex
from ..defenses.prada import PradaResult, prada
from ..errors import ConfigError
from ..oracle import BlackBox

__all__ = ["DATASETS", "F02_LEVELS", "F02_MODES", "F03_BASELINE", "F03_INFORMED", "STRATEGY_LABELS",
           "AttackerData", "attacker_data", "benign_stream", "calibrate_delta", "equation_solving_evidence",
           "matched_queries", "mode_curves", "other_dataset", "prada_rows", "strategy_curves",
           "transfer_evidence", "train_victims"]

#: Data sets a victim may be trained on; Knockoff asks the other one.
DATASETS = ("mnist", "fashion_mnist")
#: F02: agreement levels at which queries(label) / queries(probs) is read.
F02_LEVELS = (0.80, 0.85)
#: Output modes of F02's curves.
F02_MODES = ("probs", "rounded", "label")
#: F03: the honest baseline and the informed strategies (the level is set by rule per
#: run, `comparison_level`).
F03_BASELINE = "pool"
F03_INFORMED = ("jacobian", "knockoff", "active")


def other_dataset(name: str) -> str:
    """The cross-domain transfer set for a victim trained on `name` (the other data set)."""
    validate.choice("dataset", name, DATASETS)
    return DATASETS[1 - DATASETS.index(name)]


@dataclass
class AttackerData:
    """Who holds what (see the module docstring). Tensors on the requested device, except
    the PRADA streams, which stay on the CPU (the detector runs there)."""

    dataset: str
    ood_dataset: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    pool: torch.Tensor
    x_ood: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    calibration_streams: list[torch.Tensor]
    benign_streams: list[torch.Tensor]


def attacker_data(dataset: str, *, n_train: int, n_pool: int, n_eval: int, stream_length: int,
                  calibration_clients: int, benign_clients: int, budgets: Sequence[int] | None = None,
                  device: torch.device | str = "cpu") -> AttackerData:
    """Load the victim's data set and the other one and cut them as the module says.

    budgets (optional): the query budgets of the curves, checked here, before any
    victim trains: increasing, each at most double the last (a Jacobian round at most
    doubles its set), the largest <= n_pool (pool strategies ask distinct images), and
    n_pool >= d + 1 (F01's shared queries are d + 1 distinct pool images).

    Disjointness is checked, not assumed: ConfigError (naming the parameter) when the
    victim's rows, the pool and the calibration streams do not fit in the training split,
    or the evaluation rows and benign streams in the test split.
    """
    ood = other_dataset(dataset)
    for name, v in (("n_train", n_train), ("n_pool", n_pool), ("n_eval", n_eval),
                    ("stream_length", stream_length), ("calibration_clients", calibration_clients),
                    ("benign_clients", benign_clients)):
        validate.positive(name, v, integer=True)
    x_all, y_all = data.load(dataset, "train")
    x_test, y_test = data.load(dataset, "test")
    if budgets is not None:
        b = ex.check_budgets(list(budgets))
        for lo, hi in zip(b, b[1:]):
            if hi > 2 * lo:
                raise ConfigError(f"budgets={list(budgets)!r}: {hi} is more than twice {lo}; a Jacobian "
                                  "augmentation round at most doubles its set")
        if b[-1] > n_pool:
            raise ConfigError(f"budgets={list(budgets)!r} go beyond n_pool={n_pool}: pool strategies ask distinct "
                              "images")
        d1 = int(np.prod(x_all.shape[1:])) + 1
        if n_pool < d1:
            raise ConfigError(f"n_pool={n_pool} must be >= d + 1 = {d1}: F01's solver and substitute share d + 1 "
                              "distinct pool images")
    n_cal = calibration_clients * stream_length
    if n_train + n_cal + n_pool > x_all.shape[0]:
        raise ConfigError(f"n_train={n_train} + calibration_clients x stream_length={n_cal} + n_pool={n_pool} "
                          f"exceeds the {x_all.shape[0]} {dataset} training images; they must be disjoint")
    if n_eval + benign_clients * stream_length > x_test.shape[0]:
        raise ConfigError(f"n_eval={n_eval} + benign_clients x stream_length={benign_clients * stream_length} "
                          f"exceeds the {x_test.shape[0]} {dataset} test images; they must be disjoint")
    x_ood = data.load(ood, "train", n=n_pool)[0]
    if x_ood.shape[0] < n_pool:
        raise ConfigError(f"n_pool={n_pool} exceeds the {x_ood.shape[0]} {ood} images Knockoff can ask")
    cal = [x_all[n_train + i * stream_length:n_train + (i + 1) * stream_length] for i in range(calibration_clients)]
    ben = [x_test[n_eval + i * stream_length:n_eval + (i + 1) * stream_length] for i in range(benign_clients)]
    dev = torch.device(device)
    return AttackerData(dataset, ood, x_all[:n_train], y_all[:n_train], x_all[-n_pool:].to(dev), x_ood.to(dev),
                        x_test[:n_eval].to(dev), y_test[:n_eval].to(dev), cal, ben)


#: Human-readable names of F03's strategies (tables and figures).
STRATEGY_LABELS = {"pool": "random pool (baseline)", "noise": "uniform noise (baseline)",
                   "jacobian": "Jacobian augmentation", "knockoff": "cross-domain transfer set",
                   "active": "active (smallest margin)"}


def train_victims(task: AttackerData, *, victim_arch: str, mlp_hidden: int, seed: int,
                  early_stop: bool | Mapping[str, Any] = True, device: torch.device | str = "cpu",
                  progress: bool = True) -> tuple[dict[str, torch.nn.Module], dict[str, dict[str, Any]]]:
    """The three victims on task.x_train (from the checkpoint cache when possible): a
    multinomial logistic regression "lr" and a one-hidden-layer MLP "mlp" (F01), and
    `victim_arch` "victim" (F02-F04), each trained to convergence with early stopping on
    the loss over 1,000 held-out training images (`models.cached(..., early_stop=...)`,
    rule G1: Adam 1e-3, batch 64, patience 3, 3-15 epochs, the best epoch kept).
    Returns (models in eval mode, cache infos; info["history"]["epochs_run"] and
    ["best_epoch"] say how long each trained)."""
    specs = {"lr": ("mlp", {"hidden": []}), "mlp": ("mlp", {"hidden": [mlp_hidden]}), "victim": (victim_arch, {})}
    out, infos = {}, {}
    for name, (arch, ap) in specs.items():
        m, info = models.cached(arch, task.dataset, task.x_train, task.y_train, train_params={}, seed=seed,
                                arch_params=ap, device=device, progress=progress, early_stop=early_stop)
        out[name], infos[name] = m.eval(), info
    return out, infos


def equation_solving_evidence(lr_victim, mlp_victim, pool: torch.Tensor, x_eval: torch.Tensor,
                              eval_labels: Mapping[str, torch.Tensor], *, sub_kw: Mapping[str, Any],
                              seeds: Sequence[int], device: torch.device | str = "cpu") -> dict[str, Any]:
    """F01's numbers.

    LR victim (the identity check): equation solving from d + 1 uniform queries
    (float64 least squares), its agreement, queries and largest parameter error after
    centring, beside the victim's largest weight. MLP victim (the judged contrast): the
    linear solver and an MLP substitute trained on the probabilities answer **the same
    d + 1 pool images** (`shared_query_contrast`); the solver on d + 1 uniform-noise
    queries is recorded for display ("mlp_noise_solver_agreement").

    seeds: three generator seeds (LR solve, shared pool queries + substitute, noise solve).
    """
    in_shape = tuple(pool.shape[1:])
    d = int(np.prod(in_shape))
    if len(seeds) != 3:
        raise ConfigError(f"seeds={list(seeds)!r} must be three generator seeds (LR solve, shared queries, noise)")
    g = [torch.Generator().manual_seed(int(s)) for s in seeds]
    lr_oracle = BlackBox(lr_victim, mode="probs")
    lr_res = ex.equation_solving(lr_oracle, in_shape=in_shape, device=device, generator=g[0])
    w_true, b_true = ex.center(*ex.linear_parameters(lr_victim, in_shape))
    lr_err = float(torch.maximum((lr_res.weight - w_true).abs().max(), (lr_res.bias - b_true).abs().max()))
    # Shown, not judged: the same solve against a float64 copy of the victim, so the
    # answers carry float64 rather than float32 rounding. It separates the algebra
    # (exact up to the solve's conditioning) from the API's float32 answers.
    lr64 = copy.deepcopy(lr_victim).to("cpu", torch.float64).eval()
    x64 = ex._uniform((d + 1, d), torch.Generator().manual_seed(int(seeds[0])), "cpu").to(torch.float64)
    res64 = ex.solve_equations(x64.view(d + 1, *in_shape), BlackBox(lr64, mode="probs")(x64.view(d + 1, *in_shape)))
    lr_err64 = float(torch.maximum((res64.weight - w_true).abs().max(), (res64.bias - b_true).abs().max()))
    c = shared_query_contrast(mlp_victim, pool, x_eval, eval_labels["mlp"], generator=g[1], noise_generator=g[2],
                              sub_kw=sub_kw)
    return {"lr_agreement": ex.fidelity(lr_res.model, x_eval, eval_labels["lr"])["agreement"],
            "lr_queries": lr_oracle.total, "lr_d": d, "lr_max_param_error": lr_err,
            "lr_max_abs_weight": float(w_true.abs().max()), "lr_max_param_error_float64_answers": lr_err64,
            # Results files round floats to 6 decimals, which would decide a 1e-6 check:
            # the relative errors are also stored as log10, which rounding leaves intact.
            "lr_log10_rel_error": math.log10(max(lr_err, 1e-300) / float(w_true.abs().max())),
            "lr_log10_rel_error_float64_answers": math.log10(max(lr_err64, 1e-300) / float(w_true.abs().max())),
            "mlp_solver_agreement": c.solver_agreement, "mlp_substitute_agreement": c.substitute_agreement,
            "mlp_queries": c.queries, "mlp_substitute_queries": c.queries, "mlp_distinct_queries": c.distinct_queries,
            "mlp_max_charges": c.max_charges, "mlp_shared_queries": True, "mlp_solver_residual": c.solver_residual,
            "mlp_substitute_epochs": c.substitute_epochs, "mlp_noise_solver_agreement": c.noise_solver_agreement,
            "mlp_noise_queries": c.noise_queries}


def mode_curves(victim, pool: torch.Tensor, budgets: Sequence[int], *, eval_x: torch.Tensor,
                eval_labels: torch.Tensor, decimals: int, seed: int, sub_kw: Mapping[str, Any],
                modes: Sequence[str] = F02_MODES, log_modes: Sequence[str] = ("probs",), stacked: bool = True
                ) -> tuple[dict[str, ex.ExtractionCurve], dict[str, BlackBox]]:
    """F02: random pool queries against the victim answering in each output mode.

    A fresh generator with the same `seed` per mode gives every mode the same query
    order, hold-out splits' draws and initialisation, so the modes differ only in what
    the answers say. Oracles of `log_modes` keep their query log (PRADA reads it).
    `stacked`: the modes' substitutes of each budget train as one stacked ensemble
    (`attacks.extraction.pool_queries_many`; same draws and stopping rule, numbers to
    float tolerance); False fits them one after another.
    Returns (curves, oracles) by mode."""
    for mode in modes:
        validate.choice("mode", mode, ex.OUTPUT_MODES)
    oracles = {mode: BlackBox(victim, mode=mode, decimals=decimals, keep_log=mode in log_modes) for mode in modes}
    curves = ex.pool_queries_many(list(oracles.values()), pool, budgets=budgets, eval_x=eval_x,
                                  eval_labels=eval_labels, stacked=stacked,
                                  generators=[torch.Generator().manual_seed(int(seed)) for _ in modes], **sub_kw)
    return dict(zip(modes, curves)), oracles


def strategy_curves(victim, inputs: Mapping[str, torch.Tensor], budgets: Sequence[int], *,
                    eval_x: torch.Tensor, eval_labels: torch.Tensor, seeds: Mapping[str, int],
                    sub_kw: Mapping[str, Any], extra: Mapping[str, Mapping[str, Any]] | None = None
                    ) -> tuple[dict[str, ex.ExtractionCurve], dict[str, BlackBox]]:
    """F03: each strategy (name -> its input pool) against the victim answering
    probabilities, through its own logging oracle. Returns (curves, oracles) by name."""
    curves, oracles = {}, {}
    for name, xs in inputs.items():
        oracle = BlackBox(victim, mode="probs", keep_log=True)
        curves[name] = ex.run_strategy(name, oracle, xs, budgets=budgets, eval_x=eval_x, eval_labels=eval_labels,
                                       generator=torch.Generator().manual_seed(int(seeds[name])),
                                       **sub_kw, **(extra or {}).get(name, {}))
        if curves[name].queries[-1] != oracle.total:
            raise RuntimeError(f"{name}: curve says {curves[name].queries[-1]} queries, oracle counted {oracle.total}")
        oracles[name] = oracle
    return curves, oracles


def matched_queries(curves: Mapping[str, ex.ExtractionCurve], levels: Sequence[float]) -> dict[str, Any]:
    """Queries each curve needs to reach each agreement level (log-scale interpolation;
    never reached = its largest budget x 2), and whether it did.

    Returns {"levels": [...], "queries": {name: [q per level]}, "reached": {name: [bool per level]}}."""
    out: dict[str, Any] = {"levels": [float(v) for v in levels], "queries": {}, "reached": {}}
    for name, c in curves.items():
        got = [c.queries_to_level(float(v)) for v in levels]
        out["queries"][name] = [q for q, _ in got]
        out["reached"][name] = [r for _, r in got]
    return out


def transfer_evidence(substitutes: Sequence[torch.nn.Module], victim, x: torch.Tensor, y: torch.Tensor, *,
                      eps: float, pgd_steps: int, seeds: tuple[int, int]) -> dict[str, Any]:
    """F04: PGD-L-inf (eps) white-box on each substitute, replayed once against the
    victim (label answers), beside random sign noise of the same L-inf norm on the same
    images. Success rates, counts and the L-inf norms actually applied."""
    oracle = BlackBox(victim, mode="label")
    rates, linf = [], []
    for s in substitutes:
        tr = ex.transfer_attack(s, oracle, x, y, eps=eps, attack_params={"steps": pgd_steps},
                                generator=torch.Generator().manual_seed(int(seeds[0])))
        rates.append(tr.success_rate)
        linf.append(float(tr.linf.max()))
    noise = ex.sign_noise_attack(oracle, x, y, eps=eps, generator=torch.Generator().manual_seed(int(seeds[1])))
    return {"transfer_success": rates, "noise_success": noise.success_rate, "n_examples": int(x.shape[0]),
            "eps": float(eps), "transfer_linf_max": linf, "noise_linf_min": float(noise.linf.min()),
            "noise_linf_max": float(noise.linf.max()), "victim_queries": oracle.total}


def benign_stream(victim, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A benign client asking about natural images x in their order, through a logging
    oracle like any other client: (queries, the victim's top-1 labels), on the CPU."""
    oracle = BlackBox(victim, mode="label", keep_log=True)
    dev = next(victim.parameters()).device
    for i in range(0, x.shape[0], 2048):
        oracle(x[i:i + 2048].to(dev))
    return oracle.query_log()


def calibrate_delta(victim, streams: Sequence[torch.Tensor], **prada_kw: Any) -> tuple[float, list[float]]:
    """PRADA's threshold from benign calibration clients (Juuti et al. 2019 set delta
    from benign streams' false positives): the lowest Shapiro-Wilk W any calibration
    client shows at any test, so that none of them is flagged. A fresh benign client is
    then flagged when its own lowest W falls below all of theirs (about 1 in
    len(streams) + 1 for exchangeable clients). Returns (delta, each stream's min W)."""
    if not streams:
        raise ConfigError("calibrate_delta needs at least one benign calibration stream")
    mins = []
    for x in streams:
        res = prada(*benign_stream(victim, x), delta=0.5, **prada_kw)
        if res.shapiro_w.size == 0:
            raise ConfigError(f"a calibration stream of {x.shape[0]} queries is too short for one PRADA test")
        mins.append(float(res.shapiro_w.min()))
    return min(mins), mins


def prada_rows(streams: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, delta: float,
               **prada_kw: Any) -> tuple[list[dict[str, Any]], dict[str, PradaResult]]:
    """PRADA on each client stream (name -> (queries, victim top-1 labels)): one table
    row per stream with whether it was flagged, queries until the first flag, the stream's
    length and its lowest W."""
    rows, results = [], {}
    for name, (x, labels) in streams.items():
        r = prada(x, labels, delta=delta, **prada_kw)
        results[name] = r
        rows.append({"stream": name, "queries": r.queries, "detected": r.detected,
                     "queries_to_detection": r.queries_to_detection,
                     "min_w": float(r.shapiro_w.min()) if r.shapiro_w.size else None})
    return rows, results


# --------------------------------------------- F01: one set of queries, two learners


@dataclass
class SharedQueryContrast:
    """F01: the linear solver and a substitute fed the same pool queries.

    solver_agreement, substitute_agreement: agreement with the victim's labels on the
        evaluation set (the judged pair).
    queries: what the one shared oracle counted (d + 1); distinct_queries: ids it
        charged; max_charges: the most any id was charged (1: nothing asked twice).
    d: input dimension. solver_residual: RMS residual of the centred log-probabilities
        (0 up to rounding for a victim linear in its logits, when the pool spans enough).
    substitute_epochs: epochs the substitute's fit ran.
    noise_solver_agreement, noise_queries: the solver on d + 1 uniform-noise queries
        through its own oracle (shown, not judged).
    solver, substitute: the two fitted copies (eval mode).
    """

    solver_agreement: float
    substitute_agreement: float
    queries: int
    distinct_queries: int
    max_charges: int
    d: int
    solver_residual: float
    substitute_epochs: int
    noise_solver_agreement: float
    noise_queries: int
    solver: torch.nn.Module = field(repr=False)
    substitute: torch.nn.Module = field(repr=False)

    def evidence(self) -> dict[str, Any]:
        """The JSON-ready numbers (everything but the models)."""
        return {k: getattr(self, k) for k in ("solver_agreement", "substitute_agreement", "queries",
                                              "distinct_queries", "max_charges", "d", "solver_residual",
                                              "substitute_epochs", "noise_solver_agreement", "noise_queries")}


def shared_query_contrast(victim: torch.nn.Module, pool: torch.Tensor, x_eval: torch.Tensor,
                          eval_labels: torch.Tensor, *, generator: torch.Generator | None,
                          noise_generator: torch.Generator | None = None,
                          sub_kw: Mapping[str, Any] | None = None) -> SharedQueryContrast:
    """F01: against one victim, equation solving (Tramèr et al. 2016, arXiv
    1609.02943: least squares on centred log-probabilities) and an MLP substitute trained
    on the probabilities (Papernot et al. 2017, arXiv 1602.02697) learn from **the same
    d + 1 pool images**, so their agreements differ only by the model class each fits.

    One `BlackBox` (mode "probs") answers d + 1 random distinct pool rows in one call
    (ids 0..d); both learners read that single answer tensor (`ex.solve_equations`,
    `ex.fit_on_answers`). One oracle rather than two counters with equal totals: equal
    totals would show equal numbers of queries, not the same images; one counter that
    charged every id exactly once (checked: RuntimeError otherwise) and both learners
    fed from its one answer shows that they saw the identical d + 1 answers and that
    nothing was asked twice. The uniform-noise solver (d + 1 noise queries, its own
    oracle, `noise_generator`) is computed for display only.

    Args:
        victim: the model (any classifier; F01 uses the LR and the one-hidden-layer MLP).
        pool: the attacker's unlabelled in-distribution images [m, ...] in [0, 1],
            m >= d + 1 with d = prod(pool.shape[1:]).
        x_eval, eval_labels: evaluation images and the victim's labels on them
            (`ex.victim_labels` with a separate oracle).
        generator: draws the d + 1 pool rows, then the substitute's initialisation,
            hold-out split and batches.
        noise_generator: draws the uniform-noise queries (default a fresh seed-0 one).
        sub_kw: `ex.fit_on_answers` options (arch, arch_params, max_epochs, patience,
            val_fraction, min_steps, batch_size, lr).
    Returns a `SharedQueryContrast`.

    Example:
        >>> c = shared_query_contrast(mlp_victim, task.pool, task.x_eval, vy["mlp"],
        ...                           generator=torch.Generator().manual_seed(seed))
        >>> c.substitute_agreement - c.solver_agreement, c.queries       # ..., 785
    """
    from .. import runtime

    ex._check_x("pool", pool)
    ex._check_x("x_eval", x_eval)
    if not torch.is_tensor(eval_labels) or eval_labels.shape != (x_eval.shape[0],) \
            or eval_labels.is_floating_point():
        raise ConfigError(f"eval_labels must be a Long tensor of shape ({x_eval.shape[0]},): the victim's "
                          "labels on x_eval")
    in_shape = tuple(pool.shape[1:])
    d = int(np.prod(in_shape))
    if pool.shape[0] < d + 1:
        raise ConfigError(f"pool has {pool.shape[0]} images; the shared queries are d + 1 = {d + 1} distinct "
                          "pool rows")
    kw = dict(sub_kw or {})
    oracle = BlackBox(victim, mode="probs")
    rows = runtime.randperm(pool.shape[0], generator, device=pool.device)[:d + 1]
    xq = pool[rows]
    answers = oracle(xq, ids=torch.arange(d + 1))
    solver = ex.solve_equations(xq, answers)
    sub = ex.fit_on_answers(xq, answers, generator=generator, **kw)
    charged = oracle.count()
    if oracle.total != d + 1 or charged.shape[0] != d + 1 or int(charged.max()) != 1:
        raise RuntimeError(f"the shared oracle counted {oracle.total} queries over {charged.shape[0]} ids; "
                           f"expected each of the d + 1 = {d + 1} pool queries once")
    noise_oracle = BlackBox(victim, mode="probs")
    noise = ex.equation_solving(noise_oracle, in_shape=in_shape, device=pool.device,
                                generator=noise_generator if noise_generator is not None
                                else torch.Generator().manual_seed(0))
    agree = lambda m: ex.fidelity(m, x_eval, eval_labels)["agreement"]  # noqa: E731
    return SharedQueryContrast(agree(solver.model), agree(sub.model), oracle.total, int((charged > 0).sum()),
                               int(charged.max()), d, solver.residual, sub.epochs, agree(noise.model),
                               noise_oracle.total, solver.model, sub.model)


# ------------------------------------------------- F03: the comparison level by rule

#: F03: the query budgets of every strategy's curve.
F03_BUDGETS = (25, 50, 100, 200, 400, 800, 1600, 3200)
#: F03: the comparison level is the pool baseline's agreement at this many queries.
F03_LEVEL_AT = 400


def _curve_points(name: str, curve: Any) -> tuple[list[float], list[float]]:
    if isinstance(curve, ex.ExtractionCurve) or (hasattr(curve, "queries") and hasattr(curve, "agreement")):
        q, a = curve.queries, curve.agreement
    elif isinstance(curve, (tuple, list)) and len(curve) == 2:
        q, a = curve
    else:
        raise ConfigError(f"curve {name!r} must be an ExtractionCurve or a (queries, agreement) pair")
    if any(v is None for v in a):
        raise ConfigError(f"curve {name!r} has no agreement at some budget (give eval_x and eval_labels)")
    return [float(v) for v in q], [float(v) for v in a]


def comparison_level(queries: Sequence[float], agreement: Sequence[float], *, at: float = F03_LEVEL_AT) -> float:
    """F03's level L: the curve's agreement at `at` queries, interpolated
    linearly in log(queries) between the measured budgets, rounded down to 0.01.

    Set by rule from the pool baseline alone, before any informed strategy is read, so
    the baseline needs about `at` queries by construction and an informed strategy
    starting at 1/16 of that can show a saving. Rounding down (never to nearest) keeps L
    at or below what the baseline reached at `at`, so the baseline's queries at L are
    <= `at`. A 1e-9 guard keeps an agreement such as 0.29 (= 29/100, stored as
    0.28999...) at 0.29.

        >>> comparison_level([200, 400, 800], [0.70, 0.834, 0.90])
        0.83
    """
    q = np.asarray(queries, dtype=np.float64)
    a = np.asarray(agreement, dtype=np.float64)
    if q.ndim != 1 or q.size == 0 or q.shape != a.shape:
        raise ConfigError(f"queries ({q.size}) and agreement ({a.size}) must be non-empty and of equal length")
    if not (np.isfinite(q).all() and np.isfinite(a).all()):
        raise ConfigError("queries and agreement must be finite numbers (no NaN or inf)")
    if (q <= 0).any() or (np.diff(q) <= 0).any():
        raise ConfigError(f"queries={q.tolist()} must be positive and strictly increasing")
    if (a < 0).any() or (a > 1).any():
        raise ConfigError(f"agreement={a.tolist()} must lie in [0, 1]")
    validate.positive("at", at)
    if not q[0] <= at <= q[-1]:
        raise ConfigError(f"at={at} lies outside the curve's budgets {q[0]:g}..{q[-1]:g}: extrapolating is not "
                          "interpolating")
    v = float(np.interp(np.log(at), np.log(q), a))
    return math.floor(v * 100 + 1e-9) / 100


@dataclass
class ComparisonQueries:
    """F03 at its rule-set level.

    level: L (`comparison_level` of the baseline); baseline: its name.
    queries: strategy -> queries to reach L (log-interpolated; never reached = its
        largest budget x not_reached_factor), via `metrics.queries_to_reach`.
    reached: strategy -> whether it reached L. first_budget: strategy -> the first
        query count of its curve (G0: the informed grids must start <= 1/8 of the
        baseline's queries at L). best_informed: the non-baseline strategy with the
        fewest queries (ties: the first given); ratio: its queries / the baseline's.
    """

    level: float
    baseline: str
    queries: dict[str, float]
    reached: dict[str, bool]
    first_budget: dict[str, float]
    best_informed: str
    ratio: float


def comparison_queries(curves: Mapping[str, Any], *, baseline: str = F03_BASELINE, at: float = F03_LEVEL_AT,
                       not_reached_factor: float = 2.0) -> ComparisonQueries:
    """F03: L from the baseline's curve (`comparison_level`), then every
    curve's queries to reach L (`metrics.queries_to_reach`, never reached = largest
    budget x `not_reached_factor`).

    Args:
        curves: strategy -> `ExtractionCurve` or (queries, agreement) pair; must hold
            `baseline` and at least one other strategy. Queries are the oracle's counts
            (Jacobian's seed images included: its round 0 asks them).
        baseline: the pool baseline's name (default "pool"); at: queries at which L is
            read (default 400).
    Returns a `ComparisonQueries`.

        >>> comparison_queries({"pool": ([100, 400, 1600], [0.6, 0.8, 0.9]),
        ...                     "active": ([100, 400, 1600], [0.8, 0.9, 0.95])}).ratio
        0.25
    """
    if not isinstance(curves, Mapping) or baseline not in curves or len(curves) < 2:
        raise ConfigError(f"curves must map the baseline {baseline!r} and at least one informed strategy to "
                          f"their curves; got {sorted(curves) if isinstance(curves, Mapping) else type(curves).__name__}")
    pts = {name: _curve_points(name, c) for name, c in curves.items()}
    level = comparison_level(*pts[baseline], at=at)
    got = {name: metrics.queries_to_reach(q, a, level, not_reached_factor=not_reached_factor)
           for name, (q, a) in pts.items()}
    queries = {k: v[0] for k, v in got.items()}
    informed = [k for k in curves if k != baseline]
    best = min(informed, key=lambda k: (queries[k], informed.index(k)))
    return ComparisonQueries(level, baseline, queries, {k: v[1] for k, v in got.items()},
                             {k: p[0][0] for k, p in pts.items()}, best, queries[best] / queries[baseline])


__all__ += ["SharedQueryContrast", "shared_query_contrast", "F03_BUDGETS", "F03_LEVEL_AT", "comparison_level",
            "ComparisonQueries", "comparison_queries"]
