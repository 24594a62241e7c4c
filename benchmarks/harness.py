"""The measuring protocol: one case = one attack, one model, one batch, several libraries.

Every implementation of a case is a callable `run(x, y) -> Outcome`. The harness seeds
every random source before each call, synchronises the device around the clock, runs a
warm-up call, then `repeats` timed calls interleaved across implementations (so a
burst of load on a shared machine hits all of them alike), and re-evaluates the
returned adversarials with the same model: no library's own success flag is read.

A case's lower bound is `grad_evals` x the measured time of one forward + backward
pass of the model on the same batch, measured in the same rounds as the attacks.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from threatlab import metrics


@dataclass
class Outcome:
    """What one implementation returned, in torch on the batch's device.

    x_adv: adversarials [n, ...] (evasion). queries: per-example model queries
    (black-box attacks; taken from threatlab's oracle counter or the peer's own count).
    total_queries: every model row the attack forwarded (threatlab: the oracle's
    total; peers: a counting wrapper around the model), so "queries per example" =
    total_queries / n is measured the same way for every library.
    scores/members: membership-inference scores and ground truth (membership cases).
    """

    x_adv: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    total_queries: int | None = None
    scores: torch.Tensor | None = None
    members: torch.Tensor | None = None


@dataclass
class Case:
    """One row group of the table.

    name: the table label. threat: "linf" / "l2" (budgeted), "min_l2" (minimal
    perturbation, no budget), or "membership". eps: the budget (None when unbounded).
    grad_evals: forward+backward passes an iterative attack needs at least (None:
    no bound reported). settings: the shared hyper-parameters, as one dict, written
    to results.md. impls: library -> (argument string for results.md, factory); a
    factory takes the context dict and returns `run(x, y) -> Outcome`, or raises
    `Unavailable` (library not installed or attack missing from it).
    evaluate: Outcome -> metrics dict; default `evaluate_evasion`.
    prepare: ctx -> ctx for a case with its own model and data (membership inference:
    a target and shadows trained on a pool), called once, outside the clock.
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


def fwd_bwd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One forward + backward pass w.r.t. the input: the unit of every gradient attack."""
    def step() -> torch.Tensor:
        xa = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xa), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xa)
        return g
    return step


def spread(ts: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "n": len(ts)}


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
    outcomes: dict[str, Outcome] = {}
    times: dict[str, list[float]] = {lib: [] for lib in runners}
    unit: list[float] = []
    unit_fn = fwd_bwd(model, x, y)

    def call(lib: str) -> float:
        seed_all(seed)
        out, t = timed(lambda: runners[lib](x, y), device)
        outcomes[lib] = out
        return t

    for lib in runners:  # warm-up: allocator, lazy imports, kernel selection
        t = call(lib)
        log(f"  {case.name:24s} {lib:12s} warm-up {t:8.3f} s")
    for r in range(repeats):
        # Rotate the order each round: no implementation always runs right after another.
        libs = list(runners)
        libs = libs[r % len(libs):] + libs[:r % len(libs)] if libs else libs
        for lib in libs:
            times[lib].append(call(lib))
        if case.grad_evals:
            unit.extend(timed(unit_fn, device)[1] for _ in range(5))

    evaluate = case.evaluate or (lambda m, xx, yy, o: evaluate_evasion(m, xx, yy, o, threat=case.threat,
                                                                        eps=case.eps))
    rows = {}
    for lib in runners:
        rows[lib] = {"time": spread(times[lib]), **evaluate(model, x, y, outcomes[lib])}
    bound = None
    if case.grad_evals and unit:
        fb = statistics.median(unit)
        bound = {"fwd_bwd_s": fb, "grad_evals": case.grad_evals, "bound_s": fb * case.grad_evals}
        for lib in rows:
            rows[lib]["ratio_to_bound"] = rows[lib]["time"]["median"] / bound["bound_s"]
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
