"""Evaluation protocols the notebooks share: eps sweeps, norm summaries, timing.

Kernels compute one attack on one batch; these functions run the protocol around them
(which examples count, which norms, how time is read) so every notebook measures the
same way. They return plain dicts ready for `results.Recorder`.

Notebook 04 runs one function per section: `g1_targets` and `augmented_target` (the
models), `norm_robustness` (F13), `success_vs_eps` and `minimal_perturbation_suite`
(F14), `blackbox_suite` (F15), `transfer_matrix` and `sign_noise_success` (F16),
`eps_by_rule`, `stable_examples` and `eot_vs_plain_pgd` (F17), `defense_accuracies`
and `training_cost` (F18); `evidence_f13` ... `evidence_f18` then build what each
finding's judge (`report.judges.adversarial`) reads.
"""
from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import attacks, metrics, validate
from ..errors import ConfigError
from ..runtime import progress_disabled


class PassCounter(torch.nn.Module):
    """`model` with a count of the rows it processes: `forward_rows` (rows through a
    forward pass) and `backward_rows` (rows through each gradient pass back through
    its output: DeepFool's one forward and nine class gradients count 1 + 9).

    A deterministic measure of compute (same inputs and seed, same counts), for the
    judges that compare costs; wall-clock seconds differ run to run and are kept in
    the run file (`Recorder.timing`) instead.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.forward_rows += n
        if out.requires_grad:
            out.register_hook(lambda grad: self._count_backward(n))
        return out

    def _count_backward(self, n: int) -> None:
        self.backward_rows += n

    @property
    def passes(self) -> int:
        """Forward plus backward rows."""
        return self.forward_rows + self.backward_rows


def counted_attack(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   **kwargs: Any) -> tuple[attacks.AttackResult, float, float]:
    """Run a registered white-box attack; return (result, wall seconds, model passes
    per example). Passes (forward + backward rows, `PassCounter`) are deterministic;
    the final success check of the kernel is included."""
    counter = PassCounter(model)
    res, secs = timed_attack(name, counter, x, y, **kwargs)
    return res, secs, counter.passes / max(len(x), 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_attack(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 **kwargs: Any) -> tuple[attacks.AttackResult, float]:
    """Run a registered attack; return its result and wall seconds (device synchronised)."""
    fn = attacks.get(name)
    _sync(x.device)
    t0 = time.perf_counter()
    res = fn(model, x, y, **kwargs)
    _sync(x.device)
    return res, time.perf_counter() - t0


def correctly_classified(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                         n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` examples (in x's order) the model gets right: attacking a mistake
    proves nothing.

    Returns exactly `n` rows: when x holds fewer than `n` correctly classified examples,
    ConfigError says how many it found, so a table never reports an n it did not attack.
    x, y are checked like a kernel's input (`validate.batch`: shape, dtype, device,
    finite, [0, 1], labels inside the model's classes) before the forward pass.
    """
    validate.positive("n", n, integer=True)
    validate.batch(model, x, y)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = ok.nonzero().squeeze(1)[:n]
    if idx.shape[0] < n:
        raise ConfigError(f"n={n}: only {idx.shape[0]} of the {x.shape[0]} examples given are classified "
                          f"correctly; pass more examples or ask for at most {idx.shape[0]}")
    return x[idx], y[idx]


def success_vs_eps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   attack_kwargs: dict[str, dict[str, Any]], eps_grid: Sequence[float],
                   *, seed: int = 0, desc: str = "eps sweep") -> dict[str, list[float]]:
    """Success rate of each attack at each eps (same examples, same seed per point).

    attack_kwargs maps attack name -> its keyword arguments other than eps.
    """
    out: dict[str, list[float]] = {name: [] for name in attack_kwargs}
    jobs = [(name, eps) for eps in eps_grid for name in attack_kwargs]
    for name, eps in tqdm(jobs, desc=desc, disable=progress_disabled(), leave=False):
        gen = torch.Generator(device=x.device).manual_seed(seed)
        res = attacks.get(name)(model, x, y, eps=float(eps), generator=gen, **attack_kwargs[name])
        out[name].append(res.success_rate)
    return out


def norm_summary(x: torch.Tensor, res: attacks.AttackResult) -> dict[str, float]:
    """Success rate and median L0 / L2 / L-inf over the successful adversarials only."""
    norms = metrics.lp_norms(res.x_adv - x)
    ok = res.success.cpu()
    summary = {k: metrics.median(v[ok]) for k, v in norms.items()}
    summary["success"] = res.success_rate
    return summary


