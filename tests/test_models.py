"""Tests for threatlab.models: architectures, training, the checkpoint cache.

Uses scikit-learn's 8x8 digits (scaled to [0, 1]) so the whole file runs in seconds.
"""
from __future__ import annotations

import math
import os
import time
import sys
import types
import warnings

import pytest
import safetensors.torch
import torch
from sklearn.datasets import load_digits

from threatlab import io as tio
from threatlab import models
from threatlab.errors import ConfigError, IntegrityError

FAST = {"epochs": 1, "batch_size": 64, "lr": 1e-3}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).div_(16.0).reshape(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    return x[:1500], y[:1500], x[1500:], y[1500:]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("THREATLAB_NO_PROGRESS", "1")


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ architectures

@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_build_forward_and_features(arch, in_shape):
    model = models.build(arch, in_shape=in_shape, num_classes=7, seed=0).eval()
    x = torch.rand(5, *in_shape)
    out = model(x)
    assert out.shape == (5, 7)
    feats = model.features(x)
    assert feats.shape == (5, model.feature_dim)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7
    assert torch.equal(model.head(feats), out)
    assert torch.equal(model.penultimate(x), feats)


def _relu_then_pool(model):
    """The same model with every (MaxPool2d, ReLU) pair in the textbook order ReLU -> pool."""
    layers = list(model.features)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], torch.nn.MaxPool2d) and isinstance(layers[i + 1], torch.nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    model.features = torch.nn.Sequential(*layers)
    return model


@pytest.mark.parametrize("arch", ["cnn", "lenet5"])
def test_pool_before_relu_is_bit_identical_to_relu_before_pool(arch):
    """models._conv_block pools before the ReLU; nothing a caller sees may change: the
    parameter names, the logits, the input gradient an attack takes, the parameter
    gradients and the weights after training (MNIST-sized inputs, where half the
    pre-activations are negative and whole pooling windows are)."""
    fast = models.build(arch, in_shape=(1, 28, 28), seed=3)
    textbook = _relu_then_pool(models.build(arch, in_shape=(1, 28, 28), seed=3))
    assert [type(m) for m in textbook.features[1:4]] == [torch.nn.Conv2d, torch.nn.ReLU, torch.nn.MaxPool2d]
    assert [type(m) for m in fast.features[1:4]] == [torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.ReLU]
    assert fast.state_dict().keys() == textbook.state_dict().keys()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g)
    x[:8] = 0.0                                  # blank images: many all-negative / all-equal windows
    y = torch.arange(64) % 10
    grads = []
    for model in (fast, textbook):
        xa = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), y)
        gx, *gp = torch.autograd.grad(loss, [xa, *model.parameters()])
        grads.append((model(x).detach(), gx, gp))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][2], grads[1][2]))
    for model in (fast, textbook):
        models.train(model, x, y, epochs=3, batch_size=16, lr=1e-2, seed=1, progress=False)
    assert _same(_params(fast), _params(textbook))


