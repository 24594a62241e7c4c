"""Every white-box kernel runs any PyTorch model (issue #27): the channels-last view
(threatlab.attacks.layout) is an optimisation, and models written as third-party
code often is -- ``x.view(n, -1)`` flattening, ``torch.flatten``, normalisation
buffers applied in ``forward``, ``.contiguous()`` before a flatten, custom ops that
read memory as if it were contiguous -- either keep the view or fall back to the
model as given, with the same results up to the view's float rounding, and without
a trace in counted passes or random states."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from threatlab import attacks
from threatlab.attacks import layout
from threatlab.protocols.evasion import PassCounter

#: Every kernel the registry hands the channels-last view.
VIEWED = [n for n in attacks.names() if getattr(attacks.get(n), "channels_last", False)]

QUICK = {
    "fgsm": dict(eps=0.1),
    "bim": dict(eps=0.1, steps=5),
    "pgd_linf": dict(eps=0.1, steps=5),
    "pgd_l2": dict(eps=1.0, steps=5),
    "cw_l2": dict(steps=20, binary_search_steps=2, initial_const=1.0, lr=0.05),
    "deepfool": dict(steps=10),
    "jsma": dict(gamma=0.1),
    "min_linf": dict(bisection_steps=3, steps=5, eps_max=0.5),
    "apgd_ce": dict(eps=0.1, steps=5),
    "apgd_dlr": dict(eps=0.1, steps=5),
    "eot_pgd": dict(eps=0.1, steps=3, samples=2),
}
SEEDED = {"fgsm", "deepfool", "jsma"}  # kernels that draw nothing (no generator needed)


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


def _call(kernel, model, x, y, name):
    kw = dict(QUICK[name])
    if name not in SEEDED:
        kw["generator"] = _gen()
    return kernel(model, x, y, **kw)


# ------------------------------------------------------------- third-party-style models

class TinyCNN(nn.Module):
    """Two 3x3 convolutions (8, 16 channels) with ReLU and 2x2 max-pooling, then a
    linear layer, for 8x8 grey images; `flatten` is how its forward flattens, as the
    authors of the model might have written it:

    - "module": ``nn.Flatten()`` (threatlab's own models; the reference twin)
    - "view": ``out.view(out.size(0), -1)`` (advertorch's LeNet-5): fails under the view
    - "torch": ``torch.flatten(out, 1)``: reshapes, so it copies when it must
    - "contiguous": ``out.contiguous().view(out.size(0), -1)``
    - "strided": ``torch.as_strided`` over the storage as if it were contiguous: runs
      under the view, reading the features in another order (a silent difference)

    All variants share parameter names: one state dict loads into each.
    """

    def __init__(self, flatten="module", normalise=False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 10)
        self.flatten = flatten
        self.flat = nn.Flatten()
        if normalise:  # a model that carries its own input statistics, applied in forward
            self.register_buffer("mean", torch.tensor([0.3]).view(1, 1, 1, 1))
            self.register_buffer("std", torch.tensor([0.4]).view(1, 1, 1, 1))
        self.normalise = normalise

    def forward(self, x):
        if self.normalise:
            x = (x - self.mean) / self.std
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        if self.flatten == "module":
            out = self.flat(out)
        elif self.flatten == "view":
            out = out.view(out.size(0), -1)
        elif self.flatten == "torch":
            out = torch.flatten(out, 1)
        elif self.flatten == "contiguous":
            out = out.contiguous().view(out.size(0), -1)
        elif self.flatten == "strided":
            n = out.shape[0]
            out = torch.as_strided(out, (n, out[0].numel()), (out[0].numel(), 1), out.storage_offset())
        return self.fc(out)


class _ReluFlatten(torch.autograd.Function):
    """relu + flatten written for contiguous inputs: the forward reshapes (works in any
    layout), the backward views the saved input (fails on a channels-last one)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0).reshape(x.shape[0], -1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return (g * (x.view(x.shape[0], -1) > 0)).reshape(x.shape)


class BackwardOnlyBreaks(TinyCNN):
    """Runs forward under the view; its backward raises there."""

    def forward(self, x):
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.fc(_ReluFlatten.apply(F.max_pool2d(self.conv2(out), 2)))


@pytest.fixture(scope="module")
def digits_cnn():
    """TinyCNN ("module" flatten) trained ~1 s on scikit-learn's digits (an untrained
    net's gradients are near zero, where any rounding decides a sign step), its state
    dict, and 32 held-out digits it classifies right."""
    from sklearn.datasets import load_digits

    data, labels = load_digits(return_X_y=True)
    x_all = torch.tensor(data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y_all = torch.tensor(labels)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyCNN("module")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # full-batch: deterministic
        opt.zero_grad()
        F.cross_entropy(model(x_all[:800]), y_all[:800]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        right = model(x_all[1500:]).argmax(1) == y_all[1500:]
    assert right.float().mean() > 0.85, "digits CNN failed to train; the comparisons below are void"
    return model.state_dict(), x_all[1500:][right][:32], y_all[1500:][right][:32]


def _build(cls, state, **kw):
    m = cls(**kw)
    m.load_state_dict(state, strict=False)  # a normalising variant keeps its own buffers
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


# ---------------------------------------------------------------------------- tests

def test_every_channels_last_kernel_is_listed():
    assert {"fgsm", "bim", "pgd_linf", "pgd_l2", "cw_l2", "deepfool", "jsma", "min_linf",
            "apgd_ce", "apgd_dlr", "eot_pgd"} <= set(VIEWED)
    assert set(VIEWED) <= set(QUICK), "a new channels-last kernel needs QUICK settings here"


# style -> (constructor kwargs, whether the view is kept)
STYLES = {
    "view": (dict(flatten="view"), False),
    "torch.flatten": (dict(flatten="torch"), True),
    "normalisation buffers + view": (dict(flatten="view", normalise=True), False),
    "normalisation buffers + nn.Flatten": (dict(flatten="module", normalise=True), True),
    "contiguous + view": (dict(flatten="contiguous"), True),
    "as_strided": (dict(flatten="strided"), False),
}


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("name", VIEWED)
def test_every_viewed_kernel_runs_on_third_party_models(digits_cnn, name, style):
    """Each kernel runs; its success flags are the model's own verdict on what it
    returns; the view is kept exactly where the model computes the same under it."""
    state, x, y = digits_cnn
    kw, keeps = STYLES[style]
    model = _build(TinyCNN, state, **kw)
    x, y = x[:8], y[:8]
    res = _call(attacks.get(name), model, x, y, name)
    assert layout.verdict(model) is keeps
    assert res.x_adv.shape == x.shape and bool(torch.isfinite(res.x_adv).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        fooled = model(res.x_adv).argmax(1) != y
    assert torch.equal(res.success, fooled)
    assert bool(res.success.any()), f"{name} fooled none of 8 digits on the {style} model"


@pytest.mark.parametrize("name", ["fgsm", "pgd_linf", "cw_l2", "deepfool", "jsma", "apgd_ce", "min_linf"])
def test_view_flatten_model_matches_its_nn_flatten_twin(digits_cnn, name):
    """The issue's test: the `.view` model falls back and runs exactly as the kernel
    without the view; its results equal those of its `nn.Flatten` twin (same weights,
    through the view) up to the layout's float rounding (tests/test_layout.py: a pixel
    here and there where a sign step or a clip meets a rounding difference; at most
    one success flag)."""
    state, x, y = digits_cnn
    viewed, twin = _build(TinyCNN, state, flatten="view"), _build(TinyCNN, state, flatten="module")
    kernel = attacks.get(name)
    a = _call(kernel, viewed, x, y, name)
    b = _call(kernel, twin, x, y, name)
    raw = _call(kernel.__wrapped__, viewed, x, y, name)
    assert layout.verdict(viewed) is False and layout.verdict(twin) is True
    assert torch.equal(a.x_adv, raw.x_adv) and torch.equal(a.success, raw.success)
    moved = (a.x_adv - b.x_adv).abs() > 1e-4
    assert moved.float().mean() <= 0.01, f"{name}: {int(moved.sum())} of {moved.numel()} pixels differ"
    assert int((a.success != b.success).sum()) <= 1
    # Where both succeed, the perturbations are as large (minimal-perturbation kernels).
    both = a.success & b.success
    assert bool(both.any())
    na = (a.x_adv - x)[both].flatten(1).norm(dim=1)
    nb = (b.x_adv - x)[both].flatten(1).norm(dim=1)
    torch.testing.assert_close(na.median(), nb.median(), rtol=0.02, atol=1e-4)


@pytest.mark.parametrize("flatten, keeps", [("view", False), ("module", True)])
def test_probe_runs_once_per_model_and_leaves_no_trace(digits_cnn, monkeypatch, flatten, keeps):
    """One probe per model object, however many kernel calls and views; the passes a
    PassCounter records and the global random state are those of the kernel without
    the view."""
    state, x, y = digits_cnn
    x, y = x[:8], y[:8]
    calls = []
    real = layout._probe
    monkeypatch.setattr(layout, "_probe", lambda *a: calls.append(1) or real(*a))

    model = _build(TinyCNN, state, flatten=flatten)
    counter = PassCounter(model)
    rng = torch.get_rng_state()
    for name in ("pgd_linf", "deepfool", "pgd_linf"):
        _call(attacks.get(name), counter, x, y, name)
    assert len(calls) == 1 and layout.verdict(counter) is keeps
    assert torch.equal(torch.get_rng_state(), rng)

    reference = PassCounter(_build(TinyCNN, state, flatten=flatten))
    for name in ("pgd_linf", "deepfool", "pgd_linf"):
        _call(attacks.get(name).__wrapped__, reference, x, y, name)
    assert (counter.forward_rows, counter.backward_rows) == (reference.forward_rows, reference.backward_rows)
    assert counter.forward_rows >= 8 * 2 * 6  # two PGD runs of 5 steps and a success forward
    # A fallen-back model is handed to later kernels as it is (no view, no weight copies).
    assert (layout.channels_last(counter) is counter) is (not keeps)


def test_backward_failure_under_the_view_falls_back(digits_cnn):
    """A model whose forward runs under the view but whose backward raises there: the
    probe runs the backward too, so the kernel runs the model as given, exactly."""
    state, x, y = digits_cnn
    model = _build(BackwardOnlyBreaks, state)
    view = layout.channels_last(model)
    with pytest.raises(RuntimeError, match="view size"):
        xs = x[:2].clone().requires_grad_(True)
        view._viewed(xs).sum().backward()
    res = attacks.get("pgd_linf")(model, x[:8], y[:8], eps=0.1, steps=5, generator=_gen())
    raw = attacks.get("pgd_linf").__wrapped__(model, x[:8], y[:8], eps=0.1, steps=5, generator=_gen())
    assert layout.verdict(model) is False
    assert torch.equal(res.x_adv, raw.x_adv)


class _Stateful(nn.Module):
    """Keeps what a forward may change: a row count, a log, a tensor counter, batch-norm
    statistics (trains in train mode), its own generator and the global one (dropout)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(0.5)
        self.rows, self.log = 0, []
        self.hits = torch.zeros(())
        self.gen = torch.Generator().manual_seed(1)

    def forward(self, x):
        self.rows += x.shape[0]
        self.log.append(self.training)
        self.hits += 1
        noise = 1e-3 * torch.rand(x.shape, generator=self.gen)
        return self.drop(self.inner(self.bn(x) + noise))


def test_probe_restores_everything_the_forward_touches(digits_cnn):
    state, x, y = digits_cnn
    model = _Stateful(_build(TinyCNN, state, flatten="view")).train()
    model.inner.eval()
    before = (model.rows, list(model.log), model.hits.clone(), model.gen.get_state(),
              model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone(), torch.get_rng_state())
    view = layout.channels_last(model)
    assert layout._probe(model, view._viewed, x) is False
    after = (model.rows, list(model.log), model.hits, model.gen.get_state(),
             model.bn.running_mean, model.bn.num_batches_tracked, torch.get_rng_state())
    for b, a in zip(before, after):
        assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b)
    assert model.training and model.bn.training and not model.inner.training


def test_a_model_the_view_fits_is_probed_in_eval_mode_and_kept(digits_cnn):
    """Dropout and batch statistics in train mode would make the two probe runs differ
    for reasons other than the layout: the probe runs in eval mode."""
    state, x, _ = digits_cnn
    model = _Stateful(_build(TinyCNN, state, flatten="torch")).train()
    view = layout.channels_last(model)
    assert layout._probe(model, view._viewed, x) is True
    assert model.rows == 0 and model.log == [] and model.training


# ------------------------------------------- benchmarks/third_party.py (advertorch's LeNet-5)

@pytest.fixture(scope="module")
def third_party():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import third_party as module

    return module


def test_advertorch_lenet5_runs_every_viewed_kernel_by_falling_back(third_party):
    """The issue's model: 3x3 convolutions 1 -> 32 -> 64, ``.view`` flatten, FC 3136 ->
    200 -> 10. The view cannot run it; every kernel still does, on the model as given."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = third_party.AdvertorchLeNet5().eval()
    x = torch.rand(4, 1, 28, 28, generator=_gen(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    with pytest.raises(RuntimeError, match="view size"):
        layout.channels_last(model)._viewed(x)
    for name in VIEWED:
        res = _call(attacks.get(name), model, x, y, name)
        assert res.x_adv.shape == x.shape and bool(torch.isfinite(res.x_adv).all())
    assert layout.verdict(model) is False and layout.channels_last(model) is model


def test_load_advertorch_reads_state_dicts_only(third_party, tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        source = third_party.AdvertorchLeNet5().eval()
    path = tmp_path / "mnist_lenet5_clntrained.pt"
    torch.save(source.state_dict(), path)
    loaded = third_party.load_advertorch(path)
    x = torch.rand(3, 1, 28, 28, generator=_gen(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x)) and not loaded.training

    from threatlab.errors import ConfigError, IntegrityError

    torch.save(source, tmp_path / "module.pt")  # a pickled module: code, refused by weights_only
    with pytest.raises(IntegrityError, match="weights-only"):
        third_party.load_advertorch(tmp_path / "module.pt")
    torch.save({"conv1.weight": torch.zeros(32, 1, 3, 3)}, tmp_path / "partial.pt")
    with pytest.raises(IntegrityError, match="expected the tensors"):
        third_party.load_advertorch(tmp_path / "partial.pt")
    bad = source.state_dict()
    bad["linear2.bias"] = torch.full((10,), float("nan"))
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(IntegrityError, match="linear2.bias holds NaN"):
        third_party.load_advertorch(tmp_path / "nan.pt")
    with pytest.raises(ConfigError, match="weights="):
        third_party.load_advertorch(tmp_path)


def test_trained_here_trains_once_then_reads_the_cache(third_party, tmp_path):
    x = torch.rand(64, 1, 28, 28, generator=_gen(0))
    y = torch.randint(0, 10, (64,), generator=_gen(1))
    params = dict(epochs=1, batch_size=32, lr=1e-3)
    a, info_a = third_party.trained_here(x, y, train_params=params, seed=0, cache_dir=tmp_path)
    b, info_b = third_party.trained_here(x, y, train_params=params, seed=0, cache_dir=tmp_path)
    assert not info_a["from_cache"] and info_b["from_cache"] and info_a["key"] == info_b["key"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = third_party.AdvertorchLeNet5()
    assert not torch.equal(untrained.linear2.weight, a.linear2.weight)  # it did train


@pytest.mark.parametrize("name, kw", [("square_linf", {"eps": 0.3, "max_queries": 60}),
                                      ("hopskipjump", {"max_queries": 200}),
                                      ("boundary", {"max_queries": 200})])
def test_black_box_kernels_run_a_view_flatten_model_as_its_twin(digits_cnn, name, kw):
    """The black-box kernels answer through `BlackBox`, whose max-pooling rewrite
    (threatlab.pooling) changes neither layout nor bits: a `.view`-flattening model runs,
    and its adversarials and query counts are its `nn.Flatten` twin's, bit for bit."""
    from threatlab.oracle import BlackBox

    state, x, y = digits_cnn
    viewed, twin = _build(TinyCNN, state, flatten="view"), _build(TinyCNN, state, flatten="module")
    kernel = attacks.get(name)
    a = kernel(BlackBox(viewed, mode="probs" if name == "square_linf" else "label"), x, y, generator=_gen(), **kw)
    b = kernel(BlackBox(twin, mode="probs" if name == "square_linf" else "label"), x, y, generator=_gen(), **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert torch.equal(a.queries, b.queries) and bool(a.success.any())
