"""The user's side of `threatlab audit`: their model (``module:factory`` plus weights)
and their data (a built-in data set or a folder), checked before any compute.

Nothing here unpickles: weights are safetensors, or a ``.pt``/``.pth`` state dict read
with ``torch.load(weights_only=True)`` (tensors and containers only); a data folder is
IDX files (`threatlab.data.parse_idx`) or an ``.npz`` read with ``allow_pickle=False``.
Every refusal is a `ConfigError` whose one line names the flag, what was found and what
is allowed; the CLI prints it and exits with code 2.

The kernels take inputs in [0, 1] with normalisation inside the model (DESIGN.md,
Contracts). A model declared on another range (``--input-range LO,HI``) is wrapped in
`InputRange`, which maps the kernels' [0, 1] onto [LO, HI]; a folder's data are in the
model's own units and are mapped the other way once, after checking they lie in range.
"""
from __future__ import annotations

import gzip
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import data as tl_data
from ..errors import ConfigError, DataUnavailableError, IntegrityError

__all__ = ["AuditData", "InputRange", "load_data", "load_factory", "load_model", "load_weights",
           "probe_model", "BUILTIN"]

#: Data sets `--data` knows by name (everything else is a folder).
BUILTIN = ("mnist", "fashion_mnist")
#: Largest weights file read (a weights file of GBs is not an MNIST-scale audit).
MAX_WEIGHTS_BYTES = 2 << 30
#: IDX file names of a folder, official MNIST / Fashion-MNIST naming, optionally gzipped.
IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


# ------------------------------------------------------------------------- model


def load_factory(spec: str) -> Any:
    """The callable named by ``module:factory`` or ``path/to/file.py:factory``.

    A module is imported from the current folder or PYTHONPATH (the cwd is put first on
    sys.path, as ``python -m`` does); a ``.py`` path is loaded as a module of its own.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"--model {spec!r} must be module:factory or path/to/file.py:factory")
    mod_name, attr = spec.split(":")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise ConfigError(f"--model {spec!r}: {mod_name} is not a file")
        uspec = importlib.util.spec_from_file_location(f"threatlab_audit_user_{path.stem}", path)
        module = importlib.util.module_from_spec(uspec)
        try:
            uspec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's code: any failure is bad input
            raise ConfigError(f"--model {spec!r}: importing {mod_name} failed ({type(e).__name__}: {e})") from None
    else:
        cwd = str(Path.cwd())
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise ConfigError(f"--model {spec!r}: no module named {e.name!r} (looked in the current folder "
                              "and PYTHONPATH; or give path/to/file.py:factory)") from None
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"--model {spec!r}: importing {mod_name} failed ({type(e).__name__}: {e})") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"--model {spec!r}: {mod_name} has no callable {attr!r}; its callables: {found}")
    return fn


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a .pt/.pth read with weights_only=True."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--weights {path!r} is not a file")
    if p.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ConfigError(f"--weights {path!r} is {p.stat().st_size} bytes; at most {MAX_WEIGHTS_BYTES} allowed")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise ConfigError(f"--weights {path!r} does not read as safetensors ({e})") from None
    elif suffix in (".pt", ".pth"):
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - refused by the weights-only reader: one answer
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ConfigError(f"--weights {path!r} is not a weights-only state dict (torch.load(weights_only=True) "
                              f"refused it: {type(e).__name__}: {first[:200]}); nothing is unpickled") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]  # the common training-script wrapper
    else:
        raise ConfigError(f"--weights {path!r} has suffix {suffix or '(none)'!r}; allowed: .safetensors, "
                          ".pt, .pth (a state dict; .pt read with weights_only=True)")
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ConfigError(f"--weights {path!r} must hold a state dict (name -> tensor); got "
                          f"{type(state).__name__}")
    return state


def load_model(spec: str, weights: str | None) -> nn.Module:
    """The factory's module with `weights` loaded strictly, in eval mode, on the CPU.

    Refused: a factory that needs arguments or fails, one that does not return an
    nn.Module, weights with missing or unexpected keys, differently shaped or
    non-finite tensors.
    """
    fn = load_factory(spec)
    try:
        required = [p.name for p in inspect.signature(fn).parameters.values()
                    if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        required = []
    if required and not isinstance(fn, type):
        raise ConfigError(f"--model {spec!r}: the factory must be callable without arguments; it requires "
                          f"{required}")
    try:
        model = fn()
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"--model {spec!r}: calling the factory failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {spec!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = load_weights(weights)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ConfigError(f"--weights {weights!r} do not match the architecture of {spec}: missing keys "
                              f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected keys "
                              f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        for k, ref in expected.items():
            t = state[k]
            if tuple(t.shape) != tuple(ref.shape):
                raise ConfigError(f"--weights {weights!r}: {k} has shape {tuple(t.shape)}; the architecture of "
                                  f"{spec} has {tuple(ref.shape)}")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ConfigError(f"--weights {weights!r}: {k} holds NaN or inf")
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.eval()


class InputRange(nn.Module):
    """`model` on inputs in [lo, hi], seen by the kernels as a model on [0, 1]: the
    kernels' budgets and boxes stay in [0, 1] units, i.e. fractions of hi - lo."""

    def __init__(self, model: nn.Module, lo: float, hi: float):
        super().__init__()
        self.model, self.lo, self.hi = model, float(lo), float(hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + (self.hi - self.lo) * x)


