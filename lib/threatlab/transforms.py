"""Differentiable, seeded random transformations: the "physical world" of EOT.

Athalye, Engstrom, Ilyas, Kwok (2018), "Synthesizing Robust Adversarial Examples",
arXiv 1707.07397: a perturbation that must survive a camera has to fool the model in
expectation over a distribution of transformations. `RandomTransform` is such a
distribution for small grey or colour images: a random shift (pixels) and rotation
(degrees) applied together by bilinear resampling, a Gaussian blur of random width, and
additive Gaussian noise, in that order, each drawn independently per row. Every step is
differentiable in the input (`grid_sample`, convolution, addition, clamp), so attacks
can back-propagate through it, and every draw comes from the `torch.Generator` passed
in, so the same seed gives the same transformations. `draw_transform` and
`apply_transform` split a call in two (the parameters can be inspected or reused);
`augment` / `augmentation_hook` train with F17's distribution
(`F17_AUGMENTATION`).

    >>> t = RandomTransform(("shift", "rotate", "noise", "blur"), max_shift=3, max_angle=20)
    >>> x_t = t(x, generator=torch.Generator().manual_seed(0))   # same shape as x
    >>> success_under_transforms(model, x_adv, y, t, draws=20, generator=g)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> "TransformDraw":
        """One transformation per row of x, drawn from `generator` (`draw_transform`)."""
        return draw_transform(x, generator, kinds=self.kinds, max_shift=self.max_shift, max_angle=self.max_angle,
                              max_blur=self.max_blur, noise_std=self.noise_std)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return apply_transform(x, self.draw(x, generator))


@dataclass
class TransformDraw:
    """The parameters of one transformation per row, as `draw_transform` draws them.

    shift:  [n, 2] pixels (x, y), or None (no shift and no rotation: no resampling).
    angle:  [n] radians, or None (with shift: no rotation).
    sigma:  [n] blur widths in pixels, or None (no blur); radius: the blur kernel's
            half-width in pixels (ceil(2 * max_blur), at least 1).
    noise:  [n, C, H, W] additive noise in input units, or None.
    """

    shift: torch.Tensor | None
    angle: torch.Tensor | None
    sigma: torch.Tensor | None
    radius: int
    noise: torch.Tensor | None


def _check_images(x) -> None:
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ConfigError(f"x must be images [n, C, H, W]; got {tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")


def draw_transform(x: torch.Tensor, generator: torch.Generator | None = None, *, kinds: Sequence[str] = KINDS,
                   max_shift: float = 2.0, max_angle: float = 15.0, max_blur: float = 1.0,
                   noise_std: float = 0.1) -> TransformDraw:
    """Draw one transformation per row of `x` (images [n, C, H, W]; only its shape,
    device and dtype are read) from `generator`; `apply_transform` applies it.

    Per row, independently: rotation uniform in [-max_angle, max_angle] degrees, shift
    uniform in [-max_shift, max_shift] pixels per axis, blur sigma uniform in
    [0, max_blur] pixels (floored at 1e-3), noise N(0, noise_std^2) per element; kinds
    left out are not drawn. Draws come in that order, on the generator's device, so
    the same seed gives the same draws on every device and the same draws as
    `RandomTransform` with these settings.

    Example:
        >>> d = draw_transform(x, torch.Generator().manual_seed(0), **F17_AUGMENTATION)
        >>> d.shift.abs().max() <= 2, d.sigma.max() <= 0.5
        >>> x_t = apply_transform(x, d)
    """
    _check_images(x)
    t = RandomTransform(kinds, max_shift=max_shift, max_angle=max_angle, max_blur=max_blur, noise_std=noise_std)
    n, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    u = lambda *s: _draw("uniform", s, generator, dev, dt)  # noqa: E731
    shift = angle = sigma = noise = None
    if "shift" in t.kinds or "rotate" in t.kinds:
        angle = (2 * u(n) - 1) * math.radians(t.max_angle) if "rotate" in t.kinds else torch.zeros(n, device=dev, dtype=dt)
        shift = (2 * u(n, 2) - 1) * t.max_shift if "shift" in t.kinds else torch.zeros(n, 2, device=dev, dtype=dt)
    if "blur" in t.kinds and t.max_blur > 0:
        sigma = (u(n) * t.max_blur).clamp_min(1e-3)
    if "noise" in t.kinds and t.noise_std > 0:
        noise = t.noise_std * _draw("normal", (n, c, h, w), generator, dev, dt)
    return TransformDraw(shift=shift, angle=angle, sigma=sigma, radius=max(1, math.ceil(2 * t.max_blur)), noise=noise)


def apply_transform(x: torch.Tensor, d: TransformDraw) -> torch.Tensor:
    """Apply drawn transformations to x [n, C, H, W] (differentiable in x): shift and
    rotation together by bilinear resampling (areas moved in from outside are 0), then
    the Gaussian blur, then the noise; clamped to [0, 1]. Returns [n, C, H, W]."""
    _check_images(x)
    if not isinstance(d, TransformDraw):
        raise ConfigError(f"d must be a TransformDraw (from draw_transform); got {type(d).__name__}")
    n, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    out = x
    if d.shift is not None:
        cos, sin = d.angle.cos(), d.angle.sin()
        # affine_grid works in [-1, 1] coordinates: a pixel is 2 / size of them.
        theta = torch.stack([torch.stack([cos, -sin, -2 * d.shift[:, 0] / w], 1),
                             torch.stack([sin, cos, -2 * d.shift[:, 1] / h], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if d.sigma is not None:
        radius = d.radius
        taps = torch.arange(-radius, radius + 1, device=dev, dtype=dt)
        k1 = torch.exp(-taps[None] ** 2 / (2 * d.sigma[:, None] ** 2))
        k1 = k1 / k1.sum(1, keepdim=True)  # [n, K]; sigma ~ 0 gives the identity
        k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)[:, None]  # [n*c, 1, K, K]
        out = F.conv2d(out.reshape(1, n * c, h, w), k2, padding=radius, groups=n * c).reshape(n, c, h, w)
    if d.noise is not None:
        out = out + d.noise
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


# ------------------------------------------------------- F17's augmentation

#: F17's transformation distribution, fixed before any run (no calibration
#: search): shift <= 2 px, rotation <= 15 degrees, blur sigma <= 0.5 px, Gaussian noise
#: std 0.05. The target is trained with it as augmentation and attacked under it.
F17_AUGMENTATION = {"max_shift": 2.0, "max_angle": 15.0, "max_blur": 0.5, "noise_std": 0.05}


def f17_transform() -> RandomTransform:
    """F17's distribution (`F17_AUGMENTATION`, all four kinds) as a `RandomTransform`,
    for EOT and for `success_under_transforms` / `fooled_in_most_draws`."""
    return RandomTransform(KINDS, **F17_AUGMENTATION)


def augment(x: torch.Tensor, generator: torch.Generator | None = None, **params: float) -> torch.Tensor:
    """x [n, C, H, W] with one fresh transformation per row: `draw_transform` with
    F17_AUGMENTATION (overridden by `params`), then `apply_transform`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x_aug = augment(x, g)               # F17's distribution
        >>> x_aug.shape == x.shape
    """
    return apply_transform(x, draw_transform(x, generator, **{**F17_AUGMENTATION, **params}))


def augmentation_hook(**params: float):
    """A `models.train(perturb=...)` hook that augments every training batch with
    `augment` (F17_AUGMENTATION, overridden by `params`), drawing from the training
    call's own generator: one seed fixes the batch order and every draw.

    Example:
        >>> hook = augmentation_hook()
        >>> models.train(model, x, y, epochs=5, seed=0, perturb=hook)
        >>> accuracy_under_transforms(model, x_test, y_test, f17_transform(), generator=g)
    """
    RandomTransform(KINDS, **{**F17_AUGMENTATION, **params})  # a bad value fails now, not at the first batch

    def perturb(model, xb, yb, step, generator):
        with torch.no_grad():
            return augment(xb, generator, **params)

    return perturb
