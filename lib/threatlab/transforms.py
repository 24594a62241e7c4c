"""Differentiable, seeded random transformations: the "physical world" of EOT.

Athalye, Engstrom, Ilyas, Kwok (2018), "Synthesizing Robust Adversarial Examples",
arXiv 1707.07397: a perturbation that must survive a camera has to fool the model in
expectation over a distribution of transformations. `RandomTransform` is such a
distribution for small grey or colour images: a random shift (pixels) and rotation
(degrees) applied together by bilinear resampling, a Gaussian blur of random width, and
additive Gaussian noise, in that order, each drawn independently per row. Every step is
differentiable in the input (`grid_sample`, convolution, addition, clamp), so attacks
can back-propagate through it, and every draw comes from the `torch.Generator` passed
in, so the same seed gives the same transformations.

    >>> t = RandomTransform(("shift", "rotate", "noise", "blur"), max_shift=3, max_angle=20)
    >>> x_t = t(x, generator=torch.Generator().manual_seed(0))   # same shape as x
    >>> success_under_transforms(model, x_adv, y, t, draws=20, generator=g)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import validate
from .errors import ConfigError

#: The transformation kinds `RandomTransform` knows.
KINDS = ("shift", "rotate", "blur", "noise")


def _draw(kind: str, shape, generator, device, dtype) -> torch.Tensor:
    # Draw on the generator's device, then move: the same seed gives the same draws on
    # every device (the notebooks use a CPU generator).
    gdev = generator.device if generator is not None else torch.device("cpu")
    fn = torch.rand if kind == "uniform" else torch.randn
    return fn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


class RandomTransform:
    """A distribution of image transformations; calling it draws one per row.

    Args:
        kinds: which of KINDS to apply (any non-empty subset; order is fixed:
            shift+rotate, blur, noise), default all four.
        max_shift: shift in pixels, uniform in [-max_shift, max_shift] per axis (>= 0), default 2.
        max_angle: rotation in degrees, uniform in [-max_angle, max_angle] (>= 0), default 15.
        max_blur: Gaussian blur sigma in pixels, uniform in [0, max_blur] (>= 0), default 1.
        noise_std: standard deviation of additive Gaussian noise, input units (>= 0), default 0.1.
    Shapes: x [n, C, H, W] -> [n, C, H, W], clamped to [0, 1]; areas moved in from
    outside the image are 0 (black, the MNIST background).
    """

    def __init__(self, kinds: Sequence[str] = KINDS, *, max_shift: float = 2.0, max_angle: float = 15.0,
                 max_blur: float = 1.0, noise_std: float = 0.1):
        if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not kinds:
            raise ConfigError(f"kinds={kinds!r} must be a non-empty list drawn from {list(KINDS)}")
        for k in kinds:
            validate.choice("transformation", k, KINDS)
        inf = math.inf
        validate.number("max_shift", max_shift, low=0, high=inf, high_open=True)
        validate.number("max_angle", max_angle, low=0, high=180)
        validate.number("max_blur", max_blur, low=0, high=inf, high_open=True)
        validate.number("noise_std", noise_std, low=0, high=inf, high_open=True)
        self.kinds = tuple(kinds)
        self.max_shift, self.max_angle = float(max_shift), float(max_angle)
        self.max_blur, self.noise_std = float(max_blur), float(noise_std)

    def __repr__(self) -> str:
        return (f"RandomTransform(kinds={list(self.kinds)}, max_shift={self.max_shift}, "
                f"max_angle={self.max_angle}, max_blur={self.max_blur}, noise_std={self.noise_std})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() != 4:
            raise ConfigError(f"x must be images [n, C, H, W]; got {tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        n, c, h, w = x.shape
        dev, dt = x.device, x.dtype
        u = lambda *s: _draw("uniform", s, generator, dev, dt)  # noqa: E731
        out = x
        if "shift" in self.kinds or "rotate" in self.kinds:
            angle = (2 * u(n) - 1) * math.radians(self.max_angle) if "rotate" in self.kinds else torch.zeros(n, device=dev, dtype=dt)
            shift = (2 * u(n, 2) - 1) * self.max_shift if "shift" in self.kinds else torch.zeros(n, 2, device=dev, dtype=dt)
            cos, sin = angle.cos(), angle.sin()
            # affine_grid works in [-1, 1] coordinates: a pixel is 2 / size of them.
            theta = torch.stack([torch.stack([cos, -sin, -2 * shift[:, 0] / w], 1),
                                 torch.stack([sin, cos, -2 * shift[:, 1] / h], 1)], 1)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if "blur" in self.kinds and self.max_blur > 0:
            sigma = (u(n) * self.max_blur).clamp_min(1e-3)
            radius = max(1, math.ceil(2 * self.max_blur))
            taps = torch.arange(-radius, radius + 1, device=dev, dtype=dt)
            k1 = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))
            k1 = k1 / k1.sum(1, keepdim=True)  # [n, K]; sigma ~ 0 gives the identity
            k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)[:, None]  # [n*c, 1, K, K]
            out = F.conv2d(out.reshape(1, n * c, h, w), k2, padding=radius, groups=n * c).reshape(n, c, h, w)
        if "noise" in self.kinds and self.noise_std > 0:
            out = out + self.noise_std * _draw("normal", (n, c, h, w), generator, dev, dt)
        return out.clamp(0.0, 1.0)


@torch.no_grad()
def success_under_transforms(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                             transform: RandomTransform, *, draws: int = 20,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Per example, the fraction of `draws` fresh transformations under which the model
    misclassifies the transformed x_adv (untargeted: prediction != y). Returns [n] float."""
    validate.positive("draws", draws, integer=True)
    if not isinstance(transform, RandomTransform):
        raise ConfigError(f"transform must be a RandomTransform; got {type(transform).__name__}")
    fooled = torch.zeros(x_adv.shape[0], device=x_adv.device)
    for _ in range(draws):  # a loop over draws, not examples
        fooled += (model(transform(x_adv, generator)).argmax(1) != y).float()
    return (fooled / draws).cpu()


def fooled_in_most_draws(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                         transform: RandomTransform, *, draws: int = 20, threshold: float = 0.9,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Per example, whether the model misclassifies x_adv in at least `threshold` of
    `draws` fresh transformations (bool [n], on the CPU): the robust-fooling metric of
    F17 (Athalye et al. 2018 report the mean; this counts examples that survive nearly
    every draw). With x_adv = clean x it is the baseline: clean images the distribution
    alone fools.

    Args:
        draws: fresh transformations per example (int > 0), default 20.
        threshold: fraction of draws that must fool the model, in (0, 1], default 0.9.
    """
    validate.number("threshold", threshold, low=0, high=1, low_open=True)
    rate = success_under_transforms(model, x_adv, y, transform, draws=draws, generator=generator)
    # Compare counts, not fractions: 18 of 20 is exactly 0.9 and must count.
    return torch.round(rate * draws) >= math.ceil(threshold * draws - 1e-9)


@torch.no_grad()
def accuracy_under_transforms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                              transform: RandomTransform, *, draws: int = 20,
                              generator: torch.Generator | None = None) -> float:
    """The model's accuracy on transformed clean images, averaged over examples and
    `draws` fresh transformations each: how well the model handles the distribution."""
    return float(1.0 - success_under_transforms(model, x, y, transform, draws=draws,
                                                generator=generator).mean())