def run_suite(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              suite: dict[str, dict[str, Any]], *, seed: int = 0,
              on_result: Callable[[str, attacks.AttackResult], None] | None = None
              ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Run each attack of `suite` (name -> kwargs) once; norms per attack, seconds per example."""
    norms, seconds = {}, {}
    for name, kw in tqdm(suite.items(), desc="attacks", disable=progress_disabled(), leave=False):
        gen = torch.Generator(device=x.device).manual_seed(seed)
        res, t = timed_attack(name, model, x, y, generator=gen, **kw)
        norms[name] = norm_summary(x, res)
        seconds[name] = t / max(len(x), 1)
        if on_result is not None:
            on_result(name, res)
    return norms, seconds


# ------------------------------------------------------------------ shared checks


def _check_suite(suite: Any, *, entry: str) -> None:
    """`suite` is a non-empty dict whose keys are registered attack names (ConfigError
    listing the registered ones otherwise); `entry` says what each value must be."""
    if not isinstance(suite, Mapping) or not suite:
        raise ConfigError(f"suite={suite!r} must be a non-empty dict of attack name -> {entry}")
    for name in suite:
        attacks.get(name)


def _check_kwargs(name: str, kw: Any, reserved: Sequence[str]) -> None:
    """An attack's keyword arguments in a suite: a dict without the keys the protocol sets."""
    if not isinstance(kw, Mapping):
        raise ConfigError(f"suite[{name!r}] kwargs={kw!r} must be a dict of keyword arguments")
    taken = [k for k in reserved if k in kw]
    if taken:
        raise ConfigError(f"suite[{name!r}] sets {taken}; the protocol sets {list(reserved)} for every attack")


def _check_keys(name: str, value: Any, keys: Sequence[str], source: str) -> None:
    """`value` is a dict holding every key of `keys` (`source`: where such a dict comes from)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict ({source}); got a {type(value).__name__}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ConfigError(f"{name} lacks {missing}; it must hold {list(keys)} ({source})")


# ----------------------------------------------------------- black-box, transfer, EOT


def queries_to_success(trace: dict[str, torch.Tensor], *, norm: str = "l2",
                       eps: float = float("inf")) -> torch.Tensor:
    """Per example, the oracle's query count when the attack first held an adversarial
    within `eps` in `norm` ("l2" or "linf"); inf where it never did.

    `trace` is a black-box kernel's `extra["trace"]` (see attacks.blackbox). This is the
    matched-distortion measure: every attack is scored by when it reached the same ball.
    """
    if norm not in ("l2", "linf"):
        from ..errors import ConfigError
        raise ConfigError(f"norm={norm!r} is not allowed; choose one of ['l2', 'linf']")
    hit = trace["adversarial"] & (trace[norm] <= eps * (1 + 1e-6))
    first = hit.float().argmax(0)
    q = trace["queries"].gather(0, first[None]).squeeze(0).to(torch.float64)
    return torch.where(hit.any(0), q, torch.full_like(q, float("inf")))


def success_vs_queries(q2s: torch.Tensor, grid) -> list[float]:
    """Fraction of examples with queries-to-success <= each budget of `grid`."""
    return [float((q2s <= g).double().mean()) for g in grid]


def transfer_matrix(sources: dict[str, torch.nn.Module], targets: dict[str, torch.nn.Module],
                    x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 40,
                    target: torch.Tensor | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """PGD-L-inf adversarials crafted white-box on each source, replayed on each target.

    Entry [source][target] is the fraction of the crafted examples that fool the target:
    prediction != y (untargeted) or == `target` (targeted). x must be classified
    correctly by every model, so a diagonal entry is the white-box success.
    """
    targeted = target is not None
    out: dict[str, dict[str, float]] = {}
    for s_name, s_model in sources.items():
        gen = torch.Generator(device=x.device).manual_seed(seed)
        res = attacks.get("pgd_linf")(s_model, x, y, eps=eps, steps=steps, targeted=targeted,
                                      target=target, generator=gen)
        row = {}
        with torch.no_grad():
            for t_name, t_model in targets.items():
                pred = t_model(res.x_adv).argmax(1)
                row[t_name] = float((pred == target).float().mean() if targeted else (pred != y).float().mean())
        out[s_name] = row
    return out


def mean_off_diagonal(matrix: dict[str, dict[str, float]]) -> float:
    """Mean of the entries whose source and target differ."""
    vals = [v for s, row in matrix.items() for t, v in row.items() if s != t]
    return sum(vals) / len(vals) if vals else float("nan")


# ------------------------------------------------------------ worst-case robustness


def worst_case_robust(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                      steps: int = 100, square_queries: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AutoAttack-style worst-case robustness at L-inf budget `eps`, per example: the
    ensemble of Croce & Hein (2020), arXiv 2003.01690, without the targeted FAB:
    APGD-CE and APGD-DLR (`steps` each, white-box) and Square-L-inf (`square_queries`
    score-based queries through a probabilities `BlackBox`), each on the examples the
    ones before left robust. One implementation: `protocols.robustness.worst_case`
    (which also re-checks every adversarial against the ball); each attack's generator
    is seeded `seed`.

    Returns {"robust": bool [n] (CPU), "robust_accuracy": float, "clean_accuracy": float,
    "robust_after": {attack: accuracy after it and the ones before}}.
    """
    from .robustness import worst_case

    validate.positive("steps", steps, integer=True)
    validate.positive("square_queries", square_queries, integer=True)
    ensemble = {"apgd_ce": ("apgd_ce", {"steps": steps}), "apgd_dlr": ("apgd_dlr", {"steps": steps}),
                "square_linf": ("square_linf", {"max_queries": square_queries})}
    wc = worst_case(model, x, y, ensemble, eps=eps, norm="linf", seed=seed, cascade=True)
    return {k: wc[k] for k in ("robust", "robust_accuracy", "clean_accuracy", "robust_after")}


# ------------------------------------------------------------- matched success (F15)


def queries_at_levels(q2s: torch.Tensor, levels: Sequence[float]) -> list[float | None]:
    """Queries an attack needs to reach each success level, read off its
    success-vs-queries curve: for level p, the smallest budget q with
    fraction(queries-to-success <= q) >= p, i.e. the ceil(p * n)-th smallest finite
    queries-to-success; None where the attack never reaches p within its budget.

    q2s: per-example queries-to-success (`queries_to_success`; inf = never).
    """
    n = q2s.shape[0]
    finite = torch.sort(q2s[torch.isfinite(q2s)].double()).values
    out: list[float | None] = []
    for p in levels:
        validate.number("level", p, low=0, high=1, low_open=True)
        k = math.ceil(p * n - 1e-9)
        out.append(float(finite[k - 1]) if 0 < k <= finite.numel() else None)
    return out


def best_at_levels(queries: dict[str, list[float | None]]) -> list[float | None]:
    """Per level, the fewest queries over attacks (None where no attack reaches it)."""
    per_level = zip(*queries.values()) if queries else []
    return [min((q for q in qs if q is not None), default=None) for qs in per_level]


#: The two kinds of black-box attack F15 compares.
BLACKBOX_KINDS = ("score", "decision")


def blackbox_suite(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   suite: dict[str, tuple[str, str, dict[str, Any]]], *, eps: float, max_queries: int,
                   levels: Sequence[float], seed: int = 0, grid_points: int = 60) -> dict[str, Any]:
    """F15's black-box measurement at matched success: each attack of `suite` (name ->
    (kind "score" | "decision", BlackBox mode, its other keyword arguments)) attacks
    (x, y) through its own counting `oracle.BlackBox(model, mode)`, with the same L2
    ball `eps`, the same per-example budget `max_queries` and a fresh generator seeded
    `seed`. Every query must have come through the counter (RuntimeError otherwise).

    Scored as F15's rule asks: per example the queries until the attack first held an
    adversarial within the ball (`queries_to_success`), the success-vs-queries curve on
    a log grid of `grid_points` budgets from 1 to `max_queries`, and the queries each
    attack needs to reach each success level of `levels` (`queries_at_levels`; the
    best per kind: `best_at_levels`). Attacks: Square (Andriushchenko et al. 2020,
    arXiv 1912.00049), SimBA (Guo et al. 2019, arXiv 1905.07121), NES (Ilyas et al.
    2018, arXiv 1804.08598), Boundary (Brendel et al. 2018, arXiv 1712.04248),
    HopSkipJump (Chen et al. 2020, arXiv 1904.02144).

    Returns {"q_grid": budgets, "curves": {attack: success per budget}, "at_levels":
    {kind: {attack: queries per level (None: not reached)}}, "best": {kind: fewest
    queries per level}, "intervals": `level_intervals` of the best per kind (95 %
    bootstrap over the examples), "rows": one table row per attack, "seconds": {attack: wall s},
    "levels", "eps", "max_queries", "examples": the settings the numbers hold for}.
    """
    from ..oracle import MODES, BlackBox

    _check_suite(suite, entry="(kind, oracle mode, kwargs)")
    for name, entry in suite.items():
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ConfigError(f"suite[{name!r}]={entry!r} must be a (kind, oracle mode, kwargs) triple")
        validate.choice(f"suite[{name!r}] kind", entry[0], BLACKBOX_KINDS)
        validate.choice(f"suite[{name!r}] mode", entry[1], MODES)
        _check_kwargs(name, entry[2], ("eps", "max_queries", "generator"))
    validate.positive("eps", eps)
    validate.positive("max_queries", max_queries, integer=True)
    validate.positive("grid_points", grid_points, integer=True)
    validate.non_negative("seed", seed, integer=True)
    if not isinstance(levels, Sequence) or not levels:
        raise ConfigError(f"levels={levels!r} must be a non-empty list of success levels in (0, 1]")
    for i, p in enumerate(levels):
        validate.number(f"levels[{i}]", p, low=0, high=1, low_open=True)
    validate.batch(model, x, y)
    q_grid = np.unique(np.geomspace(1, max_queries, grid_points).round().astype(int)).tolist()
    rows, curves, seconds, per_example = [], {}, {}, {}
    at_levels: dict[str, dict[str, list[float | None]]] = {kind: {} for kind in BLACKBOX_KINDS}
    for name, (kind, mode, kw) in suite.items():
        oracle = BlackBox(model, mode=mode)
        gen = torch.Generator(device=x.device).manual_seed(seed)
        res, seconds[name] = timed_attack(name, oracle, x, y, eps=eps, max_queries=max_queries, generator=gen, **kw)
        if int(res.queries.sum()) != oracle.total:
            raise RuntimeError(f"{name}: the attack reports {int(res.queries.sum())} queries but the oracle "
                               f"counted {oracle.total}; every query must go through the counting BlackBox")
        q2s = queries_to_success(res.extra["trace"], norm="l2", eps=eps)
        per_example[name] = q2s.cpu()
        curves[name] = success_vs_queries(q2s, q_grid)
        at_levels[kind][name] = queries_at_levels(q2s, levels)
        rows.append({"attack": name, "kind": kind, "oracle": mode, "success": float(torch.isfinite(q2s).double().mean()),
                     **{f"queries @{int(p * 100)}%": q for p, q in zip(levels, at_levels[kind][name])}})
    return {"q_grid": q_grid, "curves": curves, "at_levels": at_levels, "rows": rows, "seconds": seconds,
            "best": {kind: best_at_levels(qs) for kind, qs in at_levels.items()},
            "intervals": level_intervals(per_example, {n: e[0] for n, e in suite.items()}, levels,
                                         stand_in=2 * max_queries, seed=seed),
            "levels": list(levels), "eps": eps, "max_queries": max_queries, "examples": int(x.shape[0])}


# -------------------------------------------------- transformation distribution (F17)


def fooled_fractions(model: torch.nn.Module, candidates: dict[str, torch.Tensor], y: torch.Tensor,
                     transform: Any, *, draws: int, threshold: float, seed: int) -> dict[str, dict[str, float]]:
    """For each named set of inputs (e.g. clean, plain PGD, EOT adversarials of the same
    examples): the fraction fooled as is, the mean fraction of fresh draws that fool
    the model, and the fraction of examples fooled in >= `threshold` of `draws` fresh
    draws. Every set sees the same draws (one generator seeded `seed` per set)."""
    from ..transforms import fooled_in_most_draws, success_under_transforms

    out = {}
    for name, xs in candidates.items():
        with torch.no_grad():
            as_is = float((model(xs).argmax(1) != y).float().mean())
        rate = success_under_transforms(model, xs, y, transform, draws=draws,
                                        generator=torch.Generator().manual_seed(seed))
        most = fooled_in_most_draws(model, xs, y, transform, draws=draws, threshold=threshold,
                                    generator=torch.Generator().manual_seed(seed))
        out[name] = {"untransformed": as_is, "mean_over_draws": float(rate.mean()),
                     "fooled_in_most_draws": float(most.float().mean())}
    return out


def eot_vs_plain_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, transform: Any, *,
                     eps: float, steps: int, samples: int, confidence: float, draws: int, threshold: float,
                     seed: int, draw_seed: int) -> dict[str, Any]:
    """F17's comparison: plain PGD-L-inf (Madry et al. 2018, arXiv 1706.06083) and
    EOT-PGD (Athalye, Engstrom, Ilyas, Kwok 2018, arXiv 1707.07397: each step averages
    the gradient over `samples` draws of `transform`) ascend the same margin loss
    (Carlini & Wagner 2017, capped at `confidence`) with the same `steps` and L-inf
    budget `eps`, each from a generator seeded `seed` on x's device. Then the clean
    images (the baseline) and both attacks' adversarials face `draws` fresh draws of
    the transformation, from CPU generators seeded `draw_seed` (must differ from
    `seed`: draws the attacks never saw), scored by `fooled_fractions`.

    Returns {"plain", "eot": AttackResult, "fooled": {"clean" | "plain" | "eot":
    {"untransformed", "mean_over_draws", "fooled_in_most_draws"}}, "eps", "draws",
    "threshold", "confidence", "transform": the settings the numbers hold for}.
    """
    from ..transforms import RandomTransform

    validate.of_type("transform", transform, RandomTransform)
    validate.number("eps", eps, low=0, high=1, low_open=True)
    validate.positive("steps", steps, integer=True)
    validate.positive("samples", samples, integer=True)
    validate.non_negative("confidence", confidence)
    validate.positive("draws", draws, integer=True)
    validate.number("threshold", threshold, low=0, high=1, low_open=True)
    validate.non_negative("seed", seed, integer=True)
    validate.non_negative("draw_seed", draw_seed, integer=True)
    if draw_seed == seed:
        raise ConfigError(f"draw_seed={draw_seed} equals seed: the evaluation draws must come from a generator "
                          "the attacks never used; pass another seed (e.g. seed + 1)")
    validate.batch(model, x, y)
    kw = dict(eps=eps, steps=steps, loss="margin", confidence=confidence)
    plain = attacks.get("pgd_linf")(model, x, y, **kw, generator=torch.Generator(device=x.device).manual_seed(seed))
    eot = attacks.get("eot_pgd")(model, x, y, **kw, samples=samples, transform=transform,
                                 generator=torch.Generator(device=x.device).manual_seed(seed))
    fooled = fooled_fractions(model, {"clean": x, "plain": plain.x_adv, "eot": eot.x_adv}, y, transform,
                              draws=draws, threshold=threshold, seed=draw_seed)
    return {"plain": plain, "eot": eot, "fooled": fooled, "eps": eps, "draws": draws, "threshold": threshold,
            "confidence": confidence, "transform": transform}


