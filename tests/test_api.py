"""The public API (issue 35): top-level names, eval mode, batch_size=, integer labels.

Every registered attack and defense is a top-level attribute of `threatlab.attacks` /
`threatlab.defenses` (the registry's own object, listed in __all__, with an Example in
its docstring); kernels run the model in eval mode and give every submodule its own
training flag back; `batch_size=` chunks the model calls without changing one bit of the
result; labels of any integer dtype are accepted.
"""
from __future__ import annotations

import inspect
import typing

import pytest
import torch
from torch import nn

from threatlab import attacks, defenses
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox

N, SHAPE, K = 10, (1, 6, 6), 4


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class RowLinear(nn.Module):
    """x @ W + b as a broadcast product and a sum over the inputs: each row's bits do not
    depend on the rows beside it. nn.Linear's BLAS GEMM does not promise that (on a CPU
    MKL picks other kernels for 3 rows than for 10), so bit-equality across chunkings is
    a property of the model, and these tests use one that has it; the kernels' part
    (draws for the whole batch, chunks joined, queries counted) is what is tested."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)
        self.bias = nn.Parameter(torch.randn(n_out) / 10)

    def forward(self, x):
        return (x[:, :, None] * self.weight).sum(1) + self.bias


class Net(nn.Module):
    """A small MLP with dropout (noisy in train mode) that records the rows of every
    forward call and each call's mode, and can be told to raise on a given call."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.in_shape, self.num_classes = SHAPE, K
        self.body = nn.Sequential(nn.Flatten(), RowLinear(36, 32), nn.ReLU(), nn.Dropout(0.5))
        self.head = RowLinear(32, K)
        self.rows: list[int] = []
        self.training_seen: list[bool] = []
        self.raise_at: int | None = None

    def forward(self, x):
        self.rows.append(x.shape[0])
        self.training_seen.append(any(m.training for m in self.modules()))
        if self.raise_at is not None and len(self.rows) >= self.raise_at:
            raise RuntimeError("model failed on purpose")
        return self.head(self.body(x))

    def features(self, x):  # feature collision's feature extractor, recorded the same way
        self.rows.append(x.shape[0])
        return self.body(x)


def batch(seed: int = 0):
    x = torch.rand(N, *SHAPE, generator=gen(seed))
    y = torch.arange(N) % K
    return x, y


# ------------------------------------------------------------------ top-level names

def test_every_registered_name_is_a_top_level_attribute_identical_to_the_registry():
    for mod in (attacks, defenses):
        for name in mod.names():
            assert hasattr(mod, name), f"{mod.__name__}.{name} missing"
            assert getattr(mod, name) is mod.get(name), name
            assert name in mod.__all__, name
    assert attacks.pgd_linf is attacks.get("pgd_linf")
    assert defenses.dp_sgd is defenses.get("dp_sgd")


def test_every_public_kernel_has_an_example_and_a_typed_signature():
    for mod in (attacks, defenses):
        for name in mod.names():
            fn = mod.get(name)
            doc = inspect.getdoc(fn) or ""
            assert "Example" in doc and ">>> " in doc.split("Example", 1)[1], f"{name}: no Example block"
            if mod is attacks and next(iter(inspect.signature(fn).parameters)) in ("model", "oracle"):
                assert "runs in eval mode" in doc, f"{name}: docstring does not say so"
                assert ("batch_size: at most" in doc) == fn.batched, name
            sig = inspect.signature(fn)
            first = next(iter(sig.parameters.values()))
            assert first.annotation is not inspect.Parameter.empty, f"{name}: first argument untyped"
            assert sig.return_annotation is not inspect.Signature.empty or inspect.isclass(fn), name
            # every annotation names something importable (py.typed promises it)
            hints = typing.get_type_hints(inspect.unwrap(fn.__init__ if inspect.isclass(fn) else fn))
            assert all(p in hints for p in sig.parameters if p not in ("self", "batch_size")), name


def test_modules_shadowed_by_defense_names_stay_importable_by_path():
    from threatlab.defenses.dp_sgd import dp_epsilon, dp_sgd_train

    assert defenses.dp_sgd is dp_sgd_train and callable(dp_epsilon)


# ------------------------------------------------------------------------ eval mode

WHITE = [("fgsm", dict(eps=0.1)), ("pgd_linf", dict(eps=0.1, steps=3)), ("cw_l2", dict(steps=3, binary_search_steps=2)),
         ("apgd_ce", dict(eps=0.1, steps=4)), ("deepfool", dict(steps=3))]


