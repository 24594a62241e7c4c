"""Per-example robustness over several attacks: the minimal L0 of two attacks, and the
worst case over an ensemble (an example is robust only if every attack fails).

Both take the per-example best of their attacks, so a model whose gradients mislead
one attack (gradient masking) cannot look robust because of that attack alone
(Carlini et al. 2019, "On Evaluating Adversarial Robustness", arXiv 1902.06705).

    >>> m = minimal_l0(model, x, y, generator=g)           # JSMA vs pointwise, per example
    >>> wc = worst_case(model, x, y, ["apgd_ce", "apgd_dlr", "square_linf"], eps=0.3, seed=0)
    >>> m.l0.median(), wc["robust_accuracy"]
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import attacks, validate
from ..errors import ConfigError
from ..oracle import BlackBox

__all__ = ["MinimalL0", "minimal_l0", "worst_case"]


# --------------------------------------------------------------------- minimal L0


@dataclass
class MinimalL0:
    """Per-example minimal L0 of two attacks (features changed; inf where both failed).

    l0:       [n] float, the smaller of `jsma_l0` and `pointwise_l0`.
    source:   per example "jsma", "pointwise" (the attack that gave `l0`; "jsma" on
              ties) or "none" (both failed).
    x_adv:    [n, ...] the adversarial that gives `l0` (x where both failed).
    jsma_l0, pointwise_l0: [n] float, each attack's L0 (inf on failure).
    jsma_hit_cap: [n] bool, JSMA stopped at its feature cap.
    queries:  [n] int64, the pointwise attack's forward passes per example.
    """

    l0: torch.Tensor
    source: list[str]
    x_adv: torch.Tensor
    jsma_l0: torch.Tensor
    pointwise_l0: torch.Tensor
    jsma_hit_cap: torch.Tensor
    queries: torch.Tensor


def _l0(x_adv: torch.Tensor, x: torch.Tensor, success: torch.Tensor) -> torch.Tensor:
    changed = (x_adv != x).reshape(x.shape[0], -1).sum(1).to(x.dtype)
    return torch.where(success, changed, torch.full_like(changed, math.inf))


def minimal_l0(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, jsma_cap: float = 0.2,
               max_queries: int = 5000, init_steps: int = 100,
               generator: torch.Generator | None = None) -> MinimalL0:
    """Minimal L0 per example: the smaller of JSMA's and the pointwise attack's.

    F13's: JSMA (Papernot et al. 2016, arXiv 1511.07528; untargeted,
    theta = 1, at most `jsma_cap` of the features) needs the model's gradients; the
    pointwise attack (Schott et al. 2019, arXiv 1805.09190) needs only its labels, so a
    model whose gradients mislead JSMA cannot look L0-robust. Failures count as inf.
    L0 is the number of features (all non-batch elements) that differ from x, counted
    the same way for both attacks. Threat model: white-box model, untargeted, L0.

    Args:
        model: maps x in [0, 1] to logits (eval mode).
        x, y: images [n, C, H, W] in [0, 1] and labels [n] (Long).
        jsma_cap: JSMA's largest fraction of features changed, in (0, 1], default 0.2.
        max_queries, init_steps: the pointwise attack's per-example budget and
            salt-and-pepper levels (`attacks.blackbox.pointwise`), defaults 5000, 100.
        generator: torch.Generator for the pointwise attack (JSMA is deterministic).
    Returns a `MinimalL0` (tensors on x's device, `source` a list of n strings).

    Example:
        >>> m = minimal_l0(model, x, y, generator=torch.Generator().manual_seed(0))
        >>> m.l0.median()                       # inf counts: the median over all n
        >>> m.source.count("pointwise")
    """
    validate.number("jsma_cap", jsma_cap, low=0, high=1, low_open=True)
    validate.batch(model, x, y)
    j = attacks.get("jsma")(model, x, y, gamma=jsma_cap)
    oracle = BlackBox(model, mode="label")
    p = attacks.get("pointwise")(oracle, x, y, max_queries=max_queries, init_steps=init_steps,
                                 generator=generator)
    jl0, pl0 = _l0(j.x_adv, x, j.success), _l0(p.x_adv, x, p.success)
    use_j = jl0 <= pl0
    l0 = torch.where(use_j, jl0, pl0)
    x_adv = torch.where(use_j.reshape(-1, *([1] * (x.dim() - 1))), j.x_adv, p.x_adv)
    x_adv = torch.where(torch.isfinite(l0).reshape(-1, *([1] * (x.dim() - 1))), x_adv, x)
    src = ["none" if not math.isfinite(v) else ("jsma" if u else "pointwise")
           for v, u in zip(l0.tolist(), use_j.tolist())]  # after the attacks: one read
    return MinimalL0(l0=l0, source=src, x_adv=x_adv, jsma_l0=jl0, pointwise_l0=pl0,
                     jsma_hit_cap=j.extra["hit_cap"], queries=p.queries)


# -------------------------------------------------------------------- worst case


NORMS = ("linf", "l2")


def _entries(attack_list: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registry name, kwargs) per attack, from a list of names or a mapping
    label -> (name, kwargs)."""
    if isinstance(attack_list, Mapping):
        out = []
        for label, spec in attack_list.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], Mapping)):
                raise ConfigError(f"attacks[{label!r}]={spec!r} must be a (registry name, kwargs dict) pair")
            out.append((str(label), spec[0], dict(spec[1])))
    elif isinstance(attack_list, Sequence) and not isinstance(attack_list, str):
        out = [(name, name, {}) for name in attack_list]
    else:
        raise ConfigError(f"attacks={attack_list!r} must be a list of attack names or a mapping "
                          "label -> (name, kwargs)")
    if not out:
        raise ConfigError("attacks is empty; name at least one attack")
    for label, name, kw in out:
        attacks.get(name, "adversarial")  # ConfigError listing the valid names
        for reserved in ("eps", "generator"):
            if reserved in kw:
                raise ConfigError(f"attacks[{label!r}] sets {reserved!r}; worst_case passes it to every attack")
    return out