def test_normalization_is_a_buffer_inside_the_model():
    model = models.build("mlp", in_shape=(3, 4, 4), mean=(0.1, 0.2, 0.3), std=0.5, seed=0)
    sd = model.state_dict()
    assert torch.allclose(sd["features.0.mean"].flatten(), torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(sd["features.0.std"].flatten(), torch.full((3,), 0.5))
    assert all(n not in dict(model.named_parameters()) for n in ("features.0.mean", "features.0.std"))


def test_build_seed_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = models.build("lenet5", in_shape=(1, 8, 8), seed=3)
    b = models.build("lenet5", in_shape=(1, 8, 8), seed=3)
    c = models.build("lenet5", in_shape=(1, 8, 8), seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same(a.state_dict(), b.state_dict())
    assert not _same(a.state_dict(), c.state_dict())


def test_mlp_hidden_sizes():
    model = models.build("mlp", in_shape=(1, 8, 8), hidden=(32,), seed=0)
    assert model.feature_dim == 32
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("call, needles", [
    (lambda: models.build("resnet999"), ["arch", "resnet999", "lenet5", "mlp", "cnn"]),
    (lambda: models.build("mlp", in_shape=(28, 28)), ["in_shape", "(28, 28)"]),
    (lambda: models.build("mlp", num_classes=1), ["num_classes", "1"]),
    (lambda: models.build("cnn", in_shape=(1, 1, 1)), ["in_shape", "cnn"]),
    (lambda: models.build("mlp", bogus=1), ["mlp", "bogus"]),
])
def test_build_config_errors(call, needles):
    with pytest.raises(ConfigError) as err:
        call()
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize("kwargs, needles", [
    ({"lr": 0.0}, ["lr", "0.0"]),
    ({"lr": -1e-3}, ["lr", "-0.001"]),
    ({"epochs": 0}, ["epochs", "0"]),
    ({"epochs": 1.5}, ["epochs", "1.5"]),
    ({"batch_size": 0}, ["batch_size", "0"]),
    ({"optimizer": "rmsprop"}, ["optimizer", "rmsprop", "adam", "sgd"]),
    ({"weight_decay": -1.0}, ["weight_decay", "-1.0"]),
])
def test_train_config_errors_before_compute(digits, kwargs, needles):
    x, y, _, _ = digits
    model = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    before = _params(model)
    with pytest.raises(ConfigError) as err:
        models.train(model, x, y, **kwargs)
    for needle in needles:
        assert needle in str(err.value)
    assert _same(before, model.state_dict())


def test_train_rejects_mismatched_data(digits):
    x, y, _, _ = digits
    model = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    with pytest.raises(ConfigError, match="y has shape"):
        models.train(model, x, y[:-1])
    with pytest.raises(ConfigError, match="integer class labels"):
        models.train(model, x, y.float())


# ------------------------------------------------------------------------ training

@pytest.mark.parametrize("arch, optimizer", [("mlp", "adam"), ("cnn", "sgd"), ("lenet5", "adam")])
def test_training_is_bit_identical_under_seed(digits, arch, optimizer):
    # Bit-identical between two runs on this machine; another CPU kind rounds differently.
    x, y, _, _ = digits
    runs = []
    for _ in range(2):
        model = models.build(arch, in_shape=(1, 8, 8), seed=1)
        hist = models.train(model, x[:512], y[:512], epochs=2, batch_size=64, lr=1e-2 if optimizer == "sgd" else 1e-3,
                            optimizer=optimizer, seed=5)
        runs.append((_params(model), hist))
    assert _same(runs[0][0], runs[1][0])
    assert runs[0][1]["loss"] == runs[1][1]["loss"]
    assert len(runs[0][1]["loss"]) == 2 and len(runs[0][1]["train_acc"]) == 2
    assert runs[0][1]["seconds"] > 0
    # A different shuffling seed gives different parameters.
    model = models.build(arch, in_shape=(1, 8, 8), seed=1)
    models.train(model, x[:512], y[:512], epochs=2, batch_size=64, optimizer=optimizer, seed=6,
                 lr=1e-2 if optimizer == "sgd" else 1e-3)
    assert not _same(runs[0][0], model.state_dict())


def test_train_does_not_touch_global_rng(digits):
    x, y, _, _ = digits
    model = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    state = torch.random.get_rng_state()
    models.train(model, x[:256], y[:256], seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_mlp_learns_digits(digits):
    x, y, xt, yt = digits
    model = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    hist = models.train(model, x, y, epochs=8, batch_size=32, lr=1e-3, seed=0)
    assert hist["loss"][-1] < hist["loss"][0]
    assert not model.training
    acc = models.accuracy(model, xt, yt)
    assert acc > 0.90, acc


def test_predict_and_accuracy_batched(digits):
    x, y, _, _ = digits
    model = models.build("cnn", in_shape=(1, 8, 8), seed=0)
    model.train()
    pred = models.predict(model, x[:100], batch_size=7)
    assert pred.dtype == torch.long and pred.shape == (100,)
    with torch.no_grad():
        model.eval()
        assert torch.equal(pred, model(x[:100]).argmax(1))
    model.train()
    acc = models.accuracy(model, x[:100], y[:100], batch_size=13)
    assert model.training  # mode restored
    assert acc == pytest.approx((pred == y[:100]).float().mean().item())


# ---------------------------------------------------------------------------- cache

def _cached(digits, tmp_path, **kw):
    x, y, _, _ = digits
    args = dict(train_params=FAST, seed=0, in_shape=(1, 8, 8), num_classes=10, cache_dir=tmp_path,
                progress=False)
    args.update(kw)
    return models.cached("mlp", "digits", x[:600], y[:600], **args)


def _no_train(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("train() was called; expected a cache hit")
    monkeypatch.setattr(models, "train", boom)


def test_cache_trains_then_loads(digits, tmp_path, monkeypatch):
    m1, info1 = _cached(digits, tmp_path)
    assert info1["from_cache"] is False and info1["train_seconds"] > 0
    assert info1["path"].exists() and info1["path"].parent == tmp_path / "models"
    assert info1["path"].suffix == ".safetensors"
    with monkeypatch.context() as mp:
        _no_train(mp)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m2, info2 = _cached(digits, tmp_path)
    assert info2["from_cache"] is True and info2["train_seconds"] is None
    assert info2["key"] == info1["key"] and info2["path"] == info1["path"]
    assert info2["history"] == {k: v for k, v in info1["history"].items() if k != "seconds"}
    assert _same(m1.state_dict(), m2.state_dict())
    assert not m2.training
    # The cached model is exactly what training from scratch gives.
    fresh = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    x, y, _, _ = digits
    models.train(fresh, x[:600], y[:600], seed=0, progress=False, **FAST)
    assert _same(fresh.state_dict(), m2.state_dict())
    assert not list(tmp_path.rglob("*.tmp"))


def test_cached_checks_shapes_and_labels(digits, tmp_path):
    with pytest.raises(ConfigError, match="in_shape"):
        _cached(digits, tmp_path, in_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="num_classes=5"):
        _cached(digits, tmp_path, num_classes=5)
    with pytest.raises(ConfigError, match="lr"):
        _cached(digits, tmp_path, train_params={"lr": 0})
    assert not (tmp_path / "models").exists()


def test_cache_key_covers_its_inputs(digits, tmp_path, monkeypatch):
    x, y, _, _ = digits
    base = dict(train_params=FAST, seed=0, in_shape=(1, 8, 8), num_classes=10)
    k = models.checkpoint_key("mlp", "digits", x[:600], y[:600], **base)
    # Defaults filled in: an explicit default gives the same key.
    assert k == models.checkpoint_key("mlp", "digits", x[:600], y[:600],
                                      **{**base, "train_params": {**FAST, "optimizer": "adam"}})
    variants = [
        models.checkpoint_key("cnn", "digits", x[:600], y[:600], **base),
        models.checkpoint_key("mlp", "digits2", x[:600], y[:600], **base),
        models.checkpoint_key("mlp", "digits", x[1:601], y[1:601], **base),
        models.checkpoint_key("mlp", "digits", x[:600], y[:600], **{**base, "seed": 1}),
        models.checkpoint_key("mlp", "digits", x[:600], y[:600], **{**base, "train_params": {**FAST, "lr": 2e-3}}),
        models.checkpoint_key("mlp", "digits", x[:600], y[:600], **{**base, "num_classes": 11}),
        models.checkpoint_key("mlp", "digits", x[:600], y[:600], **base, arch_params={"hidden": [32]}),
    ]
    assert len(set(variants + [k])) == len(variants) + 1
    monkeypatch.setattr(models, "CODE_VERSION", "0" * 64)
    assert models.checkpoint_key("mlp", "digits", x[:600], y[:600], **base) != k
    with pytest.raises(ConfigError, match="train_params has unknown keys.*'epoch'"):
        models.checkpoint_key("mlp", "digits", x[:600], y[:600], **{**base, "train_params": {"epoch": 1}})


def test_code_version_change_retrains(digits, tmp_path, monkeypatch):
    _, info1 = _cached(digits, tmp_path)
    monkeypatch.setattr(models, "CODE_VERSION", "f" * 64)
    _, info2 = _cached(digits, tmp_path)
    assert info2["from_cache"] is False and info2["key"] != info1["key"]


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("THREATLAB_CACHE", raising=False)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(models.__file__))))
    assert models.checkpoint_dir() == models.Path(repo) / "data" / "cache" / "models"
    monkeypatch.setenv("THREATLAB_CACHE", str(tmp_path / "env"))
    assert models.checkpoint_dir() == tmp_path / "env" / "models"
    assert models.checkpoint_dir(tmp_path / "arg") == tmp_path / "arg" / "models"


def test_cache_uses_env_dir(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("THREATLAB_CACHE", str(tmp_path))
    _, info = _cached(digits, tmp_path, cache_dir=None)
    assert info["path"].parent == tmp_path / "models"


def _data_start(blob: bytes) -> int:
    return 8 + int.from_bytes(blob[:8], "little")


def _flip_data(path):
    blob = bytearray(path.read_bytes())
    i = _data_start(blob) + 17
    blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def _truncate(path):
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 100])