# -------------------------------------------------- minimal perturbations (F13/F14)


def minimal_norms(x: torch.Tensor, results: dict[str, attacks.AttackResult]) -> dict[str, Any]:
    """Median L0 / L2 / L-inf of each minimal-perturbation attack's adversarials, over
    the examples that *every* attack fooled (a matched set: an attack's failures, e.g.
    JSMA stopped by its pixel cap, do not drop out of its own median only).

    Returns {"median": {attack: {"l0", "l2", "linf"}}, "success": {attack: rate},
    "n_common": examples in the matched set, "n": examples attacked}.
    """
    if not results:
        raise ConfigError("results must name at least one attack")
    common = torch.ones(x.shape[0], dtype=torch.bool)
    for res in results.values():
        common &= res.success.cpu()
    out: dict[str, Any] = {"median": {}, "success": {}, "n_common": int(common.sum()), "n": int(x.shape[0])}
    for name, res in results.items():
        norms = metrics.lp_norms(res.x_adv - x)
        out["median"][name] = {k: metrics.median(v[common]) for k, v in norms.items()}
        out["success"][name] = res.success_rate
    return out


def first_eps_reaching(eps_grid: Sequence[float], success: Sequence[float], level: float) -> int | None:
    """Index of the smallest eps of the grid whose success is >= level (None if none)."""
    pairs = sorted(zip(eps_grid, range(len(eps_grid))))
    for e, i in pairs:
        if success[i] >= level:
            return i
    return None