def _in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    d = (x_adv - x).reshape(x.shape[0], -1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    return size <= eps * (1 + 1e-5) + 1e-6


def worst_case(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack_list: Any, *, eps: float,
               norm: str = "linf", seed: int = 0, cascade: bool = True) -> dict[str, Any]:
    """Per-example worst case over attacks at one budget, AutoAttack-style.

    Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", arXiv 2003.01690: an example counts
    as robust only if the model classifies it correctly and every attack fails on it.
    Each attack gets `eps` and a fresh generator seeded `seed` (on x's device); a
    black-box kernel (first argument `oracle`) gets `BlackBox(model, mode)` with mode
    from its kwargs' "mode" (default "probs"). Success is re-evaluated here on the
    model, and an adversarial outside the ball (norm `norm`, radius eps, float slack)
    does not count (its number is reported). Threat model: as each attack's; the
    budget is an L-inf or L2 ball of radius eps within [0, 1].

    Args:
        model: maps x in [0, 1] to logits (eval mode).
        x, y: inputs [n, ...] in [0, 1], labels [n] Long.
        attack_list: registry names (["apgd_ce", "apgd_dlr", "square_linf"]) or a mapping
            label -> (name, kwargs) (e.g. {"pgd-40": ("pgd_linf", {"steps": 40})});
            kwargs must not set eps or generator.
        eps: budget in input units, > 0. norm: "linf" or "l2", default "linf".
        seed: seeds every attack's generator (int >= 0), default 0.
        cascade: True (AutoAttack's way, cheaper): each attack runs only on the examples
            the ones before left robust. False: every attack runs on every correctly
            classified example, which also gives each attack's own robust accuracy.
    Returns {"robust": bool [n] (CPU), "robust_accuracy", "clean_accuracy",
    "robust_after": {label: accuracy after it and the ones before},
    "per_attack": {label: robust accuracy under that attack alone} (cascade=False only,
    else None), "broken_by": int [n] (CPU; index of the first attack that fooled the
    example, -1 if none did or it was misclassified clean), "outside_ball": {label:
    adversarials not counted because they left the ball}}.

    Example:
        >>> wc = worst_case(model, x, y, ["apgd_ce", "apgd_dlr"], eps=0.3, cascade=False)
        >>> wc["robust_accuracy"] <= min(wc["per_attack"].values())
        >>> wc["robust_after"]
    """
    entries = _entries(attack_list)
    validate.positive("eps", eps)
    validate.choice("norm", norm, NORMS)
    validate.non_negative("seed", seed, integer=True)
    validate.of_type("cascade", cascade, bool)
    validate.batch(model, x, y)
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).cpu()
    robust = correct.clone()
    broken_by = torch.full(correct.shape, -1, dtype=torch.long)
    out: dict[str, Any] = {"clean_accuracy": float(correct.float().mean()), "robust_after": {},
                           "per_attack": None if cascade else {}, "outside_ball": {}}
    for i, (label, name, kw) in enumerate(entries):
        rows = robust if cascade else correct
        idx = rows.nonzero().squeeze(1)
        fooled = torch.zeros_like(correct)
        outside = 0
        if idx.numel():
            fn = attacks.get(name)
            xi, yi = x[idx.to(x.device)], y[idx.to(y.device)]
            gen = torch.Generator(device=x.device).manual_seed(seed)
            kw = dict(kw)
            if next(iter(inspect.signature(fn).parameters)) == "oracle":
                target = BlackBox(model, mode=kw.pop("mode", "probs"))
            else:
                target = model
            res = fn(target, xi, yi, eps=eps, generator=gen, **kw)
            with torch.no_grad():
                wrong = model(res.x_adv).argmax(1) != yi
            ok = _in_ball(res.x_adv, xi, eps, norm)
            outside = int((wrong & ~ok).sum())
            fooled[idx] = (wrong & ok).cpu()
        broken_by = torch.where(fooled & robust, torch.full_like(broken_by, i), broken_by)
        robust &= ~fooled
        out["outside_ball"][label] = outside
        out["robust_after"][label] = float(robust.float().mean())
        if not cascade:
            out["per_attack"][label] = float((correct & ~fooled).float().mean())
    out["robust"] = robust
    out["robust_accuracy"] = float(robust.float().mean())
    out["broken_by"] = broken_by
    return out