def _truncate_header(path):
    path.write_bytes(path.read_bytes()[:40])


def _wrong_key(path):
    blob = path.read_bytes()
    tensors = safetensors.torch.load(blob)
    meta = models._read_metadata(blob)
    path.write_bytes(safetensors.torch.save(tensors, metadata={**meta, "key": "0" * 64}))


def _wrong_shape(path):
    blob = path.read_bytes()
    tensors = safetensors.torch.load(blob)
    meta = models._read_metadata(blob)
    tensors["head.bias"] = torch.zeros(11)
    path.write_bytes(safetensors.torch.save(tensors, metadata=meta))


def _garbage(path):
    path.write_bytes(b"not a checkpoint at all")


@pytest.mark.parametrize("damage, reason", [
    (_flip_data, "content sha256"),
    (_truncate, "safetensors could not parse"),
    (_truncate_header, "header"),
    (_wrong_key, "metadata key"),
    (_wrong_shape, "head.bias"),
    (_garbage, ""),
])
def test_damaged_checkpoint_is_warned_and_retrained(digits, tmp_path, damage, reason):
    m1, info1 = _cached(digits, tmp_path)
    good = info1["path"].read_bytes()
    damage(info1["path"])
    with pytest.warns(models.CheckpointWarning, match="corrupt/mismatching") as rec:
        m2, info2 = _cached(digits, tmp_path)
    assert str(info1["path"]) in str(rec[0].message) and reason in str(rec[0].message)
    assert info2["from_cache"] is False
    assert _same(m1.state_dict(), m2.state_dict())  # deterministic retrain
    assert info1["path"].read_bytes() == good         # overwritten with a good file
    _, info3 = _cached(digits, tmp_path)
    assert info3["from_cache"] is True
    assert not list(tmp_path.rglob("*.tmp"))


