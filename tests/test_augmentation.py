"""F17's augmentation distribution (register v3): deterministic draws from a
torch.Generator, ranges respected, RandomTransform unchanged by the draw/apply split,
and usable as a training hook."""
from __future__ import annotations

import math

import pytest
import torch

from threatlab import models
from threatlab.errors import ConfigError
from threatlab.transforms import (F17_AUGMENTATION, KINDS, RandomTransform, apply_transform, augment,
                                  augmentation_hook, draw_transform, f17_transform)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_f17_values():
    assert F17_AUGMENTATION == {"max_shift": 2.0, "max_angle": 15.0, "max_blur": 0.5, "noise_std": 0.05}
    t = f17_transform()
    assert (t.max_shift, t.max_angle, t.max_blur, t.noise_std) == (2.0, 15.0, 0.5, 0.05)


def test_same_seed_same_draws_and_images():
    x = torch.rand(50, 1, 28, 28, generator=gen(9))
    a, b = draw_transform(x, gen(3), **F17_AUGMENTATION), draw_transform(x, gen(3), **F17_AUGMENTATION)
    for f in ("shift", "angle", "sigma", "noise"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert torch.equal(augment(x, gen(3)), augment(x, gen(3)))
    assert torch.equal(augment(x, gen(3)), apply_transform(x, a))
    assert not torch.equal(augment(x, gen(3)), augment(x, gen(4)))
    # the same numbers as RandomTransform with these settings
    assert torch.equal(f17_transform()(x, gen(3)), augment(x, gen(3)))


def test_ranges_respected():
    x = torch.rand(4000, 1, 6, 6, generator=gen(1))
    d = draw_transform(x, gen(2), **F17_AUGMENTATION)
    assert d.shift.shape == (4000, 2) and float(d.shift.abs().max()) <= 2.0
    assert float(d.shift.abs().max()) > 1.9  # the whole range is used
    deg = d.angle * 180 / math.pi
    assert float(deg.abs().max()) <= 15.0 + 1e-5 and float(deg.abs().max()) > 14.5
    assert float(d.sigma.min()) >= 1e-3 and float(d.sigma.max()) <= 0.5 and float(d.sigma.max()) > 0.49
    assert d.radius == 1
    assert float(d.noise.mean()).__abs__() < 0.002
    assert float(d.noise.std()) == pytest.approx(0.05, rel=0.02)
    out = apply_transform(x, d)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_identity_when_every_range_is_zero():
    x = torch.rand(5, 1, 8, 8, generator=gen(0))
    out = augment(x, gen(0), max_shift=0.0, max_angle=0.0, max_blur=0.0, noise_std=0.0)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_training_hook_is_deterministic():
    x = torch.rand(64, 1, 8, 8, generator=gen(5))
    y = torch.arange(64) % 10
    params = []
    for _ in range(2):
        m = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=0)
        models.train(m, x, y, epochs=2, batch_size=32, seed=0, progress=False, perturb=augmentation_hook())
        params.append([p.detach().clone() for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*params))
    m = models.build("mlp", in_shape=(1, 8, 8), hidden=(16,), seed=0)
    models.train(m, x, y, epochs=2, batch_size=32, seed=0, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(params[0], m.parameters()))  # the hook did something


def test_bad_parameters_fail_early():
    with pytest.raises(ConfigError, match="max_angle=200"):
        augmentation_hook(max_angle=200)
    with pytest.raises(ConfigError, match="noise_std=-1"):
        draw_transform(torch.zeros(2, 1, 4, 4), gen(0), noise_std=-1)
    with pytest.raises(ConfigError, match="images"):
        augment(torch.zeros(4, 4), gen(0))
    with pytest.raises(ConfigError, match="TransformDraw"):
        apply_transform(torch.zeros(2, 1, 4, 4), {"shift": None})
    assert set(KINDS) == {"shift", "rotate", "blur", "noise"}
