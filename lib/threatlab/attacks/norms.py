"""Threat-model geometry: one small object per norm ball, shared by FGSM, BIM and PGD.

After MadryLab/robustness `robustness/attack_steps.py`: an attack is a loop of
`step` (ascend the loss in the norm's steepest direction) and `project` (back into the
eps-ball around the clean input and into the [0, 1] box), started at `x` or at
`random_init`. Norms are per example, over the flattened non-batch dimensions.

    >>> ball = LinfBall(0.3)
    >>> x_adv = ball.random_init(x, generator)
    >>> x_adv = ball.project(ball.step(x_adv, grad, 0.01), x)
"""
from __future__ import annotations

import torch

# Floor for per-example norms used as divisors: a zero gradient (saturated softmax,
# gradient masking) must give a zero step, not NaN.
_TINY = 1e-12


def flat_norm(t: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Per-example Lp norm over all non-batch dims: shape [n, ...] -> [n]."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), ord=p, dim=1)


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape [n] to [n, 1, ..., 1] so it broadcasts against `like`."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _rand(kind: str, x: torch.Tensor, generator: torch.Generator | None,
          shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Uniform [0, 1) or standard normal noise (shaped like x unless `shape`), on x's
    device and dtype.

    A CPU generator with a CUDA `x` is the usual notebook set-up (seed_everything
    returns a CPU generator), so draw on the generator's device and move the result:
    the same seed then gives the same start on every device.
    """
    device = generator.device if generator is not None else x.device
    draw = torch.rand if kind == "uniform" else torch.randn
    noise = draw(x.shape if shape is None else shape, generator=generator, device=device,
                 dtype=x.dtype)
    return noise.to(x.device)


class LinfBall:
    """The L-inf ball {x' : max_i |x'_i - x_i| <= eps} intersected with [0, 1]^d."""

    norm = "linf"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Nearest point of the ball-box intersection (exact: both are boxes)."""
        delta = torch.clamp(x_adv - x, -self.eps, self.eps)
        return torch.clamp(x + delta, 0.0, 1.0)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        """Steepest ascent for L-inf: step_size * sign(grad) (zero where grad is zero)."""
        return x_adv + step_size * grad.sign()

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform sample in the ball, clipped to [0, 1] (Madry et al.'s random start)."""
        noise = (2 * _rand("uniform", x, generator) - 1) * self.eps
        return torch.clamp(x + noise, 0.0, 1.0)

    def __repr__(self) -> str:
        return f"LinfBall(eps={self.eps})"


class L2Ball:
    """The L2 ball {x' : ||x' - x||_2 <= eps} intersected with [0, 1]^d, per example."""

    norm = "l2"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Radial projection onto the ball, then clip to the box.

        Clipping after the radial step keeps the point in the ball: x is in the box,
        so clipping x + delta only shrinks each |delta_i|.
        """
        delta = x_adv - x
        norms = flat_norm(delta)
        scale = torch.clamp(self.eps / norms.clamp_min(_TINY), max=1.0)
        return torch.clamp(x + delta * _per_example(scale, delta), 0.0, 1.0)

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        """Steepest ascent for L2: step_size * grad / ||grad||_2 (zero for a zero grad)."""
        unit = grad / _per_example(flat_norm(grad).clamp_min(_TINY), grad)
        return x_adv + step_size * unit

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform sample in the ball (Gaussian direction, radius eps * U^(1/d)), clipped."""
        direction = _rand("normal", x, generator)
        direction = direction / _per_example(flat_norm(direction).clamp_min(_TINY), x)
        d = x[0].numel()
        u = _rand("uniform", x, generator, shape=(x.shape[0],))
        radius = self.eps * u.pow(1.0 / d)
        return torch.clamp(x + direction * _per_example(radius, x), 0.0, 1.0)

    def __repr__(self) -> str:
        return f"L2Ball(eps={self.eps})"


BALLS = {"linf": LinfBall, "l2": L2Ball}
