"""Results files with provenance.

Each family notebook writes `<out>/results/<notebook>.json`: its evidence per finding,
its other measurements, and what produced them: git sha, the main package versions,
every installed distribution (``name==version``, sorted),
seed, device and parameters. Everything in that file is a function of code, parameters
and machine, so two runs of a profile give identical bytes, sequential or distributed.
What varies run to run (wall time, per-attack timings, the date, and the thread pools in
use (threadpoolctl), which depend on how the run was launched) goes to
`<notebook>.run.json` beside it.
"""
from __future__ import annotations

import json
import math
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..io import atomic_write
from ..models import tensor_digest

REPO = Path(__file__).resolve().parents[3]
#: Floats are stored with this many decimals: enough for every judge, and it keeps
#: files readable.
DECIMALS = 6


def jsonable(value: Any, *, exact: bool = False) -> Any:
    """Tensors, arrays and numpy scalars to plain JSON values; NaN/inf to None.

    Floats are rounded to `DECIMALS` unless `exact`: parameters (inputs) are kept exactly,
    since two learning rates 1e-7 and 2e-7 both round to 0.0, and a sweep point's
    identity and its results' provenance must tell them apart. JSON writes a float as
    its shortest repr, which reads back to the same float, so exact values of up to six
    decimals are stored exactly as rounding stored them."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [jsonable(v, exact=exact) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v, exact=exact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, exact=exact) for v in value]
    if isinstance(value, float):
        return None if not math.isfinite(value) else value if exact else round(value, DECIMALS)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    return str(value)


def git_sha() -> str:
    """HEAD's sha, with '+dirty' when library or notebook code differs from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "lib", "notebooks"],
                               cwd=REPO, capture_output=True, timeout=10).returncode != 0
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of what produced the numbers."""
    import threatlab

    out = {"python": platform.python_version(), "threatlab": threatlab.__version__,
           "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("sklearn", "matplotlib", "papermill"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def _canonical(name: str) -> str:
    """PEP 503 normalised name: 'Jinja2' and 'jinja2', 'nest_asyncio2' and 'nest-asyncio2' agree."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions() -> list[str]:
    """Every installed distribution as ``name==version``, sorted by normalised name.

    Where a name is installed twice on ``sys.path``, the first one (the one ``import``
    finds) is kept, as pip does.
    """
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata is not None else None
        if not name:
            continue                     # a broken .dist-info folder
        seen.setdefault(_canonical(name), f"{name}=={dist.version}")
    return [seen[k] for k in sorted(seen)]


def threads() -> dict[str, Any]:
    """Threads and native thread pools in use: torch's intra-/inter-op threads and, from
    ``threadpoolctl.threadpool_info()``, each loaded BLAS / OpenMP library (API,
    implementation, version, threads, file), sorted so the order is stable."""
    from threadpoolctl import threadpool_info

    pools = sorted((jsonable(p) for p in threadpool_info()),
                   key=lambda p: (str(p.get("user_api")), str(p.get("internal_api")),
                                  str(p.get("filepath"))))
    return {"torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": torch.get_num_interop_threads(), "pools": pools}


