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
              (untargeted: prediction != y; targeted: prediction == target); None
              when the caller asked a kernel not to evaluate (`evaluate=False`: the
              adversarials only, e.g. for adversarial training, saving one forward).
    queries:  int64 per example, taken from the oracle's own counter (black-box
              attacks), or None for white-box kernels.
    extra:    attack-specific tensors (e.g. the C&W constant found per example).
    """

    x_adv: torch.Tensor
    success: torch.Tensor | None
    queries: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        if self.success is None:
            raise ValueError("success was not evaluated (the kernel ran with evaluate=False); "
                             "run it with evaluate=True, or evaluate model(x_adv) yourself")
        return float(self.success.float().mean())
