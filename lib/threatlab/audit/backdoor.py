"""Audit section "backdoor scan": Neural Cleanse on the user's model.

`defenses.neural_cleanse` (Wang et al. 2019, "Neural Cleanse: Identifying and Mitigating
Backdoor Attacks in Neural Networks", IEEE S&P) reverse-engineers, for every class, the
smallest mask-and-pattern trigger that sends clean images to it; a class whose mask is
an outlier on the small side (anomaly index > 2, the paper's bar) is the suspected
target of a backdoor. Survey: poisoning attacks, He et al. arXiv 1911.12562. A model
without a flagged class is "none flagged", which is not a proof of absence: triggers
larger than the scan finds, or several targets, evade it (the paper's own limits).
"""
from __future__ import annotations

from typing import Any

import torch

from ..defenses.neural_cleanse import neural_cleanse

__all__ = ["THREAT_MODEL", "run_backdoor"]

THREAT_MODEL = ("A poisoner who planted a trigger during training so that any input carrying it is "
                "classified as one target class; the defender scans with white-box access and clean images.")


def run_backdoor(model: torch.nn.Module, x_clean: torch.Tensor, *, num_classes: int, steps: int) -> dict[str, Any]:
    """Neural Cleanse on `x_clean` (shuffled clean test images): per-class mask L1,
    trigger success and anomaly index; the flagged classes and the suspected target."""
    nc = neural_cleanse(model, x_clean, num_classes=num_classes, steps=steps)
    idx = nc.anomaly_index.double()
    suspected = max(nc.flagged_classes, key=lambda c: float(idx[c])) if nc.flagged_classes else None
    return {"threat_model": THREAT_MODEL, "n_clean": int(x_clean.shape[0]), "steps": steps,
            "threshold": nc.threshold, "l1": nc.l1.tolist(), "trigger_success": nc.success.tolist(),
            "anomaly_index": idx.tolist(), "max_anomaly_index": float(idx.max()),
            "flagged_classes": list(nc.flagged_classes), "suspected_target": suspected,
            "verdict": (f"class {suspected} flagged (anomaly index {float(idx[suspected]):.2f} > {nc.threshold:g})"
                        if suspected is not None else "none flagged"),
            "masks": nc.masks, "diverged": [int(c) for c in nc.diverged.nonzero().squeeze(1).tolist()]
            if nc.diverged is not None else []}