def provenance(seed: Any, params: dict[str, Any]) -> dict[str, Any]:
    """What produced a results file; the same on every run on one machine (no dates)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"git": git_sha(), "versions": versions(), "distributions": distributions(),
            "seed": seed, "device": device, "parameters": jsonable(params, exact=True)}


class Recorder:
    """Collects a notebook's numbers and writes them once, atomically.

        >>> rec = Recorder("04_adversarial", out_dir, params=params)
        >>> rec.evidence("F13", {...}); rec.metric("clean_accuracy", 0.99)
        >>> rec.timing("pgd_linf_s_per_example", 0.002)
        >>> rec.data("x_test", x_test, y_test)   # sha256 of the arrays the numbers came from
        >>> rec.save()
    """

    def __init__(self, notebook: str, out_dir: str | Path, *, params: dict[str, Any]):
        self.notebook = notebook
        self.out_dir = Path(out_dir)
        # Where the files go does not change the numbers; leaving it out keeps two runs
        # into different folders byte-identical.
        self.params = {k: v for k, v in params.items() if k != "out_dir"}
        self._t0 = time.perf_counter()
        # Not `self.data`: that name is the method recording data digests.
        self.sections: dict[str, Any] = {"evidence": {}, "metrics": {}}
        self.timings: dict[str, Any] = {}
        self.data_digests: dict[str, dict[str, Any]] = {}

    def evidence(self, finding_id: str, values: dict[str, Any]) -> None:
        """Numbers the finding `finding_id`'s judge reads."""
        self.sections["evidence"][finding_id] = jsonable(values)

    def metric(self, name: str, value: Any) -> None:
        """Any other measurement worth keeping (tables, curves)."""
        self.sections["metrics"][name] = jsonable(value)

    def timing(self, name: str, seconds: Any) -> None:
        """A wall-clock measurement: kept apart because it differs run to run."""
        self.timings[name] = jsonable(seconds)

    def save(self) -> Path:
        """Write results/<notebook>.json and results/<notebook>.run.json; return the former."""
        doc = {
            "notebook": self.notebook,
            "provenance": provenance(self.params.get("seed"), self.params),
            **self.sections,
        }
        doc["provenance"]["data"] = {k: self.data_digests[k] for k in sorted(self.data_digests)}
        # Every split threatlab.data.load returned in this process, without a line in the notebook.
        from .. import data as _data

        doc["provenance"]["data_loaded"] = _data.loaded()
        path = self.out_dir / "results" / f"{self.notebook}.json"
        atomic_write(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        # Thread pools depend on how the run was launched (a Dask worker process pins
        # BLAS to one thread, a shell does not), not on what it computed: they go with
        # the wall times, so a sequential and a distributed sweep write identical results.
        run = {"notebook": self.notebook, "wall_time_s": round(time.perf_counter() - self._t0, 2),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "timings": self.timings,
               "threads": threads()}
        atomic_write(self.out_dir / "results" / f"{self.notebook}.run.json",
                     json.dumps(run, indent=1, sort_keys=True) + "\n")
        return path

    def curve(self, name: str, x_label: str, y_label: str,
              series: dict[str, tuple[Any, Any]]) -> None:
        """A curve the notebook draws, kept so a sweep can band it over seeds.

        name: the single-run figure's stem (e.g. "04_success_vs_eps"); 05_findings
        draws `<name>_seeds` from every seed's copy. series maps a line's label to its
        (xs, ys), equal lengths, xs finite numbers; a y may be None/NaN (not reached),
        which the band leaves out. Stored under "curves" in the results document.
        """
        from .. import validate
        from ..errors import ConfigError

        validate.of_type("name", name, str)
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"name={name!r} must be a plain figure stem like '04_success_vs_eps'")
        for label, value in (("x_label", x_label), ("y_label", y_label)):
            validate.of_type(label, value, str)
            if not value:
                raise ConfigError(f"{label}={value!r} must name the axis")
        validate.of_type("series", series, dict)
        if not series:
            raise ConfigError("series={} must hold at least one line: {label: (xs, ys)}")
        stored = {}
        for label, pair in series.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ConfigError(f"series[{label!r}] must be a pair (xs, ys)")
            raw = pair[1].tolist() if hasattr(pair[1], "tolist") else list(pair[1])
            if any(y is not None and isinstance(y, (int, float)) and math.isinf(y) for y in raw):
                raise ConfigError(f"series[{label!r}]: ys hold an infinity; use None for 'not reached'")
            xs, ys = (jsonable(v) for v in pair)
            if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or not xs:
                raise ConfigError(f"series[{label!r}]: xs and ys must be non-empty sequences of equal length")
            for i, x in enumerate(xs):
                validate.number(f"series[{label!r}] xs[{i}]", x)
            for i, y in enumerate(ys):
                if y is not None:
                    validate.number(f"series[{label!r}] ys[{i}]", y)
            stored[str(label)] = {"x": xs, "y": ys}
        self.sections.setdefault("curves", {})[name] = {"x": x_label, "y": y_label, "series": stored}

    def data(self, name: str, *tensors: Any) -> dict[str, Any]:
        """Record, under provenance.data[`name`], the sha256 of the arrays (tensors or numpy
        arrays, in order) a notebook's numbers were computed on, with their shapes and
        dtypes (`data_digest`). Recording the same name twice keeps the last."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name={name!r} must be a non-empty string")
        self.data_digests[name] = data_digest(*tensors)
        return self.data_digests[name]


def data_digest(*arrays: Any) -> dict[str, Any]:
    """sha256 over the dtype, shape and raw bytes of each array in order (a numpy array
    hashes like the tensor `torch.from_numpy` makes of it), plus the shapes and dtypes.

    The bytes are the values, so the same data gives the same digest on any device, and
    one changed pixel, a reordering or another subset gives another.
    """
    if not arrays:
        raise ConfigError("data_digest needs at least one tensor or array")
    tensors = []
    for i, a in enumerate(arrays):
        if isinstance(a, np.ndarray):
            a = torch.from_numpy(np.ascontiguousarray(a))
        if not isinstance(a, torch.Tensor):
            raise ConfigError(f"arrays[{i}] is a {type(a).__name__}; expected a torch tensor or numpy array")
        tensors.append(a)
    return {"sha256": tensor_digest(*tensors), "shapes": [list(t.shape) for t in tensors],
            "dtypes": [str(t.dtype).removeprefix("torch.") for t in tensors]}


def load_all(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every results file under <out_dir>/results, by notebook name (run files skipped)."""
    folder = Path(out_dir) / "results"
    found = {}
    for p in sorted(folder.glob("*.json")) if folder.exists() else []:
        if p.name.endswith(".run.json"):
            continue
        found[p.stem] = json.loads(p.read_text(encoding="utf-8"))
    return found


def load_runs(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every <notebook>.run.json (wall times, timings) by notebook name."""
    folder = Path(out_dir) / "results"
    return {p.name[: -len(".run.json")]: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(folder.glob("*.run.json"))} if folder.exists() else {}