def test_load_checkpoint_leaves_model_untouched_on_failure(digits, tmp_path):
    m1, info = _cached(digits, tmp_path)
    _flip_data(info["path"])
    other = models.build("mlp", in_shape=(1, 8, 8), seed=9)
    before = _params(other)
    with pytest.raises(IntegrityError):
        models.load_checkpoint(other, info["path"], key=info["key"])
    assert _same(before, other.state_dict())


def _fail_replace(monkeypatch):
    def boom(src, dst):
        raise KeyboardInterrupt("killed during rename")
    monkeypatch.setattr(os, "replace", boom)


def _fail_write(monkeypatch):
    real_fdopen = os.fdopen

    class HalfFile:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    monkeypatch.setattr(tio.os, "fdopen", lambda *a, **k: HalfFile(real_fdopen(*a, **k)))


@pytest.mark.parametrize("failure, exc", [(_fail_replace, KeyboardInterrupt), (_fail_write, OSError)])
def test_interrupted_save_keeps_previous_checkpoint(digits, tmp_path, monkeypatch, failure, exc):
    m1, info1 = _cached(digits, tmp_path)
    good = info1["path"].read_bytes()
    # Saving another model over it directly, interrupted: the good file survives.
    other = models.build("mlp", in_shape=(1, 8, 8), seed=7)
    with monkeypatch.context() as mp:
        failure(mp)
        with pytest.raises(exc):
            models.save_checkpoint(other, info1["path"], key=info1["key"], arch="mlp")
    assert info1["path"].read_bytes() == good
    assert sorted(p.name for p in info1["path"].parent.iterdir()) == [info1["path"].name]
    # Through cached(): a mismatching file triggers a retrain whose save is interrupted;
    # the file on disk is unchanged (never truncated, never deleted) and no temp remains.
    _wrong_key(info1["path"])
    stale = info1["path"].read_bytes()
    with monkeypatch.context() as mp:
        failure(mp)
        with pytest.warns(models.CheckpointWarning), pytest.raises(exc):
            _cached(digits, tmp_path)
    assert info1["path"].read_bytes() == stale
    assert sorted(p.name for p in info1["path"].parent.iterdir()) == [info1["path"].name]
    # And the next uninterrupted call repairs it.
    with pytest.warns(models.CheckpointWarning):
        _, info3 = _cached(digits, tmp_path)
    assert info3["from_cache"] is False and info1["path"].read_bytes() == good


