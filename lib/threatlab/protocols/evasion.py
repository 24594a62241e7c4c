"""Evaluation protocols the notebooks share: eps sweeps, norm summaries, timing.

Kernels compute one attack on one batch; these functions run the protocol around them
(which examples count, which norms, how time is read) so every notebook measures the
same way. They return plain dicts ready for `results.Recorder`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import attacks, metrics, validate
from ..errors import ConfigError
from ..runtime import progress_disabled


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
                      steps: int = 100, square_queries: int = 1000,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
    """AutoAttack-style worst-case robustness at L-inf budget `eps`, per example.

    Croce & Hein (2020), arXiv 2003.01690: an example counts as robust only if it is
    classified correctly and survives every attack of the ensemble: APGD-CE and
    APGD-DLR (`steps` each, white-box) and Square-L-inf (`square_queries` score-based
    queries through a probabilities `BlackBox`). Each attack runs on the examples
    the previous ones left robust, as AutoAttack does (so the cost falls with each).
    This is the standard (untargeted) version's attack set without the targeted
    FAB; the number RobustBench reports as robust accuracy.

    Returns {"robust": bool [n] (CPU), "robust_accuracy": float, "clean_accuracy": float,
    "robust_after": {attack: accuracy after it and the ones before}}.
    """
    from ..oracle import BlackBox

    validate.positive("eps", eps)
    validate.positive("steps", steps, integer=True)
    validate.positive("square_queries", square_queries, integer=True)
    with torch.no_grad():
        robust = (model(x).argmax(1) == y).cpu()
    out: dict[str, Any] = {"clean_accuracy": float(robust.float().mean()), "robust_after": {}}
    for name in ("apgd_ce", "apgd_dlr", "square_linf"):
        idx = robust.nonzero().squeeze(1)
        if idx.numel():
            xi, yi = x[idx.to(x.device)], y[idx.to(y.device)]
            if name == "square_linf":
                res = attacks.get(name)(BlackBox(model, mode="probs"), xi, yi, eps=eps,
                                        max_queries=square_queries, generator=generator)
            else:
                res = attacks.get(name)(model, xi, yi, eps=eps, steps=steps, generator=generator)
            robust[idx] = ~res.success.cpu()
        out["robust_after"][name] = float(robust.float().mean())
    out["robust"] = robust
    out["robust_accuracy"] = float(robust.float().mean())
    return out
