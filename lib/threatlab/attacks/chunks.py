"""Running a white-box kernel over a large batch in row chunks (CPU only).

Every evasion kernel treats examples independently (per-example losses summed, masks
instead of removals, elementwise optimisers), so attacking rows 0..127, then 128..255,
... gives each example exactly what attacking the whole batch gives it, and on a CPU
it is much faster: the activations of 128 rows stay in cache across the forward and
backward passes (see `runtime.CPU_ROW_CHUNK` for the measurements). On an accelerator
`runtime.row_chunk` is None and the whole batch goes in at once. A kernel's
``batch_size=`` sets the chunk for its call on any device (`runtime.rows_per_call`,
entered by the registry).

Chunks run one after another: this is a loop over a handful of chunks, never over
examples.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .. import runtime
from . import checks
from .result import AttackResult


def row_slices(x: torch.Tensor) -> list[slice]:
    """Slices of x's first dimension, one per chunk (`runtime.row_slices`)."""
    return runtime.row_slices(x.shape[0], x.device)


def cat_results(parts: list[AttackResult]) -> AttackResult:
    """One AttackResult from the results of consecutive row chunks."""
    def cat(key: str, values: list) -> torch.Tensor | None:
        if all(v is None for v in values):
            return None
        if not all(isinstance(v, torch.Tensor) and v.dim() >= 1 for v in values):
            raise TypeError(f"cannot join {key!r} across row chunks: not a per-example tensor")
        return torch.cat(values)

    extra = {k: cat(k, [p.extra[k] for p in parts]) for k in parts[0].extra}
    return AttackResult(cat("x_adv", [p.x_adv for p in parts]), cat("success", [p.success for p in parts]),
                        cat("queries", [p.queries for p in parts]), extra)


def in_row_chunks(kernel: Callable[..., AttackResult]) -> Callable[..., AttackResult]:
    """Wrap a deterministic white-box kernel `kernel(model, x, y, **kw)` so that a batch
    larger than one chunk is attacked chunk by chunk and the results joined.

    The batch (shapes, [0, 1]) is checked whole first; hyper-parameters are checked by
    the kernel on the first chunk, before it computes anything. Kernels that draw random numbers must not use this (the
    draws would depend on the chunking); PGD draws its start for the whole batch and
    chunks its iterations itself.
    """
    @functools.wraps(kernel)
    def run(model, x, y, **kw):
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            return kernel(model, x, y, **kw)
        slices = row_slices(x)
        if len(slices) <= 1:
            return kernel(model, x, y, **kw)
        # Whole-batch checks before the first chunk runs: a bad row in the last chunk
        # must fail before any compute, and a shape error must name the caller's shapes.
        checks.images(x)
        checks.labels("y", y, x.shape[0])
        target = kw.pop("target", None)
        if target is not None:
            checks.labels("target", target, x.shape[0])
        parts = [kernel(model, x[s], y[s], target=None if target is None else target[s], **kw)
                 for s in slices]
        return cat_results(parts)

    return run
