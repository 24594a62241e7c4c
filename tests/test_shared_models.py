"""One converged model per (architecture, data set, training set, seed, rule): the
checkpoint cache's key decides sharing, so a model one notebook trained is the model
another notebook loads when both ask for the same thing, and never when they do not."""
from __future__ import annotations

import pytest
import torch

from threatlab import data, models
from threatlab.protocols import evasion
from threatlab.protocols import extraction as px


@pytest.fixture()
def small(monkeypatch, tmp_path):
    """1,200 MNIST training rows (1,000 of them the G1 hold-out) and 200 test rows,
    loaded before the cache root moves to an empty folder for the checkpoints."""
    x, y = data.load("mnist", "train", n=1200)
    xt, yt = data.load("mnist", "test", n=200)
    monkeypatch.setenv("THREATLAB_CACHE", str(tmp_path / "cache"))
    return x, y, xt, yt


def _task(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> px.AttackerData:
    # Notebook 01's victims train on AttackerData.x_train (the first n_train rows).
    return px.AttackerData("mnist", "fashion_mnist", x, y, x[:10], x[:10], xt, yt, [], [])


def test_a_victim_notebook_01_trained_is_the_target_notebook_04_loads(small):
    x, y, xt, yt = small
    victims, infos = px.train_victims(_task(x, y, xt, yt), victim_arch="mlp", mlp_hidden=16, seed=3,
                                      progress=False)
    assert not infos["victim"]["from_cache"]
    g1 = evasion.g1_targets(["mlp"], "mnist", x, y, xt, yt, seed=3, num_classes=10)
    assert g1["train_seconds"]["mlp"] is None                 # loaded, not trained again
    got = g1["models"]["mlp"]
    for (k, a), (_, b) in zip(victims["victim"].state_dict().items(), got.state_dict().items()):
        assert torch.equal(a, b), k
    assert len(list(models.checkpoint_dir().glob("*.safetensors"))) == 3   # lr, mlp (F01) and the victim


@pytest.mark.parametrize("change", ["rows", "seed", "arch_params", "rule"])
def test_a_different_request_is_a_different_model(small, change):
    x, y, _, _ = small
    base = dict(arch="mlp", dataset_name="mnist", x=x, y=y, train_params=None, seed=3, in_shape=(1, 28, 28),
                num_classes=10, arch_params=None, early_stop=True)
    other = dict(base)
    if change == "rows":
        other.update(x=x.flip(0), y=y.flip(0))                 # same images, another training set order
    elif change == "seed":
        other.update(seed=4)
    elif change == "arch_params":
        other.update(arch_params={"hidden": [16]})
    else:
        other.update(early_stop={"patience": 5})
    key = lambda kw: models.checkpoint_key(kw["arch"], kw["dataset_name"], kw["x"], kw["y"],  # noqa: E731
                                           train_params=kw["train_params"], seed=kw["seed"],
                                           in_shape=kw["in_shape"], num_classes=kw["num_classes"],
                                           arch_params=kw["arch_params"], early_stop=kw["early_stop"])
    assert key(base) == key(dict(base, train_params={}, arch_params={}))   # defaults spelled out: the same
    assert key(base) != key(other)
