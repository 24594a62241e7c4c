"""What an attack kernel returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttackResult:
    """Outcome of an evasion attack on a batch.

    x_adv:    adversarial inputs, same shape as the clean batch, in [0, 1].
    success:  bool per example, re-evaluated from the model's predictions on x_adv
              (untargeted: prediction != y; targeted: prediction == target).
    queries:  int64 per example, taken from the oracle's own counter (black-box
              attacks), or None for white-box kernels.
    extra:    attack-specific tensors (e.g. the C&W constant found per example).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())
