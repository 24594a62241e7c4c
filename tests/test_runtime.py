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