@pytest.mark.parametrize("name,kw", WHITE)
def test_a_model_in_train_mode_is_attacked_in_eval_mode_and_its_modes_restored(name, kw):
    x, y = batch()
    ref = Net()
    ref.eval()
    want = attacks.get(name)(ref, x, y, generator=gen(1), **kw)
    net = Net()
    net.train()
    net.head.eval()  # a submodule deliberately in the other mode
    got = attacks.get(name)(net, x, y, generator=gen(1), **kw)
    assert torch.equal(got.x_adv, want.x_adv) and torch.equal(got.success, want.success)
    assert not any(net.training_seen)
    assert net.training and net.body.training and net.body[3].training and not net.head.training


def test_black_box_models_run_in_eval_mode_too():
    x, y = batch()
    ref = Net().eval()
    want = attacks.square_linf(BlackBox(ref), x, y, eps=0.1, max_queries=20, generator=gen(2))
    net = Net().train()
    got = attacks.square_linf(BlackBox(net), x, y, eps=0.1, max_queries=20, generator=gen(2))
    assert torch.equal(got.x_adv, want.x_adv) and torch.equal(got.queries, want.queries)
    assert not any(net.training_seen) and net.training


def test_modes_are_restored_when_the_attack_raises():
    x, y = batch()
    net = Net().train()
    net.body[1].eval()
    net.raise_at = 2
    with pytest.raises(RuntimeError, match="on purpose"):
        attacks.pgd_linf(net, x, y, eps=0.1, steps=3)
    assert not any(net.training_seen)
    assert [m.training for m in net.modules()] == [True, True, True, False, True, True, True]


# ----------------------------------------------------------------------- batch_size

def _same(a, b) -> None:
    """Every field of two results is the same bits (tensors), or equal (the rest)."""
    fa = a.__dict__ if hasattr(a, "__dict__") else a
    fb = b.__dict__ if hasattr(b, "__dict__") else b
    assert fa.keys() == fb.keys()
    for k in fa:
        va, vb = fa[k], fb[k]
        if isinstance(va, dict):
            _same(va, vb)
        elif torch.is_tensor(va):
            torch.testing.assert_close(va, vb, rtol=0, atol=0, equal_nan=True, msg=k)  # exact
        elif isinstance(va, float) and va != va:
            assert vb != vb, k
        elif not isinstance(va, nn.Module):
            assert va == vb if not hasattr(va, "__array__") else (va == vb).all(), k


def _run(name, first, x, y, kw, batch_size):
    net = Net().eval()
    target = first(net)
    res = attacks.get(name)(target, x, y, generator=gen(3), batch_size=batch_size, **kw)
    return res, net, target


CHUNKED = [
    ("fgsm", lambda m: m, dict(eps=0.1)),
    ("pgd_linf", lambda m: m, dict(eps=0.1, steps=3)),
    ("pgd_l2", lambda m: m, dict(eps=0.5, steps=3)),
    ("cw_l2", lambda m: m, dict(steps=3, binary_search_steps=2)),
    ("deepfool", lambda m: m, dict(steps=3)),
    ("apgd_dlr", lambda m: m, dict(eps=0.1, steps=4)),
    ("eot_pgd", lambda m: m, dict(eps=0.1, steps=2, samples=2)),
    ("square_linf", lambda m: BlackBox(m), dict(eps=0.1, max_queries=30)),
    ("simba", lambda m: BlackBox(m), dict(eps=1.0, max_queries=30)),
    ("nes_linf", lambda m: BlackBox(m), dict(eps=0.1, max_queries=60, samples=4)),
    ("hopskipjump", lambda m: BlackBox(m, mode="label"), dict(max_queries=200, init_evals=10, max_evals=20)),
    ("mi_loss", lambda m: BlackBox(m), {}),
    ("mi_label_only", lambda m: BlackBox(m, mode="label"), dict(noise_samples=3)),
    ("sign_noise", lambda m: BlackBox(m, mode="label"), dict(eps=0.2)),
    ("feature_collision", lambda m: m, dict(target=torch.full((N, *SHAPE), 0.5), steps=5, eps=0.2)),
]


@pytest.mark.parametrize("name,first,kw", CHUNKED, ids=[c[0] for c in CHUNKED])
def test_batch_size_chunks_the_model_calls_and_changes_no_bit(name, first, kw):
    x, y = batch(4)
    whole, net_whole, _ = _run(name, first, x, y, kw, None)
    chunked, net, target = _run(name, first, x, y, kw, 3)
    _same(chunked, whole)
    assert max(net.rows) <= 3 and max(net_whole.rows) > 3, (net.rows, net_whole.rows)
    assert net.rows.count(0) == 0
    if isinstance(target, BlackBox):  # query counts add up across the chunks
        assert target.total == _run(name, first, x, y, kw, None)[2].total