def test_models_does_not_import_data_and_load_or_train_is_lazy(digits, tmp_path, monkeypatch):
    import subprocess
    # In a fresh process: importing models does not import data, and saving the same
    # model gives the same checkpoint bytes (safetensors' header order is canonicalised).
    code = ("import sys, threatlab.models as m; print('threatlab.data' in sys.modules); "
            "m.save_checkpoint(m.build('lenet5', in_shape=(1, 8, 8), seed=0), sys.argv[1], key='k', arch='lenet5')")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.safetensors")], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
    assert out.stdout.strip() == "False"
    models.save_checkpoint(models.build("lenet5", in_shape=(1, 8, 8), seed=0), tmp_path / "b.safetensors",
                           key="k", arch="lenet5")
    # Same machine, two processes: the bytes of one seeded initialisation.
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    x, y, _, _ = digits
    calls = []

    def load(name, split, n=None):
        calls.append((name, split, n))
        return x[:n], y[:n]

    fake = types.SimpleNamespace(load=load, info=lambda name: types.SimpleNamespace(num_classes=10))
    monkeypatch.setitem(sys.modules, "threatlab.data", fake)
    _, info = models.load_or_train("mlp", "digits", n=600, train_params=FAST, seed=0, cache_dir=tmp_path,
                                   progress=False)
    assert calls == [("digits", "train", 600)]
    _, ref = _cached(digits, tmp_path / "other")
    assert info["key"] == ref["key"]