def probe_model(model: nn.Module, x: torch.Tensor, y_max: int, spec: str) -> int:
    """Run `model` on two rows; return its number of classes. ConfigError when it fails,
    answers something other than logits [2, classes] with finite values, or has fewer
    classes than the data's labels need."""
    try:
        with torch.no_grad():
            out = model(x[:2])
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"--model {spec}: the model fails on the data's inputs of shape "
                          f"{tuple(x[:2].shape)} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != x[:2].shape[0]:
        raise ConfigError(f"--model {spec}: the model must return logits [n, classes]; it returned "
                          f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
    if not bool(torch.isfinite(out).all()):
        raise ConfigError(f"--model {spec}: the model's outputs on the data hold NaN or inf")
    k = int(out.shape[1])
    if k < 2 or y_max >= k:
        raise ConfigError(f"--model {spec}: the model answers {k} classes but the data's labels go up to {y_max}")
    return k


# -------------------------------------------------------------------------- data


@dataclass
class AuditData:
    """Both splits in [0, 1] (the kernels' units), float32 [n, C, H, W] and Long [n]."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str


def _to_images(name: str, a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ConfigError(f"--data {where}: {name} has dtype {a.dtype}; numbers are required")
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] == 0:
        raise ConfigError(f"--data {where}: {name} has shape {a.shape}; allowed: [n, H, W] or [n, C, H, W] "
                          "with n > 0")
    return a


def _to_labels(name: str, a: np.ndarray, n: int, where: str) -> np.ndarray:
    if a.ndim != 1 or a.shape[0] != n or not np.issubdtype(a.dtype, np.integer):
        raise ConfigError(f"--data {where}: {name} must be integer class ids of shape ({n},); got "
                          f"{a.dtype} {a.shape}")
    if a.min() < 0:
        raise ConfigError(f"--data {where}: {name} holds negative class ids (min {a.min()})")
    return a


def _read_folder(folder: Path) -> tuple[dict[str, np.ndarray], str]:
    npz = sorted(folder.glob("*.npz"))
    if len(npz) > 1:
        raise ConfigError(f"--data {folder}: {len(npz)} .npz files ({[p.name for p in npz]}); keep one")
    if npz:
        try:
            with np.load(npz[0], allow_pickle=False) as f:
                keys = set(f.files)
                missing = [k for k in NPZ_KEYS if k not in keys]
                if missing:
                    labels = " (a data set without labels cannot be audited)" if any(
                        k.startswith("y_") for k in missing) else ""
                    raise ConfigError(f"--data {folder}: {npz[0].name} lacks {missing}{labels}; it needs "
                                      f"{list(NPZ_KEYS)}")
                return {k: np.asarray(f[k]) for k in NPZ_KEYS}, npz[0].name
        except ValueError as e:  # object arrays need pickle: refused
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"--data {folder}: {npz[0].name} does not read without pickle ({e})") from None
        except (OSError, EOFError) as e:
            raise ConfigError(f"--data {folder}: {npz[0].name} is not a readable .npz ({e})") from None
    arrays, missing = {}, []
    for key, base in IDX_NAMES.items():
        path = next((folder / n for n in (base, base + ".gz") if (folder / n).is_file()), None)
        if path is None:
            missing.append(base)
            continue
        raw = path.read_bytes()
        if path.suffix == ".gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as e:
                raise ConfigError(f"--data {folder}: {path.name} is not gzip ({e})") from None
        try:
            arrays[key] = tl_data.parse_idx(raw, ndim=3 if key.startswith("x_") else 1, what=path.name)
        except (IntegrityError, ConfigError, ValueError) as e:
            raise ConfigError(f"--data {folder}: {e}") from None
    if missing:
        labels = " (a data set without labels cannot be audited)" if any("labels" in m for m in missing) \
            and len(missing) < 4 else ""
        raise ConfigError(f"--data {folder}: no .npz (x_train, y_train, x_test, y_test) and IDX files missing: "
                          f"{missing}{labels}")
    return arrays, "IDX files"


def load_data(spec: str, lo: float, hi: float) -> AuditData:
    """`--data`: a built-in name (its images in [0, 1]) or a folder whose data are in the
    model's units and must lie in [lo, hi]; returned in [0, 1] units."""
    if spec in BUILTIN:
        try:
            xtr, ytr = tl_data.load(spec, "train")
            xte, yte = tl_data.load(spec, "test")
        except DataUnavailableError as e:
            raise ConfigError(f"--data {spec}: {e}") from None
        return AuditData(spec, xtr, ytr, xte, yte, f"threatlab.data.load({spec!r})")
    folder = Path(spec)
    if not folder.is_dir():
        raise ConfigError(f"--data {spec!r} is neither a built-in data set {list(BUILTIN)} nor a folder")
    arrays, source = _read_folder(folder)
    out = {}
    for split in ("train", "test"):
        x = _to_images(f"x_{split}", arrays[f"x_{split}"], spec)
        y = _to_labels(f"y_{split}", arrays[f"y_{split}"], x.shape[0], spec)
        xf = x.astype(np.float64)
        if not np.isfinite(xf).all():
            raise ConfigError(f"--data {spec}: x_{split} holds NaN or inf")
        xmin, xmax = float(xf.min()), float(xf.max())
        if xmin < lo or xmax > hi:
            hint = " (pixels 0..255? pass --input-range 0,255 or divide by 255)" if xmax > 1.5 and hi <= 1 else ""
            raise ConfigError(f"--data {spec}: x_{split} has values in [{xmin:.4g}, {xmax:.4g}], outside the declared "
                              f"--input-range {lo:g},{hi:g}{hint}")
        unit = ((xf - lo) / (hi - lo)).clip(0, 1).astype(np.float32)
        out[split] = (torch.from_numpy(unit), torch.from_numpy(y.astype(np.int64)))
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise ConfigError(f"--data {spec}: train images {tuple(out['train'][0].shape[1:])} and test images "
                          f"{tuple(out['test'][0].shape[1:])} differ in shape")
    return AuditData(str(folder), *out["train"], *out["test"], f"{folder} ({source})")
