"""threatlab.pooling: the oracle's max-pooling rewrite gives F.max_pool2d's exact bits
where it applies, and leaves every other call to PyTorch."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from threatlab import pooling
from threatlab.oracle import BlackBox
from threatlab.pooling import fast_max_pool


def _counting(monkeypatch):
    calls = []
    real = pooling.max_pool2d_exact

    def spy(x, kh, kw):
        calls.append((kh, kw))
        return real(x, kh, kw)
    monkeypatch.setattr(pooling, "max_pool2d_exact", spy)
    return calls


@pytest.mark.parametrize("shape,kernel", [((5, 3, 8, 8), 2), ((5, 3, 9, 7), 2), ((4, 2, 9, 10), 3),
                                          ((4, 2, 9, 10), (2, 3)), ((3, 10, 11), 2)])
def test_rewrite_is_bit_identical_and_taken(monkeypatch, shape, kernel):
    calls = _counting(monkeypatch)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    x.view(-1)[::17] = 0.0  # ties inside windows
    x.view(-1)[5] = float("nan")  # propagates in both
    ref = F.max_pool2d(x, kernel)
    with torch.no_grad(), fast_max_pool():
        out = F.max_pool2d(x, kernel)
        mod = nn.MaxPool2d(kernel)(x)
    assert len(calls) == 2
    for got in (out, mod):
        assert got.shape == ref.shape and got.is_contiguous()
        assert torch.equal(got.isnan(), ref.isnan())
        assert torch.equal(got.nan_to_num(), ref.nan_to_num())


@pytest.mark.parametrize("kw", [dict(kernel_size=2, stride=1), dict(kernel_size=2, padding=1),
                                dict(kernel_size=2, ceil_mode=True), dict(kernel_size=2, dilation=2),
                                dict(kernel_size=4), dict(kernel_size=2, return_indices=True)])
def test_other_calls_run_unchanged(monkeypatch, kw):
    calls = _counting(monkeypatch)
    x = torch.randn(2, 3, 9, 9)
    ref = F.max_pool2d(x, **kw)
    with torch.no_grad(), fast_max_pool():
        out = F.max_pool2d(x, **kw)
    assert calls == []
    for a, b in zip(out if isinstance(out, tuple) else (out,), ref if isinstance(ref, tuple) else (ref,)):
        assert torch.equal(a, b)


def test_channels_last_and_autograd_are_left_alone(monkeypatch):
    calls = _counting(monkeypatch)
    x = torch.randn(2, 3, 8, 8)
    x[:, :, 0, :] = 1.0  # ties: max-pooling sends their gradient to one element
    with fast_max_pool():
        F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2)
        xg = x.clone().requires_grad_(True)
        F.max_pool2d(xg, 2).sum().backward()
    assert calls == []
    ref = x.clone().requires_grad_(True)
    F.max_pool2d(ref, 2).sum().backward()
    assert torch.equal(xg.grad, ref.grad)


def test_oracle_answers_are_bit_identical(monkeypatch):
    calls = _counting(monkeypatch)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 14 * 14, 10)).eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)
    out = BlackBox(model, mode="probs")(x)
    assert calls and torch.equal(out, ref)
