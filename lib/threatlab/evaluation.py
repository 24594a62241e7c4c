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

from . import attacks, metrics
from .runtime import progress_disabled


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
    """The first `n` examples the model gets right: attacking a mistake proves nothing."""
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = ok.nonzero().squeeze(1)[:n]
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