def test_batch_size_is_in_the_signature_and_validated():
    for name in attacks.names():
        fn = attacks.get(name)
        params = inspect.signature(fn).parameters
        assert ("batch_size" in params) == (fn.batched or "batch_size" in params)
    assert inspect.signature(attacks.pgd_linf).parameters["batch_size"].default is None
    assert not attacks.badnets.batched and not attacks.equation_solving.batched
    x, y = batch()
    for bad in (0, -2, 2.5, True, "3", float("nan")):
        with pytest.raises(ConfigError, match=r"^batch_size=.*") as err:
            attacks.fgsm(Net(), x, y, eps=0.1, batch_size=bad)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- labels

@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_labels_of_any_integer_dtype_are_accepted(dtype):
    x, y = batch()
    net = Net().eval()
    want = attacks.pgd_linf(net, x, y, eps=0.1, steps=2, generator=gen(5))
    got = attacks.pgd_linf(net, x, y.to(dtype), eps=0.1, steps=2, generator=gen(5))
    assert torch.equal(got.x_adv, want.x_adv) and torch.equal(got.success, want.success)
    tgt = (y + 1) % K
    got = attacks.fgsm(net, x, y.to(dtype), eps=0.1, targeted=True, target=tgt.to(dtype))
    assert torch.equal(got.x_adv, attacks.fgsm(net, x, y, eps=0.1, targeted=True, target=tgt).x_adv)
    res = attacks.mi_loss(BlackBox(net), x, y.to(dtype))
    assert torch.equal(res.scores, attacks.mi_loss(BlackBox(net), x, y).scores)


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(N), r"^y must be an integer tensor .*got .*float32"),
    (torch.zeros(N, dtype=torch.bool), r"^y must be an integer tensor .*got .*bool"),
    (torch.zeros(N + 1, dtype=torch.int32), r"^y must be an integer tensor .*of shape \(10,\)"),
    (torch.full((N,), K, dtype=torch.int16), r"^y holds class ids 4\.\.4; allowed: 0\.\.3"),
    (torch.full((N,), -1, dtype=torch.int8), r"^y holds class ids -1\.\.-1; allowed: 0\.\.3"),
])
def test_bad_labels_get_one_line(bad, match):
    x, _ = batch()
    with pytest.raises(ConfigError, match=match) as err:
        attacks.pgd_linf(Net(), x, bad, eps=0.1, steps=2)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- cache folder

def _tree(root, *, pyproject: str | None, notebooks: bool):
    pkg = root / "lib" / "threatlab"
    pkg.mkdir(parents=True)
    if pyproject is not None:
        (root / "pyproject.toml").write_text(pyproject)
    if notebooks:
        (root / "notebooks").mkdir()
    return pkg


def test_cache_folder_env_checkout_or_user_cache(tmp_path, monkeypatch):
    from threatlab import data, models, paths

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("THREATLAB_CACHE", str(tmp_path / "env"))
    assert paths.cache_dir() == data.cache_dir() == tmp_path / "env"
    assert models.checkpoint_dir() == tmp_path / "env" / "models"
    monkeypatch.delenv("THREATLAB_CACHE")

    # a source checkout: pyproject.toml naming threatlab and notebooks/ beside lib/
    repo = tmp_path / "repo"
    monkeypatch.setattr(paths, "_PACKAGE", _tree(repo, pyproject='[project]\nname = "threatlab"\n', notebooks=True))
    assert paths.source_checkout() == repo
    assert paths.cache_dir() == data.cache_dir() == repo / "data" / "cache"
    assert models.checkpoint_dir() == repo / "data" / "cache" / "models"

    # installed (site-packages), or look-alikes that are not this project's checkout
    site = tmp_path / "prefix" / "lib" / "python3.11" / "site-packages" / "threatlab"
    site.mkdir(parents=True)
    other = _tree(tmp_path / "other", pyproject='[project]\nname = "not-threatlab"\n', notebooks=True)
    bare = _tree(tmp_path / "bare", pyproject='[project]\nname = "threatlab"\n', notebooks=False)
    for pkg in (site, other, bare):
        monkeypatch.setattr(paths, "_PACKAGE", pkg)
        assert paths.source_checkout() is None
        assert paths.cache_dir() == data.cache_dir() == tmp_path / "xdg" / "threatlab"
        assert models.checkpoint_dir() == tmp_path / "xdg" / "threatlab" / "models"
