"""threatlab.runtime: the progress switches (THREATLAB_NO_PROGRESS, TQDM_DISABLE)."""
from __future__ import annotations

import pytest
import torch

from threatlab import models, runtime


def _train_with_bar(capsys) -> str:
    """Train a tiny MLP with progress=True (an explicit request for a bar); return stderr."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    model = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    models.train(model, x, y, epochs=1, batch_size=8, progress=True, desc="bar-probe")
    return capsys.readouterr().err


@pytest.fixture
def no_switches(monkeypatch):
    for var in (runtime.NO_PROGRESS_ENV, runtime.TQDM_DISABLE_ENV):
        monkeypatch.delenv(var, raising=False)


def test_bar_draws_without_switches(no_switches, capsys):
    assert not runtime.progress_disabled()
    assert "bar-probe" in _train_with_bar(capsys)       # the probe can see a bar


@pytest.mark.parametrize("var", [runtime.NO_PROGRESS_ENV, runtime.TQDM_DISABLE_ENV])
@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_either_switch_silences_an_explicitly_requested_bar(no_switches, monkeypatch, capsys,
                                                            var, value):
    monkeypatch.setenv(var, value)
    assert runtime.progress_disabled()
    assert _train_with_bar(capsys) == ""


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_false_values_leave_bars_on(no_switches, monkeypatch, value):
    monkeypatch.setenv(runtime.TQDM_DISABLE_ENV, value)
    assert not runtime.progress_disabled()


def test_seeded_draws_match_torch_on_the_generators_device():
    """runtime's draws are torch's own draws on the generator's device, then moved: on a
    CPU generator exactly the numbers torch.rand/randn/randint/randperm give."""
    from threatlab import runtime

    def g():
        return torch.Generator().manual_seed(7)

    assert torch.equal(runtime.rand((3, 4), g()), torch.rand(3, 4, generator=g()))
    assert torch.equal(runtime.randn((5,), g(), dtype=torch.float64),
                       torch.randn(5, generator=g(), dtype=torch.float64))
    assert torch.equal(runtime.randint(1, 9, (6,), g()), torch.randint(1, 9, (6,), generator=g()))
    assert torch.equal(runtime.randperm(10, g()), torch.randperm(10, generator=g()))
    moved = runtime.rand((2,), g(), device="meta")
    assert moved.device.type == "meta" and runtime.rand((2,), g()).device.type == "cpu"