@pytest.mark.parametrize("arch", ["mlp", "cnn", "lenet5"])
def test_rows_give_the_same_bits_in_any_batch(arch):
    """runtime.CPU_ROW_CHUNK relies on it: a row's logits and input gradient do not
    depend on the rows batched with it, so chunked attacks equal unchunked ones."""
    import torch.nn.functional as F

    from threatlab import runtime

    model = models.build(arch, in_shape=(1, 28, 28), num_classes=10, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (300,), generator=gen)

    def logits_and_grad(xb, yb):
        xa = xb.clone().requires_grad_(True)
        z = model(xa)
        (g,) = torch.autograd.grad(F.cross_entropy(z, yb, reduction="sum"), xa)
        return z.detach(), g

    z_all, g_all = logits_and_grad(x, y)
    chunk = runtime.row_chunk("cpu")
    parts = [logits_and_grad(xb, yb) for xb, yb in zip(x.split(chunk), y.split(chunk))]
    assert torch.equal(torch.cat([p[0] for p in parts]), z_all)
    assert torch.equal(torch.cat([p[1] for p in parts]), g_all)


# ------------------------------------------------------ bad input (issue 21)

def _bad_xy(x, y):
    nan, pinf, ninf = x.clone(), x.clone(), x.clone()
    nan[5, 0, 3, 3], pinf[0, 0, 0, 0], ninf[-1, 0, 7, 7] = math.nan, math.inf, -math.inf
    return [
        ("nan-pixel", nan, y, "NaN or infinite"),
        ("+inf-pixel", pinf, y, "NaN or infinite"),
        ("-inf-pixel", ninf, y, "NaN or infinite"),
        ("0..255", x * 255, y, r"x must lie in \[0, 1\]; got values in \[0, 255\]"),
        ("negative", x - 0.5, y, r"x must lie in \[0, 1\]"),
        ("flat", x.reshape(len(x), 64), y, r"x has shape \(\d+, 64\); the model expects \[n, 1, 8, 8\]"),
        ("float64", x.double(), y, "x has dtype torch.float64; the model computes in torch.float32"),
        ("uint8", (x * 255).to(torch.uint8), y, "x must be a floating tensor"),
        ("label>=classes", x, torch.where(y == 9, 10, y), r"y holds class ids 0..10; allowed: 0..9"),
        ("label<0", x, torch.where(y == 0, -1, y), r"y holds class ids -1..9"),
    ]


@pytest.mark.parametrize("case", range(10), ids=[c[0] for c in _bad_xy(torch.rand(8, 1, 8, 8), torch.arange(8))])
def test_train_refuses_bad_data_before_the_first_step(digits, case, monkeypatch):
    x, y, _, _ = digits
    _, xb, yb, match = _bad_xy(x[:200], y[:200])[case]
    net = models.build("cnn", in_shape=(1, 8, 8), seed=0)
    before = _params(net)
    monkeypatch.setattr(torch.optim.Adam, "step", lambda *a, **k: pytest.fail("a step ran"))
    with pytest.raises(ConfigError, match=match):
        models.train(net, xb, yb, progress=False, **FAST)
    assert _same(before, _params(net))