def minimal_perturbation_suite(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                               suite: dict[str, dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """F13 / F14's minimal-perturbation measurement: every attack of `suite` (name ->
    its keyword arguments besides the generator) once on the same examples (x, y),
    each with a fresh generator seeded `seed` on x's device, counting its model passes
    and wall seconds (`counted_attack`), then the L0 / L2 / L-inf medians over the
    examples every attack fooled (`minimal_norms`).

    The attacks are minimal-perturbation ones (no budget): JSMA (Papernot et al. 2016,
    arXiv 1511.07528), C&W-L2 (Carlini & Wagner 2017, arXiv 1608.04644), DeepFool
    (Moosavi-Dezfooli et al. 2016, arXiv 1511.04599) and the minimal L-inf PGD
    (Madry et al. 2018, arXiv 1706.06083, with per-example bisection over eps), as
    F13's rule asks, so each norm is the smallest one the attack found.

    Returns {"results": {attack: AttackResult}, "norms": `minimal_norms` plus
    "passes_per_example" {attack: model passes}, "jsma_cap" (pixels JSMA may change:
    gamma x pixels, rounded down to an even count since it changes pairs) and
    "jsma_hit_cap" (examples it stopped at that cap; both None without "jsma"),
    "seconds_per_example": {attack: s}, "n_pixels": pixels per example, "rows": one
    table row per attack (attack, success, median L0 / L2 / Linf, model passes / example)}.
    """
    _check_suite(suite, entry="its keyword arguments")
    for name, kw in suite.items():
        _check_kwargs(name, kw, ("generator",))
    validate.non_negative("seed", seed, integer=True)
    validate.batch(model, x, y)
    results, seconds, passes = {}, {}, {}
    for name, kw in suite.items():
        results[name], secs, passes[name] = counted_attack(
            name, model, x, y, generator=torch.Generator(device=x.device).manual_seed(seed), **kw)
        seconds[name] = secs / len(y)
    table = minimal_norms(x, results)
    n_pixels = math.prod(x.shape[1:])
    cap = hit = None
    if "jsma" in suite:
        gamma = suite["jsma"].get("gamma", inspect.signature(attacks.get("jsma")).parameters["gamma"].default)
        cap = 2 * (int(gamma * n_pixels) // 2)
        hit = int(results["jsma"].extra["hit_cap"].sum())
    rows = [{"attack": k, "success": table["success"][k], "median L0": m["l0"], "median L2": m["l2"],
             "median Linf": m["linf"], "model passes / example": passes[k]} for k, m in table["median"].items()]
    return {"results": results, "seconds_per_example": seconds, "n_pixels": n_pixels, "rows": rows,
            "norms": {**table, "passes_per_example": passes, "jsma_cap": cap, "jsma_hit_cap": hit}}


# ---------------------------------------------------------- adversarial training (F18)


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                    seed: int, attack_model: torch.nn.Module | None = None) -> float:
    """Accuracy of `model` on PGD-L-inf adversarials (random start, `steps`, budget eps)
    crafted on `attack_model` (default: the model itself; a BPDA surrogate for masked
    defenses), judged on `model`."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    res = attacks.get("pgd_linf")(attack_model or model, x, y, eps=eps, steps=steps, generator=gen)
    with torch.no_grad():
        return float((model(res.x_adv).argmax(1) == y).float().mean())


#: The models F18 compares, in table order.
DEFENSES = ("standard", "adversarial training", "input quantization")


def defense_accuracies(standard: torch.nn.Module, adversarial: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                       x_attack: torch.Tensor, y_attack: torch.Tensor, *, eps: float, pgd_steps: int,
                       quant_levels: int, aa_steps: int, square_queries: int, seed: int) -> dict[str, dict[str, Any]]:
    """F18's accuracies of three models: the `standard` one, the `adversarial`ly trained
    one (Madry et al. 2018, arXiv 1706.06083; Wong, Rice, Kolter 2020, arXiv 2001.03994)
    and the standard one behind input quantization to `quant_levels` grey levels (Xu,
    Evans, Qi 2018, arXiv 1704.01155), a gradient-masking defense.

    Clean accuracy on (x, y); on (x_attack, y_attack), at L-inf budget `eps`:
    `robust_accuracy` under PGD (`pgd_steps`, generator seeded `seed`); for the
    quantized model also under BPDA-PGD (Athalye, Carlini, Wagner 2018, arXiv
    1802.00420: the straight-through gradient, the adaptive attack), and for the
    standard and adversarially trained models the AutoAttack-style worst case
    (`worst_case_robust`: APGD-CE, APGD-DLR with `aa_steps`, Square-L-inf with
    `square_queries`; Croce & Hein 2020, arXiv 2003.01690).

    Returns {model (`DEFENSES`): {"clean", "pgd", and "bpda" (quantized) or
    "worst_case" plus "worst_case_after" (accuracy after each attack of the cascade)}}.
    """
    from .. import models
    from ..defenses import quantization

    validate.number("eps", eps, low=0, high=1, low_open=True)
    validate.positive("pgd_steps", pgd_steps, integer=True)
    validate.number("quant_levels", quant_levels, low=2, integer=True)
    validate.positive("aa_steps", aa_steps, integer=True)
    validate.positive("square_queries", square_queries, integer=True)
    validate.non_negative("seed", seed, integer=True)
    for m in (standard, adversarial):
        validate.batch(m, x, y)
        validate.batch(m, x_attack, y_attack)
    quantized = quantization.InputQuantization(standard, quant_levels).eval()
    rob_kw = dict(eps=eps, steps=pgd_steps, seed=seed)
    out: dict[str, dict[str, Any]] = {
        "standard": {"clean": models.accuracy(standard, x, y),
                     "pgd": robust_accuracy(standard, x_attack, y_attack, **rob_kw)},
        "adversarial training": {"clean": models.accuracy(adversarial, x, y),
                                 "pgd": robust_accuracy(adversarial, x_attack, y_attack, **rob_kw)},
        "input quantization": {"clean": models.accuracy(quantized, x, y),
                               "pgd": robust_accuracy(quantized, x_attack, y_attack, **rob_kw),
                               "bpda": robust_accuracy(quantized, x_attack, y_attack, **rob_kw,
                                                       attack_model=quantized.bpda())},
    }
    for k, m in (("standard", standard), ("adversarial training", adversarial)):
        wc = worst_case_robust(m, x_attack, y_attack, eps=eps, steps=aa_steps, square_queries=square_queries,
                               seed=seed)
        out[k]["worst_case"] = wc["robust_accuracy"]
        out[k]["worst_case_after"] = wc["robust_after"]
    return out


# ------------------------------------------------------------ register v3 (F13-F18)


def g1_targets(archs: Sequence[str], dataset: str, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
               y_test: torch.Tensor, *, seed: int, num_classes: int,
               device: torch.device | str | None = None) -> dict[str, Any]:
    """Rule G1's targets: each architecture of `archs` trained on (x, y) with early
    stopping (`models.cached(..., early_stop=True)`: 1,000 held-out rows, patience 3,
    3-15 epochs, best epoch kept; Adam 1e-3, batch 64), cached.

    Returns {"models": {arch: model in eval mode on `device`}, "accuracy": {arch: clean
    accuracy on (x_test, y_test)}, "epochs": {arch: best epoch}, "epochs_run", "train_seconds": {arch:
    wall s, None when loaded from the cache}}.
    """
    from .. import models

    out: dict[str, Any] = {"models": {}, "accuracy": {}, "epochs": {}, "epochs_run": {}, "train_seconds": {}}
    for arch in archs:
        model, info = models.cached(arch, dataset, x, y, seed=seed, num_classes=num_classes, early_stop=True,
                                    progress=False)
        model = model.to(x_test.device).eval()
        out["models"][arch] = model
        out["accuracy"][arch] = models.accuracy(model, x_test, y_test)
        out["epochs"][arch] = (info.get("history") or {}).get("best_epoch")
        out["epochs_run"][arch] = (info.get("history") or {}).get("epochs_run")
        out["train_seconds"][arch] = info["train_seconds"]
    return out


def training_cost(at_info: dict[str, Any], g1: dict[str, Any], arch: str, *, n_train: int,
                  holdout: int = 1000, batch_size: int = 64) -> dict[str, Any]:
    """F18's training cost, reported and never judged: adversarial training's model
    passes per optimiser step and optimiser steps (`cached_madry`'s info["cost"]), and
    the wall-time ratio per optimiser step of adversarial to standard training (the G1
    target `arch` of `g1_targets`, (n_train - holdout) / batch_size steps per epoch);
    None unless this run trained both (a cache hit has no wall time)."""
    cost = {k: at_info["cost"][k] for k in ("forward_per_step", "backward_per_step", "optimizer_steps")}
    at_s, std_s, epochs = at_info["cost"].get("train_seconds"), g1["train_seconds"][arch], g1["epochs_run"][arch]
    ratio = None
    if at_s and std_s and epochs and cost["optimizer_steps"]:
        std_steps = epochs * math.ceil((n_train - holdout) / batch_size)
        ratio = (at_s / cost["optimizer_steps"]) / (std_s / std_steps)
    return {**cost, "wall_time_ratio": ratio}


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _median(values: Sequence[float]) -> float:
    """The median over all values, inf counted as the largest (an even count averages
    the middle two, so a median touching a failure is inf)."""
    import statistics

    return float(statistics.median(float(v) for v in values))


def norm_robustness(models_: Mapping[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                    jsma_cap: float = 0.2, pointwise_queries: int = 5000, pointwise_init_steps: int = 100,
                    bisection_steps: int = 10, steps: int = 20, seed: int = 0) -> dict[str, Any]:
    """F13: minimal L-inf and minimal L0 of each model of `models_` on the
    same examples (x, y), failures counted as infinite, medians over all of them.

    Minimal L-inf: `min_linf` (PGD with a per-example bisection over eps up to 1;
    Madry et al. 2018, arXiv 1706.06083). Minimal L0: `robustness.minimal_l0`, the
    smaller of JSMA's (Papernot et al. 2016, arXiv 1511.07528; at most `jsma_cap` of
    the pixels) and the pointwise attack's (Schott et al. 2019, arXiv 1805.09190; label
    only, so masked gradients cannot make a model look L0-robust). Every attack gets a
    fresh generator seeded `seed`. x must be classified correctly by every model.

    Returns {"models": {name: {"linf", "l0": per-example lists (None = failed),
    "median_linf", "median_l0" (None when infinite), "failures_linf", "failures_l0",
    "jsma_hit_cap", "pointwise_smaller": counts}}, "n", "n_pixels", "eps_max"}.
    """
    from .robustness import minimal_l0

    if not isinstance(models_, Mapping) or not models_:
        raise ConfigError(f"models={models_!r} must be a non-empty mapping name -> model")
    validate.number("jsma_cap", jsma_cap, low=0, high=1, low_open=True)
    for n_, v_ in (("pointwise_queries", pointwise_queries), ("pointwise_init_steps", pointwise_init_steps),
                   ("steps", steps)):
        validate.positive(n_, v_, integer=True)
    validate.non_negative("bisection_steps", bisection_steps, integer=True)
    validate.non_negative("seed", seed, integer=True)
    for name, m in models_.items():
        validate.batch(m, x, y)
        with torch.no_grad():
            if not bool((m(x).argmax(1) == y).all()):
                raise ConfigError(f"models[{name!r}] misclassifies some of x: F13 attacks examples every model "
                                  "classifies correctly (select them with correctly_classified_by_all)")
    out: dict[str, Any] = {"models": {}, "n": int(x.shape[0]), "n_pixels": int(x[0].numel()), "eps_max": 1.0}
    for name, m in models_.items():
        gen = torch.Generator(device=x.device).manual_seed(seed)
        r = attacks.get("min_linf")(m, x, y, eps_max=1.0, bisection_steps=bisection_steps, steps=steps,
                                    generator=gen)
        linf = (r.x_adv - x).reshape(x.shape[0], -1).abs().amax(1)
        linf = torch.where(r.success, linf, torch.full_like(linf, math.inf)).cpu().tolist()
        ml0 = minimal_l0(m, x, y, jsma_cap=jsma_cap, max_queries=pointwise_queries,
                         init_steps=pointwise_init_steps, generator=torch.Generator(device=x.device).manual_seed(seed))
        l0 = ml0.l0.cpu().tolist()
        med_linf, med_l0 = _median(linf), _median(l0)
        out["models"][name] = {
            "linf": _finite_or_none(linf), "l0": _finite_or_none(l0),
            "median_linf": med_linf if math.isfinite(med_linf) else None,
            "median_l0": med_l0 if math.isfinite(med_l0) else None,
            "failures_linf": sum(not math.isfinite(v) for v in linf),
            "failures_l0": sum(not math.isfinite(v) for v in l0),
            "jsma_hit_cap": int(ml0.jsma_hit_cap.sum()), "pointwise_smaller": ml0.source.count("pointwise")}
    return out


def correctly_classified_by_all(models_: Mapping[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                                n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` examples of (x, y) that every model classifies correctly
    (ConfigError when fewer exist)."""
    validate.positive("n", n, integer=True)
    ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for m in models_.values():
            ok &= m(x).argmax(1) == y
    idx = ok.nonzero().squeeze(1)[:n]
    if idx.numel() < n:
        raise ConfigError(f"n={n}: only {idx.numel()} examples are classified correctly by every model; "
                          "ask for fewer")
    return x[idx], y[idx]


def level_intervals(q2s: Mapping[str, torch.Tensor], kinds: Mapping[str, str], levels: Sequence[float], *,
                    stand_in: float, seed: int = 0, resamples: int = 1000) -> dict[str, Any]:
    """F15's per-level queries with 95 % bootstrap percentile intervals over examples
    (`scipy.stats.bootstrap`, the examples resampled jointly for every attack): per kind
    and level, the fewest queries over that kind's attacks to reach the level
    (`queries_at_levels`), a level not reached counting as `stand_in` (the judge's
    budget x 2).

    Returns {kind: {"queries": per level, "low": per level, "high": per level}}.
    """
    from scipy import stats as st

    names = list(q2s)
    if not names:
        raise ConfigError("q2s must name at least one attack")
    mat = np.stack([q2s[n].double().cpu().numpy() for n in names])  # [attacks, examples]
    n_ex = mat.shape[1]

    def best(cols: np.ndarray, kind: str) -> np.ndarray:
        rows = [i for i, n in enumerate(names) if kinds[n] == kind]
        per = []
        for i in rows:
            q = np.sort(mat[i, cols.astype(int)])
            per.append([float(q[k - 1]) if 0 < (k := math.ceil(p * n_ex - 1e-9)) <= n_ex and np.isfinite(q[k - 1])
                        else float(stand_in) for p in levels])
        return np.min(np.array(per, dtype=float), axis=0) if per else np.full(len(levels), np.nan)

    out: dict[str, Any] = {}
    idx = np.arange(n_ex, dtype=float)
    for kind in sorted(set(kinds.values())):
        point = best(idx, kind)
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            res = st.bootstrap((idx,), lambda c: best(c, kind), vectorized=False, n_resamples=resamples,
                               method="percentile", random_state=np.random.default_rng(seed))
        lo, hi = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
        out[kind] = {"queries": point.tolist(), "low": [None if not np.isfinite(v) else float(v) for v in lo],
                     "high": [None if not np.isfinite(v) else float(v) for v in hi]}
    return out


def sign_noise_success(models_: Mapping[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                       eps: float, seed: int = 0) -> float:
    """F16's trivial baseline: random sign noise of L-inf norm eps, x' = clip(x + eps s,
    0, 1) with s uniform in {-1, +1} per pixel (one draw, generator seeded `seed`),
    the fraction of examples it makes each model misclassify, averaged over the models
    (every model appears as a target of the transfer matrix equally often, so this is
    the noise counterpart of `mean_off_diagonal`)."""
    validate.number("eps", eps, low=0, high=1, low_open=True)
    from ..runtime import randint

    gen = torch.Generator(device=x.device).manual_seed(seed)
    sign = randint(0, 2, x.shape, gen, device=x.device).to(x.dtype) * 2 - 1
    xn = (x + eps * sign).clamp(0, 1)
    with torch.no_grad():
        rates = [float((m(xn).argmax(1) != y).float().mean()) for m in models_.values()]
    return sum(rates) / len(rates)


def augmented_target(arch: str, dataset: str, x: torch.Tensor, y: torch.Tensor, *, seed: int, num_classes: int,
                     cache_dir: Any = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """F17's target: `arch` trained with F17's fixed transformation
    distribution as augmentation (`transforms.F17_AUGMENTATION`: every training batch
    transformed by a fresh draw, `transforms.augmentation_hook`), with G1's early
    stopping on the clean held-out loss (1,000 rows, patience 3, 3-15 epochs, best
    epoch kept; Adam 1e-3, batch 64). Cached like `models.cached` (content-addressed:
    the G1 key of the same data plus the augmentation and this file's source).

    Returns (model in eval mode, {"from_cache", "train_seconds" (None when loaded),
    "best_epoch", "path"}).
    """
    import hashlib
    import json

    from .. import models, transforms
    from ..errors import IntegrityError

    rule = models.resolve_early_stop(True)
    base = models.checkpoint_key(arch, dataset, x, y, train_params=None, seed=seed, in_shape=tuple(x.shape[1:]),
                                 num_classes=num_classes, early_stop=True)
    record = {"g1": base, "augmentation": transforms.F17_AUGMENTATION,
              "code": hashlib.sha256(inspect.getsource(augmented_target).encode()).hexdigest(),
              "transforms": hashlib.sha256(open(transforms.__file__, "rb").read()).hexdigest()}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    path = models.checkpoint_dir(cache_dir) / f"{arch}-aug-{models._slug(dataset)}-{key[:20]}.safetensors"
    model = models.build(arch, in_shape=tuple(x.shape[1:]), num_classes=num_classes, seed=seed)
    if path.exists():
        try:
            meta = models.load_checkpoint(model, path, key=key)
            hist = json.loads(meta.get("history", "null")) or {}
            return model.eval(), {"from_cache": True, "train_seconds": None, "best_epoch": hist.get("best_epoch"),
                                  "path": str(path)}
        except (IntegrityError, OSError, ValueError):
            model = models.build(arch, in_shape=tuple(x.shape[1:]), num_classes=num_classes, seed=seed)
    fit, held = models.holdout_split(x.shape[0], rule["holdout"], seed)
    x_fit, y_fit, x_held, y_held = x[fit], y[fit], x[held], y[held]
    best_state: dict[str, torch.Tensor] = {}
    stop_rule = {k: rule[k] for k in ("patience", "min_epochs", "max_epochs")}

    def after_epoch(epoch: int, history: dict[str, Any]) -> bool:
        model.eval()
        try:
            loss = models._mean_loss(model, x_held, y_held).item()  # one read per epoch
        finally:
            model.train()
        history.setdefault("holdout_loss", []).append(loss)
        stop, best = models.stopping_epoch(history["holdout_loss"], **stop_rule)
        if best == epoch + 1:
            best_state.clear()
            best_state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return stop is not None

    hist = models.train(model, x_fit, y_fit, epochs=stop_rule["max_epochs"], batch_size=64, lr=1e-3, seed=seed,
                        progress=False, perturb=transforms.augmentation_hook(), after_epoch=after_epoch)
    model.load_state_dict(best_state)
    model.eval()
    best = models.stopping_epoch(hist["holdout_loss"], **stop_rule)[1]
    stored = {"holdout_loss": hist["holdout_loss"], "best_epoch": best, "augmentation": transforms.F17_AUGMENTATION}
    models.save_checkpoint(model, path, key=key, arch=arch,
                           extra={"dataset": dataset, "history": json.dumps(stored, sort_keys=True)})
    return model, {"from_cache": False, "train_seconds": hist["seconds"], "best_epoch": best, "path": str(path)}


#: F17's eps rule: the smallest of these at which plain PGD fools >= 90 %.
F17_EPS_GRID = (0.05, 0.1, 0.15, 0.2, 0.3)


def eps_by_rule(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, grid: Sequence[float] = F17_EPS_GRID,
                steps: int = 20, level: float = 0.9, seed: int = 0) -> dict[str, Any]:
    """F17's budget, fixed before EOT runs: the smallest eps of `grid` at which plain
    PGD-L-inf (`steps`, margin loss, kappa = 0, generator seeded `seed`) fools >=
    `level` of the untransformed calibration images (x, y); the largest eps when none
    does (recorded as "reached": False).

    Returns {"eps", "reached", "success": per eps of the grid (up to the chosen one)}.
    """
    validate.positive("steps", steps, integer=True)
    validate.number("level", level, low=0, high=1, low_open=True)
    validate.batch(model, x, y)
    success = []
    for e in sorted(float(g) for g in grid):
        gen = torch.Generator(device=x.device).manual_seed(seed)
        res = attacks.get("pgd_linf")(model, x, y, eps=e, steps=steps, loss="margin", confidence=0.0, generator=gen)
        success.append(res.success_rate)
        if res.success_rate >= level:
            return {"eps": e, "reached": True, "success": success}
    return {"eps": max(float(g) for g in grid), "reached": False, "success": success}


def stable_examples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, transform: Any, *, n: int,
                    draws: int = 20, threshold: float = 0.9, seed: int = 0) -> dict[str, Any]:
    """F17's scored examples: the first `n` of (x, y) the model classifies correctly as
    they are and in >= `threshold` of `draws` clean transformation draws (generator
    seeded `seed`), so a failure under the draws is the attack's, not the transform's.

    Returns {"x", "y", "candidates": examples looked at, "stable": how many qualified}.
    """
    from ..transforms import success_under_transforms

    validate.positive("n", n, integer=True)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    fooled = success_under_transforms(model, x, y, transform, draws=draws,
                                      generator=torch.Generator().manual_seed(seed))
    ok &= (torch.round((1 - fooled) * draws) >= math.ceil(threshold * draws - 1e-9)).to(ok.device)
    idx = ok.nonzero().squeeze(1)
    if idx.numel() < n:
        raise ConfigError(f"n_eot={n}: only {idx.numel()} of {x.shape[0]} examples are stable under clean draws")
    return {"x": x[idx[:n]], "y": y[idx[:n]], "candidates": int(x.shape[0]), "stable": int(idx.numel())}


# ------------------------------------------------------------- evidence (F13-F18)
#
# What each judge of `report.judges.adversarial` reads, built from the protocol outputs
# above: the notebook records it with `rec.evidence(finding, evidence_fxx(...))`.


def _victim(dataset: str, architecture: str, accuracy: float) -> dict[str, Any]:
    """What G1's power check reads (`report.verdicts.victim_checks`)."""
    return {"dataset": dataset, "architecture": architecture, "victim_accuracy": float(accuracy)}


def evidence_f13(norms: dict[str, Any], *, standard: str, adversarial: str, dataset: str, architecture: str,
                 accuracy: float) -> dict[str, Any]:
    """F13 (Carlini & Wagner 2017, arXiv 1608.04644, on norms; Schott et
    al. 2019, arXiv 1805.09190, on L0 robustness of adversarially trained models): the
    median minimal L-inf and minimal L0 of the standard target and of the adversarially
    trained one (`norm_robustness`), failures counted as infinite (None in the file),
    with the bounds a median can take (L-inf <= eps_max, L0 <= n_pixels)."""
    _check_keys("norms", norms, ("models", "n", "n_pixels", "eps_max"), "norm_robustness's output")
    _check_keys("norms['models']", norms["models"], (standard, adversarial), "the two models F13 compares")
    per = {k: norms["models"][k] for k in (standard, adversarial)}
    return {"median_linf": {"standard": per[standard]["median_linf"], "adversarial": per[adversarial]["median_linf"]},
            "median_l0": {"standard": per[standard]["median_l0"], "adversarial": per[adversarial]["median_l0"]},
            "failures": {"standard": {"linf": per[standard]["failures_linf"], "l0": per[standard]["failures_l0"]},
                         "adversarial": {"linf": per[adversarial]["failures_linf"],
                                         "l0": per[adversarial]["failures_l0"]}},
            "pointwise_smaller": {"standard": per[standard]["pointwise_smaller"],
                                  "adversarial": per[adversarial]["pointwise_smaller"]},
            "n": norms["n"], "n_pixels": norms["n_pixels"], "eps_max": norms["eps_max"],
            **_victim(dataset, architecture, accuracy)}


def evidence_f14(eps_grid: Sequence[float], success: dict[str, list[float]], minimal_run: dict[str, Any], *,
                 dataset: str, architecture: str, accuracy: float, cw: dict[str, Any]) -> dict[str, Any]:
    """F14: FGSM (Goodfellow et al. 2015, arXiv 1412.6572) vs PGD (Madry
    et al. 2018, arXiv 1706.06083) success over `eps_grid` (`success_vs_eps`), the
    smallest eps where PGD reaches 90 % (None if none), C&W-L2 (Carlini & Wagner 2017,
    at `cw`'s budget) vs DeepFool median L2 and model passes per example
    (`minimal_perturbation_suite`), and the target's G1 facts."""
    if not isinstance(eps_grid, Sequence) or not eps_grid:
        raise ConfigError(f"eps_grid={eps_grid!r} must be a non-empty list of budgets")
    _check_keys("success", success, ("fgsm", "pgd_linf"), "success_vs_eps's output")
    for k in ("fgsm", "pgd_linf"):
        if len(success[k]) != len(eps_grid):
            raise ConfigError(f"success[{k!r}] has {len(success[k])} values; eps_grid has {len(eps_grid)}: "
                              "one success rate per eps is needed")
    _check_keys("minimal_run", minimal_run, ("norms",), "minimal_perturbation_suite's output")
    norms = minimal_run["norms"]
    _check_keys("minimal_run['norms']['median']", norms.get("median"), ("cw_l2", "deepfool"),
                "F14 compares cw_l2 with deepfool")
    i90 = first_eps_reaching(eps_grid, success["pgd_linf"], 0.9)
    return {"eps": list(eps_grid), "success": success, "eps_at_90": None if i90 is None else eps_grid[i90],
            "median_l2": {k: norms["median"][k]["l2"] for k in ("cw_l2", "deepfool")},
            "success_minimal": {k: norms["success"][k] for k in ("cw_l2", "deepfool")},
            "passes_per_example": {k: norms["passes_per_example"][k] for k in ("cw_l2", "deepfool")},
            "cw": dict(cw), "n_matched": norms["n_common"], **_victim(dataset, architecture, accuracy)}


def evidence_f15(blackbox: dict[str, Any], *, dataset: str, architecture: str, accuracy: float) -> dict[str, Any]:
    """F15 (matched success): from `blackbox_suite`'s output, the queries each attack
    needs to reach each success level within the L2 ball, the best score-based and
    decision-based per level with 95 % bootstrap intervals over the examples, the
    budget of each kind (the judge's power check asks for >= 10^4 decision-based
    queries), the ball, the number of examples and the target's G1 facts."""
    _check_keys("blackbox", blackbox, ("levels", "at_levels", "best", "max_queries", "eps", "examples"),
                "blackbox_suite's output")
    _check_keys("blackbox['best']", blackbox["best"], BLACKBOX_KINDS, "blackbox_suite's output")
    return {"levels": blackbox["levels"], "queries": blackbox["at_levels"], "best": blackbox["best"],
            "intervals": blackbox.get("intervals"),
            "budget": {"score": blackbox["max_queries"], "decision": blackbox["max_queries"]},
            "eps_l2": blackbox["eps"], "examples": blackbox["examples"], **_victim(dataset, architecture, accuracy)}


def evidence_f16(transfer_mean: dict[str, list[float]], transfer_eps: Sequence[float],
                 eps: float = 0.3, *, noise: Sequence[float] | None = None, dataset: str | None = None,
                 architecture: str | None = None, accuracy: float | None = None) -> dict[str, Any]:
    """F16 (transfer as in Papernot, McDaniel, Goodfellow 2016, arXiv 1605.07277): mean
    off-diagonal transfer (`mean_off_diagonal` of each `transfer_matrix`), untargeted
    and targeted, per eps of `transfer_eps`, and both at `eps`, the data set's budget
    (rule G2, `threatlab.budgets`), where the judge reads them: ``untargeted_at_eps`` /
    ``targeted_at_eps`` with ``eps_judged``; with `noise`, the sign-noise baseline per
    eps (`sign_noise_success`); with the target's facts, G1's check."""
    validate.number("eps", eps, low=0, high=1, low_open=True)
    hits = ([i for i, e in enumerate(transfer_eps) if isinstance(e, (int, float)) and math.isclose(e, eps)]
            if isinstance(transfer_eps, Sequence) else [])
    if not hits:
        raise ConfigError(f"transfer_eps={transfer_eps!r} must be a list including {eps!r} (F16 is judged there)")
    _check_keys("transfer_mean", transfer_mean, ("untargeted", "targeted"), "mean off-diagonal transfer per eps")
    for k in ("untargeted", "targeted"):
        if len(transfer_mean[k]) != len(transfer_eps):
            raise ConfigError(f"transfer_mean[{k!r}] has {len(transfer_mean[k])} values; transfer_eps has "
                              f"{len(transfer_eps)}: one mean per eps is needed")
    i = hits[0]
    out = {"eps_judged": eps, "untargeted_at_eps": transfer_mean["untargeted"][i],
           "targeted_at_eps": transfer_mean["targeted"][i],
           "eps": list(transfer_eps), "untargeted": transfer_mean["untargeted"], "targeted": transfer_mean["targeted"]}
    if noise is not None:
        if len(noise) != len(transfer_eps):
            raise ConfigError(f"noise has {len(noise)} values; transfer_eps has {len(transfer_eps)}")
        out["noise"] = list(noise)
    if math.isclose(eps, 0.3):  # the names older readers use
        out.update({"untargeted_at_0.3": out["untargeted_at_eps"], "targeted_at_0.3": out["targeted_at_eps"]})
    if dataset is not None and architecture is not None and accuracy is not None:
        out.update(_victim(dataset, architecture, accuracy))
    return out


def evidence_f17(eot_run: dict[str, Any], *, eps_rule: dict[str, Any], stable: dict[str, Any],
                 clean_accuracy: float, clean_accuracy_under_transform: float, dataset: str,
                 architecture: str) -> dict[str, Any]:
    """F17 (EOT, Athalye et al. 2018, arXiv 1707.07397): the fraction of
    clean, plain-PGD and EOT examples fooled in >= 90 % of fresh draws and the mean
    over draws (`eot_vs_plain_pgd`, kappa = 0), on examples stable under clean draws
    (`stable_examples`), at the eps of `eps_by_rule`; the augmented target's
    untransformed clean accuracy and its accuracy under the draws (the judge's relative
    power check and G1's)."""
    _check_keys("eot_run", eot_run, ("fooled", "threshold", "draws", "eps", "transform", "confidence"),
                "eot_vs_plain_pgd's output")
    _check_keys("eps_rule", eps_rule, ("eps", "reached", "success"), "eps_by_rule's output")
    _check_keys("stable", stable, ("candidates", "stable"), "stable_examples' output")
    if eot_run["threshold"] != 0.9:
        raise ConfigError(f"eot_run threshold={eot_run['threshold']!r}: F17 counts examples fooled in >= 90 % "
                          "of draws; run eot_vs_plain_pgd with threshold=0.9")
    fooled = eot_run["fooled"]
    return {"fooled_in_90pct": {k: r["fooled_in_most_draws"] for k, r in fooled.items()},
            "mean_over_draws": {k: r["mean_over_draws"] for k, r in fooled.items()},
            "clean_accuracy_under_transform": float(clean_accuracy_under_transform),
            "clean_accuracy": float(clean_accuracy), "draws": eot_run["draws"], "eps": eot_run["eps"],
            "eps_rule": {"reached": eps_rule["reached"], "success": eps_rule["success"]},
            "stable": {"candidates": stable["candidates"], "stable": stable["stable"]},
            "transform": repr(eot_run["transform"]), "loss": "margin", "confidence": eot_run["confidence"],
            "dataset": dataset, "architecture": architecture}


def evidence_f18(defense: dict[str, dict[str, Any]], cost: dict[str, Any], *, eps: float, dataset: str,
                 architecture: str, n_attack: int) -> dict[str, Any]:
    """F18 (PGD adversarial training, Madry et al. 2018, arXiv 1706.06083;
    masking, Athalye, Carlini, Wagner 2018, arXiv 1802.00420): clean, PGD and
    worst-case accuracies of the standard target and the adversarially trained model
    and the quantized model's plain-PGD vs BPDA accuracy (`defense_accuracies`), with
    the training cost (`defenses.adversarial_training.cached_madry`'s info["cost"]:
    model passes per optimiser step; wall seconds where this run trained) reported."""
    _check_keys("defense", defense, DEFENSES, "defense_accuracies' output")
    for k in ("standard", "adversarial training"):
        _check_keys(f"defense[{k!r}]", defense[k], ("clean", "pgd", "worst_case"), "defense_accuracies' output")
    _check_keys("defense['input quantization']", defense["input quantization"], ("pgd", "bpda"),
                "defense_accuracies' output")
    _check_keys("cost", cost, ("forward_per_step", "backward_per_step", "optimizer_steps"),
                "cached_madry's info['cost']")
    validate.number("eps", eps, low=0, high=1, low_open=True)
    at, std, quant = defense["adversarial training"], defense["standard"], defense["input quantization"]
    return {"robust_at": at["pgd"], "robust_undefended": std["pgd"], "clean_at": at["clean"],
            "clean_undefended": std["clean"], "train_passes_at": cost["forward_per_step"],
            "train_passes_standard": 1.0, "backward_per_step_at": cost["backward_per_step"],
            "optimizer_steps": cost["optimizer_steps"], "method": "pgd", "masked_plain_robust": quant["pgd"], "masked_adaptive_robust": quant["bpda"],
            "worst_case_at": at["worst_case"], "worst_case_undefended": std["worst_case"],
            "worst_case_after": {"standard": std.get("worst_case_after"), "adversarial": at.get("worst_case_after")},
            "eps": eps, "n_attack": int(n_attack), "dataset": dataset, "architecture": architecture,
            "victim_accuracy": std["clean"]}
