"""The measuring protocol: one case = one attack, one model, one batch, several libraries.

Every implementation of a case is a callable `run(x, y, seed) -> Outcome`. The harness seeds
every random source before each call, synchronises the device around the clock, runs a
warm-up call, then `repeats` timed calls interleaved across implementations (so a
burst of load on a shared machine hits all of them alike), and re-evaluates the
returned adversarials with the same model: no library's own success flag is read.

A case's lower bound is `grad_evals` x the measured time of one forward + backward
pass of the model on the same batch, measured in the same rounds as the attacks, on
the batch as the attack's iterations see it: the clean images moved to a random point
of the case's ball (`bound_batch`). On this CPU one forward of the CNN costs 8-10 %
more on perturbed images than on clean MNIST, whose blank backgrounds make the
ReLU / max-pool work cheaper; a bound timed on clean images is beneath what any
library can reach. The clean-image bound is kept in results.json beside it.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from threatlab import metrics, runtime
from threatlab.attacks import layout
from threatlab.attacks.norms import L2Ball, LinfBall


@dataclass
class Outcome:
    """What one implementation returned, in torch on the batch's device.

    x_adv: adversarials [n, ...] (evasion). queries: per-example model queries
    (black-box attacks; taken from threatlab's oracle counter or the peer's own count).
    total_queries: every model row the attack forwarded (threatlab: the oracle's
    total; peers: a counting wrapper around the model), so "queries per example" =
    total_queries / n is measured the same way for every library.
    scores/members: membership-inference scores and ground truth (membership cases).
    forward_rows: white-box attacks: rows every library's model forwarded during the
    call (one shared counting wrapper), i.e. forward passes x examples done.
    """

    x_adv: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    total_queries: int | None = None
    scores: torch.Tensor | None = None
    members: torch.Tensor | None = None
    forward_rows: int | None = None  # white-box: model rows forwarded during the call


@dataclass
class Case:
    """One row group of the table.

    name: the table label. threat: "linf" / "l2" (budgeted), "min_l2" (minimal
    perturbation, no budget), or "membership". eps: the budget (None when unbounded).
    grad_evals: forward+backward passes an iterative attack needs at least (None:
    no bound reported). settings: the shared hyper-parameters, as one dict, written
    to results.md. impls: library -> (argument string for results.md, factory); a
    factory takes the context dict and returns `run(x, y, seed) -> Outcome`, or raises
    `Unavailable` (library not installed or attack missing from it).
    evaluate: Outcome -> metrics dict; default `evaluate_evasion`.
    prepare: ctx -> ctx for a case with its own model and data (membership inference:
    a target and shadows trained on a pool), called once, outside the clock.
    bound_at_clean: time the bound's pass on the clean batch (an attack whose only
    gradient is at x, FGSM) instead of a perturbed one.
    """

    name: str
    threat: str
    settings: dict[str, Any]
    impls: dict[str, tuple[str, Callable[[dict[str, Any]], Callable[..., Outcome]]]]
    eps: float | None = None
    grad_evals: int | None = None
    evaluate: Callable[..., dict[str, Any]] | None = None
    note: str = ""
    max_n: int | None = None  # cap on examples for every library of this case (slow peers)
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    bound_at_clean: bool = False  # the attack's gradients are taken at x itself (FGSM)


class Unavailable(Exception):
    """A peer library (or one of its attacks) is not installed here."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_all(seed: int) -> None:
    """Peers draw from the global RNGs (torch, NumPy, random): reset them all per call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def fwd_bwd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
            chunked: bool = False) -> Callable[[], None]:
    """One forward + backward pass w.r.t. the input over the batch: the unit of every
    gradient attack. `chunked`: in threatlab's row chunks (`runtime.row_slices`);
    otherwise all rows at once."""
    parts = [(x[s], y[s]) for s in runtime.row_slices(len(x), x.device)] if chunked else [(x, y)]

    def step() -> None:
        for xc, yc in parts:
            xa = xc.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(xa), yc, reduction="sum")
                torch.autograd.grad(loss, xa)
    return step


def bound_batch(x: torch.Tensor, threat: str, eps: float | None, seed: int) -> torch.Tensor:
    """The batch as an iterative attack evaluates it: a uniform random point of the
    case's ball (L-inf or L2 of radius eps), clipped to [0, 1]. Minimal-perturbation
    attacks have no ball; they end near the L2 distances of the PGD-L2 case, so the
    L2 ball of radius MIN_L2_RADIUS stands in for theirs."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    ball = LinfBall(eps) if threat == "linf" else L2Ball(eps if threat == "l2" else MIN_L2_RADIUS)
    return ball.random_init(x, gen)