@pytest.mark.parametrize("case", range(10), ids=[c[0] for c in _bad_xy(torch.rand(8, 1, 8, 8), torch.arange(8))])
def test_cached_refuses_bad_data_before_training(digits, tmp_path, case, monkeypatch):
    x, y, _, _ = digits
    name, xb, yb, match = _bad_xy(x[:200], y[:200])[case]
    monkeypatch.setattr(models, "train", lambda *a, **k: pytest.fail("trained"))
    # cached builds from the data's own shape; the shape mismatch is against in_shape
    match = {"flat": r"in_shape=\(1, 8, 8\) does not match the data",
             "float64": "x has dtype torch.float64", "label>=classes": r"num_classes=10 does not cover",
             }.get(name, match)
    with pytest.raises(ConfigError, match=match):
        models.cached("cnn", "digits", xb, yb, train_params=FAST, in_shape=(1, 8, 8), num_classes=10,
                      cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("param", ["lr", "weight_decay", "momentum"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
def test_train_and_cached_refuse_nonfinite_parameters(digits, tmp_path, param, bad):
    x, y, _, _ = digits
    with pytest.raises(ConfigError, match=rf"^{param}=(nan|inf|-inf) "):
        models.train(models.build("mlp", in_shape=(1, 8, 8), seed=0), x[:64], y[:64], progress=False,
                     **{param: bad})
    with pytest.raises(ConfigError, match=rf"^{param}=(nan|inf|-inf) "):
        models.cached("mlp", "digits", x[:64], y[:64], train_params={param: bad}, cache_dir=tmp_path,
                      progress=False)


def test_accuracy_checks_its_batch(digits):
    x, y, _, _ = digits
    net = models.build("cnn", in_shape=(1, 8, 8), seed=0)
    with pytest.raises(ConfigError, match="the model expects"):
        models.accuracy(net, x[:10].reshape(10, 64), y[:10])
    with pytest.raises(ConfigError, match=r"class ids \d..10; allowed: 0..9"):
        models.accuracy(net, x[:10], torch.where(y[:10] == y[0], 10, y[:10]))


def _load_in_thread(model, path, key="k"):
    """Run load_checkpoint in a thread; a reader stuck on a FIFO is released by opening
    the FIFO for writing, so a regression fails the test instead of hanging it."""
    import threading
    out = {}

    def go():
        try:
            out["meta"] = models.load_checkpoint(model, path, key=key)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t0 = time.perf_counter()
    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(5)
    elapsed = time.perf_counter() - t0
    if th.is_alive():
        with open(path, "wb"):
            pass
        th.join(5)
        pytest.fail(f"load_checkpoint blocked on {path} for {elapsed:.1f} s")
    return out, elapsed


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_at_checkpoint_path_is_refused_within_a_second(digits, tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    net = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    out, elapsed = _load_in_thread(net, fifo)
    assert elapsed < 1.0
    assert isinstance(out.get("error"), IntegrityError) and "is a FIFO" in str(out["error"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_cached_replaces_a_fifo_with_a_trained_checkpoint(digits, tmp_path):
    _, info = _cached(digits, tmp_path)              # learn the path, then swap in a FIFO
    good = info["path"].read_bytes()
    info["path"].unlink()
    os.mkfifo(info["path"])
    t0 = time.perf_counter()
    with pytest.warns(models.CheckpointWarning, match="is a FIFO"):
        _, info2 = _cached(digits, tmp_path)
    assert time.perf_counter() - t0 < 60 and info2["from_cache"] is False
    assert info2["path"].is_file() and info2["path"].read_bytes() == good


def test_directories_devices_and_oversized_files_are_refused(digits, tmp_path, monkeypatch):
    net = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    d = tmp_path / "dir.safetensors"
    d.mkdir()
    out, _ = _load_in_thread(net, d)
    assert isinstance(out.get("error"), IntegrityError) and "is a directory" in str(out["error"])
    if os.path.exists("/dev/zero"):                   # endless: must not be read at all
        link = tmp_path / "zero.safetensors"
        link.symlink_to("/dev/zero")
        out, elapsed = _load_in_thread(net, link)
        assert isinstance(out.get("error"), IntegrityError) and "is a device" in str(out["error"])
        assert elapsed < 1.0
    _, info = _cached(digits, tmp_path)
    size = info["path"].stat().st_size
    monkeypatch.setattr(models, "MAX_CHECKPOINT_BYTES", size - 1)
    out, _ = _load_in_thread(net, info["path"], key=info["key"])
    assert isinstance(out.get("error"), IntegrityError) and f"has {size} bytes, more than" in str(out["error"])
    monkeypatch.setattr(models, "MAX_CHECKPOINT_BYTES", size)
    out, _ = _load_in_thread(models.build("mlp", in_shape=(1, 8, 8), seed=0), info["path"], key=info["key"])
    assert "error" not in out and out["meta"]["key"] == info["key"]
    with pytest.raises(FileNotFoundError):
        models.load_checkpoint(net, tmp_path / "missing.safetensors", key="k")
