"""The channels-last view the white-box evasion kernels run the model through
(threatlab.attacks.layout): same function up to float rounding, same adversarials up to
the odd sign flip, the caller's model untouched, wrappers and attributes kept."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from threatlab import attacks, data, models
from threatlab.attacks import adversarial, layout


@pytest.fixture(scope="module")
def cnn():
    """SmallCNN trained one epoch on 2000 MNIST images (an untrained net's gradients are
    all near zero, where any rounding decides a sign)."""
    x, y = data.load("mnist", "train", n=2000)
    model = models.build("cnn", in_shape=(1, 28, 28), seed=0)
    models.train(model, x, y, epochs=1, batch_size=64, seed=0, progress=False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@pytest.fixture(scope="module")
def mnist_test():
    return data.load("mnist", "test", n=96)


def _batch(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_models_without_4d_parameters_and_non_modules_pass_through():
    mlp = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    assert layout.channels_last(mlp) is mlp
    assert layout.channels_last("not a model") == "not a model"


def test_view_computes_the_same_function_and_leaves_the_model_alone(cnn):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    view = layout.channels_last(cnn)
    assert isinstance(view, layout.ChannelsLastView) and layout.channels_last(view) is view
    assert view.num_classes == cnn.num_classes and view.in_shape == cnn.in_shape
    assert [id(p) for p in view.parameters()] == [id(p) for p in cnn.parameters()]
    x, y = _batch()
    grads = []
    for m in (cnn, view):
        xa = x.clone().requires_grad_(True)
        out = m(xa)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(out, y, reduction="sum"), xa)
        grads.append((out.detach(), g))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-6)
    # The caller's parameters keep their values and their NCHW layout.
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous()
    assert not cnn.features[4].weight.is_contiguous(memory_format=torch.channels_last)


class _Probe(nn.Module):
    """Records the layout of its second conv weight and counts rows, as PassCounter does."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)   # [4, 4, 3, 3]: NCHW is not channels-last
        self.head = nn.Linear(4 * 28 * 28, 10)
        self.rows, self.layouts = 0, set()

    def forward(self, x):
        self.rows += x.shape[0]
        self.layouts.add(self.conv2.weight.is_contiguous(memory_format=torch.channels_last))
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def test_registered_white_box_kernels_get_the_view_and_wrappers_still_count():
    probe = _Probe().eval()
    x, y = _batch(8)
    res = attacks.get("pgd_linf")(probe, x, y, eps=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    assert res.x_adv.shape == x.shape
    assert probe.rows >= 8 * 4                   # 3 steps + the success forward, all counted
    assert probe.layouts == {True}               # every forward saw channels-last weights
    assert probe.conv2.weight.is_contiguous()    # the caller's weight as it was
    assert not probe.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    # Outside the kernel the model runs in its own layout again.
    probe.layouts.clear()
    probe(x)
    assert probe.layouts == {False}


@pytest.mark.parametrize("name, kw, pixels", [
    ("pgd_linf", dict(eps=0.1, steps=10), 1e-2),
    ("pgd_l2", dict(eps=1.5, steps=10), 1e-2),
    ("fgsm", dict(eps=0.1), 1e-2),
    ("deepfool", dict(steps=20), 1e-2),
    # APGD's step-size schedule and momentum carry one changed step into every later
    # one: its adversarials end elsewhere more often (5.7 % of these pixels, 1.6 % on
    # 200 other images), what it finds (the success flags) stays the same.
    ("apgd_ce", dict(eps=0.1, steps=10), 0.1),
])
def test_adversarials_match_the_nchw_model_up_to_rounding(cnn, mnist_test, name, kw, pixels):
    """What the layout may change: a pixel here and there where a sign step, a clip at
    the [0, 1] box or the ball's boundary meets a rounding difference (measured on 200
    images: 0.1 % of the pixels under PGD, 1.6 % under APGD; no success flag), nothing
    more: at most one of 96 success flags."""
    x, y = mnist_test
    kernel = attacks.get(name)
    raw = kernel.__wrapped__                     # the kernel without the entry checks and the view
    seeded = (lambda: {"generator": torch.Generator().manual_seed(3)}) if name != "deepfool" else dict
    a = kernel(cnn, x, y, **kw, **seeded())
    b = raw(cnn, x, y, **kw, **seeded())
    moved = (a.x_adv - b.x_adv).abs() > 1e-4
    assert moved.float().mean() <= pixels, f"{name}: {int(moved.sum())} of {moved.numel()} pixels differ"
    assert (a.success != b.success).sum() <= 1