MIN_L2_RADIUS = 1.5


def merge_rounds(per_round: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the metrics of every timed call: numbers are averaged over the
    rounds (NaN rounds, e.g. no fooled example to take a median over, are skipped);
    `valid` is "yes" only if every round's output was valid; the per-round robust
    accuracy / AUC is kept to show the spread over seeds."""
    out: dict[str, Any] = {}
    for key in per_round[0]:
        vals = [m[key] for m in per_round]
        if key == "valid":
            bad = [v for v in vals if v != "yes"]
            out[key] = bad[0] if bad else "yes"
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            finite = [float(v) for v in vals if not math.isnan(float(v))]
            out[key] = statistics.fmean(finite) if finite else float("nan")
        else:
            out[key] = vals[0]
    for key in ("robust_acc", "auc"):
        if key in per_round[0]:
            out[f"{key}_per_round"] = [m[key] for m in per_round]
    return out


def spread(ts: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "n": len(ts)}


def identical_share(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of examples whose adversarial is the same image in every pixel in both
    outputs (compared as float32, the models' input type): how often two libraries
    given the same seed return the very same adversarial, not just one as good."""
    a = a.detach().to("cpu", torch.float32).flatten(1)
    b = b.detach().to("cpu", torch.float32).reshape(a.shape)
    return float((a == b).all(1).float().mean())


def evaluate_evasion(model, x, y, out: Outcome, *, threat: str, eps: float | None) -> dict[str, Any]:
    """Robust accuracy from the model's own predictions on the returned adversarials,
    median L2 / L-inf over the successful ones, and whether the output respects the
    threat model (in [0, 1] and inside the eps-ball, with float32 slack)."""
    x_adv = out.x_adv.to(x.device, x.dtype)
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    fooled = (pred != y).cpu()
    norms = metrics.lp_norms(x_adv - x)
    res: dict[str, Any] = {
        "robust_acc": float((~fooled).float().mean()),
        "median_l2": metrics.median(norms["l2"][fooled]),
        "median_linf": metrics.median(norms["linf"][fooled]),
    }
    problems = []
    if float(x_adv.min()) < -1e-6 or float(x_adv.max()) > 1 + 1e-6:
        problems.append(f"outside [0,1] ({float(x_adv.min()):.3g}..{float(x_adv.max()):.3g})")
    if eps is not None and threat in ("linf", "l2"):
        worst = float(norms[threat].max())
        if worst > eps * (1 + 1e-4) + 1e-6:
            problems.append(f"max {threat} {worst:.4g} > eps {eps}")
    res["valid"] = "; ".join(problems) or "yes"
    if threat == "min_l2":
        # Diagnostics for disagreements between minimal-perturbation attacks: does the
        # attack ever move a pixel that starts at the box edge (0 or 1; C&W's tanh
        # parametrisation can freeze them), and how close to the decision boundary are
        # the examples it failed on (logit of y minus the best other; ~0 = stalled there)?
        edge = (x == 0) | (x == 1)
        res["edge_pixels_moved"] = float(((x_adv - x).abs() > 1e-6)[edge].float().mean()) if edge.any() else float("nan")
        with torch.no_grad():
            z = model(x_adv)
        margin = z.gather(1, y[:, None]).squeeze(1) - z.scatter(1, y[:, None], -math.inf).amax(1)
        res["unfooled_median_margin"] = metrics.median(margin.cpu()[~fooled])
        # foolbox's C&W starts its "best adversarial" buffer at zeros, so an example it
        # never fooled comes back as a blank image (misclassified, L2 = ||x||) rather
        # than as x: count those, and the robust accuracy that counts them as failures.
        blank = ((x_adv.flatten(1).abs().amax(1) == 0) & (x.flatten(1).abs().amax(1) > 0)).cpu()
        res["blank_outputs"] = int(blank.sum())
        res["robust_acc_blank_as_failed"] = float((~fooled | blank).float().mean())
    if out.queries is not None:
        q = out.queries.detach().to(torch.float64).cpu()
        res["median_queries"] = float(q.median())
    if out.total_queries is not None:
        res["queries_per_example"] = out.total_queries / len(x)
    if out.forward_rows is not None:
        res["forward_rows_per_example"] = out.forward_rows / len(x)
    return res


def evaluate_membership(model, x, y, out: Outcome) -> dict[str, Any]:
    """AUC and threshold-optimal balanced accuracy of the membership scores, computed
    by threatlab.metrics for every library (higher score = more likely a member)."""
    s = out.scores.detach().to(torch.float64).cpu().reshape(-1)
    m = out.members.detach().cpu().reshape(-1).bool()
    res = {"auc": metrics.auc(s, m), "balanced_acc": metrics.balanced_accuracy(s, m),
           "tpr_at_1%": metrics.tpr_at_fpr(s, m, 0.01), "n_members": int(m.sum()),
           "n_nonmembers": int((~m).sum())}
    if out.total_queries is not None:
        res["queries_per_example"] = out.total_queries / len(s)
    return res


def run_case(case: Case, ctx: dict[str, Any], *, repeats: int, seed: int,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Warm up and time every available implementation of `case`; evaluate each once."""
    if case.prepare is not None:
        ctx = case.prepare(dict(ctx))
    if case.max_n is not None and len(ctx["x"]) > case.max_n:
        # Same (smaller) batch for every library of this case: the first max_n examples.
        ctx = {**ctx, "x": ctx["x"][:case.max_n], "y": ctx["y"][:case.max_n]}
    model, x, y, device = ctx["model"], ctx["x"], ctx["y"], ctx["device"]
    runners: dict[str, Callable[..., Outcome]] = {}
    skipped: dict[str, str] = {}
    for lib, (_, factory) in case.impls.items():
        try:
            runners[lib] = factory(ctx)
        except Unavailable as e:
            skipped[lib] = str(e)
    evaluate = case.evaluate or (lambda m, xx, yy, o: evaluate_evasion(m, xx, yy, o, threat=case.threat,
                                                                        eps=case.eps))
    metrics_per_round: dict[str, list[dict[str, Any]]] = {lib: [] for lib in runners}
    times: dict[str, list[float]] = {lib: [] for lib in runners}
    # The bound: the faster of one pass over the whole batch and one in threatlab's row
    # chunks (on a CPU chunks are faster once n > 128), on the perturbed batch;
    # the clean batch's pass is kept for reference.
    x_bound = x if case.bound_at_clean else bound_batch(x, case.threat, case.eps, seed)
    # The same pass through threatlab's channels-last view (attacks.layout), the path its
    # white-box kernels take: the bound of today's layout beside the NCHW one.
    model_cl = layout.channels_last(model)
    units = {"whole": fwd_bwd(model, x_bound, y), "clean whole": fwd_bwd(model, x, y),
             "channels-last whole": fwd_bwd(model_cl, x_bound, y)}
    if ctx.get("row_chunk") and len(x) > ctx["row_chunk"]:
        units["chunked"] = fwd_bwd(model, x_bound, y, chunked=True)
        units["clean chunked"] = fwd_bwd(model, x, y, chunked=True)
        units["channels-last chunked"] = fwd_bwd(model_cl, x_bound, y, chunked=True)
    unit: dict[str, list[float]] = {k: [] for k in units}

    def call(lib: str, call_seed: int) -> tuple[Outcome, float]:
        seed_all(call_seed)
        return timed(lambda: runners[lib](x, y, call_seed), device)

    for lib in runners:  # warm-up: allocator, lazy imports, kernel selection
        t = call(lib, seed)[1]
        log(f"  {case.name:24s} {lib:12s} warm-up {t:8.3f} s")
    for r in range(repeats):
        # Round r draws every random choice from seed + r, the same for every library, so
        # an attack with a random start is compared over `repeats` draws, not one.
        # Rotate the order each round: no implementation always runs right after another.
        libs = list(runners)
        libs = libs[r % len(libs):] + libs[:r % len(libs)] if libs else libs
        outs: dict[str, Outcome] = {}
        for lib in libs:
            out, t = call(lib, seed + r)
            times[lib].append(t)
            metrics_per_round[lib].append(evaluate(model, x, y, out))  # outside the clock
            outs[lib] = out
        if "threatlab" in outs and outs["threatlab"].x_adv is not None:
            for lib, out in outs.items():
                if lib != "threatlab" and out.x_adv is not None:
                    metrics_per_round[lib][-1]["identical_to_threatlab"] = identical_share(
                        outs["threatlab"].x_adv, out.x_adv)
        if case.grad_evals:
            for k, fn in units.items():
                unit[k].extend(timed(fn, device)[1] for _ in range(5))

    rows = {}
    for lib in runners:
        rows[lib] = {"time": spread(times[lib]), **merge_rounds(metrics_per_round[lib])}
    bound = None
    if case.grad_evals and unit["whole"]:
        med = {k: statistics.median(v) for k, v in unit.items()}
        how = min(("whole", "chunked") if "chunked" in med else ("whole",), key=med.get)
        fb, fb_clean = med[how], med[f"clean {how}"]
        bound = {"fwd_bwd_s": fb, "grad_evals": case.grad_evals, "bound_s": fb * case.grad_evals,
                 "batch": ("the clean batch" if case.bound_at_clean else
                           "random point of the case's ball" if case.threat in ("linf", "l2")
                           else f"random point of the L2 ball of radius {MIN_L2_RADIUS}")
                 + (f", in chunks of at most {ctx['row_chunk']} rows" if how == "chunked" else ", all rows at once"),
                 "fwd_bwd_medians_s": med,
                 "fwd_bwd_clean_s": fb_clean, "bound_clean_s": fb_clean * case.grad_evals}
        how_cl = min([k for k in ("channels-last whole", "channels-last chunked") if k in med], key=med.get)
        bound["fwd_bwd_channels_last_s"] = med[how_cl]
        bound["bound_channels_last_s"] = med[how_cl] * case.grad_evals
        for lib in rows:
            rows[lib]["ratio_to_bound"] = rows[lib]["time"]["median"] / bound["bound_s"]
            rows[lib]["ratio_to_clean_bound"] = rows[lib]["time"]["median"] / bound["bound_clean_s"]
            rows[lib]["ratio_to_channels_last_bound"] = rows[lib]["time"]["median"] / bound["bound_channels_last_s"]
    peers = [lib for lib in rows if lib != "threatlab"]
    if "threatlab" in rows and peers:
        fastest = min(peers, key=lambda lib: rows[lib]["time"]["median"])
        rows["threatlab"]["fastest_peer"] = fastest
        rows["threatlab"]["ratio_to_fastest_peer"] = (rows["threatlab"]["time"]["median"]
                                                      / rows[fastest]["time"]["median"])
        for lib in peers:
            a, b = rows["threatlab"].get("robust_acc"), rows[lib].get("robust_acc")
            if a is not None and b is not None and not math.isnan(a) and not math.isnan(b):
                rows[lib]["delta_robust_acc_pts"] = 100 * (a - b)
            a, b = rows["threatlab"].get("auc"), rows[lib].get("auc")
            if a is not None and b is not None:
                rows[lib]["delta_auc_pts"] = 100 * (a - b)
    for lib, row in rows.items():
        what = (f"AUC {row['auc']:.3f}  balanced acc {row['balanced_acc']:.3f}" if "auc" in row else
                f"robust acc {row.get('robust_acc', float('nan')):.3f}  valid {row.get('valid', '-')}")
        log(f"  {case.name:24s} {lib:12s} median {row['time']['median']:8.3f} s  {what}")
    return {"case": case.name, "threat": case.threat, "eps": case.eps, "n": len(x), "settings": case.settings,
            "args": {lib: case.impls[lib][0] for lib in case.impls}, "rows": rows, "bound": bound,
            "skipped": skipped, "note": case.note}
