"""`python -m threatlab sweep`: the notebooks of a profile over seeds, data sets and a
grid of parameter values, on Dask distributed, from one laptop to a cluster.

    python -m threatlab sweep --profile quick --seeds 0-4 --datasets mnist,fashion_mnist \\
        [--grid key=v1,v2 ...] [--only 02 04] [--out DIR] [--scheduler ADDRESS] [--workers N]
    python -m threatlab sweep collect [--profile quick] [--out DIR]

A sweep expands to *points* (notebook, parameters). Each point is executed by papermill
into its own folder, ``<points>/<notebook>/<digest>/``, named by the sha256 of its
canonical parameters, holding what a single run writes (figures, tables/, results/)
plus its executed copy (executed/<notebook>.ipynb) and point.json (its identity). A
point is built in a staging folder beside it and renamed into place when it completed,
so a folder that exists is complete; a point whose folder exists and whose results file
holds the same parameters is skipped, which makes an interrupted sweep resume where it
stopped. The notebooks that read other notebooks' results (00, 05) run once per (seed,
data set, grid combination) after the family points they read, as Dask dependencies;
their folder starts with a copy of those points' results/.

Where things go. Without ``--out``: points under build/sweep/<profile>/points, the
manifest beside them, and the gathered table, the first seed's first data set's
figures/tables/results and executed copies in the profile's ``out`` folder (figures/ for
quick), exactly as `threatlab.run` writes them. Only a sweep that meets the published
design (5+ seeds x mnist,fashion_mnist, quick or full, every notebook, no grid:
`threatlab.run.short_of_design`) writes figures/, docs/ and README's table; a smaller
one whose profile names them writes build/figures-<profile>-s<seeds>-<data sets>/ (and
build/docs-.../) instead, and its last line says where. With ``--out DIR`` everything stays
under DIR: DIR/points, DIR/manifest.json, and DIR/figures for the published view.

Engine. Default: an in-process ``LocalCluster`` with one single-threaded worker process
per core (papermill changes the process's working directory, so two points never share
a process); ``--workers 0`` runs the points one after another in this process (same
bytes); ``--scheduler tcp://host:8786`` submits them to a running cluster whose workers
see the same checkout and cache paths. Points of notebooks the profile marks ``gpu``
ask for the worker resource ``{"GPU": 1}``.

A failing point is retried once, then recorded in the manifest (point, parameters,
error line, executed copy); the others go on and the sweep exits 1 with one line per
failure. Bad input (unknown data set, empty or reversed seed range, unknown grid key,
value of the wrong type or outside a notebook's declared constraints, unreachable
scheduler) is a ConfigError before anything runs (exit 2).
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import itertools
import json
import math
import os
import re
import shutil
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import run as R
from .errors import ConfigError
from .io import atomic_write

#: Collected table and manifest names.
POINTS_JSONL = "points.jsonl"
POINTS_CSV = "points.csv"
MANIFEST = "manifest.json"
#: Notebooks without a `dataset` parameter read this data set.
IMPLICIT_DATASET = "mnist"
#: Seconds to wait for a scheduler given by address before calling it unreachable.
CONNECT_TIMEOUT_S = 5
#: The most seeds one --seeds may name: a range is counted before its list is built, so
#: a typo such as 0-100000000 is one line, not a MemoryError after seconds.
MAX_SEEDS = 10_000
#: Local worker processes per core at most: each is a Python process with a kernel, so
#: a typo such as --workers 10000 would start thousands of them.
MAX_WORKERS_PER_CORE = 4
#: Coordinates set by --seeds / --datasets, not --grid.
COORDINATES = ("seed", "dataset")
#: Notebooks that read the gathered table (<out>/sweep/points.jsonl): run once more in
#: the published folder after collection, so its findings are the sweep's.
SWEEP_READERS = ("05_findings",)


# ------------------------------------------------------------------- parsing

def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"``; ``"2"``. Empty, reversed, negative or
    repeated seeds, and more than `MAX_SEEDS` seeds in all, are ConfigErrors."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--seeds {text!r} is empty; give a range such as 0-4 or a list such as 0,3,7")
    seeds: list[int] = []
    count = 0
    for part in text.split(","):
        part = part.strip()
        # At most 10 digits: int() of thousands of digits raises (or takes long), and no
        # seed needs more (numpy takes seeds below 2**32).
        m = re.fullmatch(r"(\d{1,10})\s*-\s*(\d{1,10})", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"--seeds {text!r}: range {part} is reversed (empty); write {hi}-{lo}")
            count += hi - lo + 1
        elif re.fullmatch(r"\d{1,10}", part):
            count += 1
        else:
            raise ConfigError(f"--seeds {text[:80]!r}: {part[:40]!r} is not a non-negative integer (at most 10 "
                              "digits) or a range a-b")
        if count > MAX_SEEDS:  # counted before anything is built
            raise ConfigError(f"--seeds {text[:80]!r} names more than {MAX_SEEDS} seeds; allowed: at most "
                              f"{MAX_SEEDS} (a range a-b counts b-a+1)")
        if m:
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} repeats a seed")
    return seeds


def parse_datasets(text: str) -> list[str]:
    """``"mnist,fashion_mnist"`` -> names, each a known data set."""
    from . import data

    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not names:
        raise ConfigError(f"--datasets {text!r} is empty; choose from {data.names()}")
    for n in names:
        if n not in data.names():
            raise ConfigError(f"--datasets: unknown data set {n!r}; choose from {data.names()}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--datasets {text!r} repeats a data set")
    return names


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so ``eps_grid=[0.1,0.2],[0.3]`` gives two lists."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_grid(items: list[str] | None) -> dict[str, list[Any]]:
    """``["eps_linf=0.1,0.3", "arch=mlp,cnn"]`` -> {"eps_linf": [0.1, 0.3], ...}; values
    are read as YAML scalars/lists (0.1 a float, 10 an int, true a bool, [1, 2] a list)."""
    grid: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, vals = item.partition("=")
        key = key.strip()
        if not sep or not key or not vals.strip():
            raise ConfigError(f"--grid {item!r} must read key=v1,v2,...")
        if key in COORDINATES:
            raise ConfigError(f"--grid {key}: use --{key}s, not --grid, for {key}")
        if key in R.RUNNER_PARAMS:
            raise ConfigError(f"--grid {key}: {key!r} is set by the runner")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice")
        values = []
        for v in _split_values(vals):
            try:
                values.append(yaml.safe_load(v) if v else None)
            except yaml.YAMLError:
                raise ConfigError(f"--grid {key}: value {v!r} does not parse") from None
        if any(v is None for v in values):
            raise ConfigError(f"--grid {item!r} has an empty value")
        from . import validate

        for i, v in enumerate(values):  # .nan / .inf parse as floats; no parameter takes them
            validate.finite_values(f"--grid {key}", v)
        grid[key] = values
    return grid


# --------------------------------------------------------------------- points

def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class Point:
    """One notebook execution of a sweep."""

    notebook: str                  # stem, e.g. "04_adversarial"
    path: Path                     # the notebook file
    params: dict[str, Any]         # injected parameters without out_dir
    seed: int
    dataset: str
    grid: dict[str, Any]           # this point's grid combination (all keys of the sweep)
    deps: tuple[str, ...]          # digests of the points whose results it reads
    gpu: bool
    identity: dict[str, Any]       # what the digest is the hash of
    digest: str
    folder: Path

    @property
    def aggregator(self) -> bool:
        return self.notebook in R.READS_RESULTS

    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.grid.items())
        return f"{self.notebook} seed={self.seed} dataset={self.dataset}{extra} [{self.digest}]"


def _identity(notebook: str, params: dict[str, Any], *, seed: int, dataset: str, grid: dict[str, Any],
              deps: list[str]) -> dict[str, Any]:
    from .report.results import jsonable

    # Floats exactly (not rounded to 6 decimals, which made lr=1e-7 and 2e-7 one point);
    # a float of up to 6 decimals encodes as before, so existing digests stay.
    ident: dict[str, Any] = {"notebook": notebook, "params": jsonable(params, exact=True)}
    # 00 and 05 have no dataset (05 no seed) parameter: their coordinates and inputs
    # are what make their points distinct.
    if notebook in R.READS_RESULTS:
        ident.update(seed=seed, dataset=dataset, grid=jsonable(grid, exact=True), inputs=sorted(deps))
    return ident


def digest_of(identity: dict[str, Any]) -> str:
    """16 hex digits of sha256 over the canonical JSON of a point's identity."""
    return hashlib.sha256(canonical(identity).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """A checked sweep: points in dependency order and where everything goes."""

    profile_name: str
    profile: R.Profile
    seeds: list[int]
    datasets: list[str]
    grid: dict[str, list[Any]]
    points: list[Point]
    root: Path                # lock, manifest (and points unless default layout)
    store: Path               # <store>/<notebook>/<digest>/
    publish_dir: Path         # the single-run view (figures/ for quick)
    docs_dir: Path | None
    timeout_s: int
    cwd: Path
    contained: bool           # --out given: everything under root
    first: set[str] = field(default_factory=set)  # digests published
    force: bool = False       # publish into a folder threatlab did not write (R.claim)
    short_of_design: str | None = None  # why it may not write the published results; None: it may

    @property
    def notebook_of(self) -> dict[str, str]:
        return {p.digest: p.notebook for p in self.points}


def plan(profile_name: str, *, seeds: list[int], datasets: list[str], grid: dict[str, list[Any]] | None = None,
         only: list[str] | None = None, out: str | None = None,
         notebooks_dir: Path | None = None) -> Plan:
    """Expand a sweep into points and check every point's parameters (types, declared
    ranges and cross-bounds) before anything runs."""
    grid = dict(grid or {})
    profile = R.load_profile(profile_name, notebooks_dir=notebooks_dir)
    every = R.notebook_paths(notebooks_dir)
    paths = R.select(every, only)
    R.check_defaults_used(profile, paths, every)
    declared = {p.stem: R.notebook_parameters(p) for p in paths}
    for key, values in grid.items():
        owners = [nb for nb, d in declared.items() if key in d]
        if not owners:
            raise ConfigError(f"--grid {key}: no selected notebook has a parameter {key!r} "
                              f"({', '.join(declared)})")
        for nb in owners:
            for v in values:
                R.check_kind(nb, key, v, declared[nb][key], f"--grid {key}")
    for nb, d in declared.items():
        if nb in R.READS_RESULTS or "dataset" in d:
            continue
        wrong = [ds for ds in datasets if ds != IMPLICIT_DATASET]
        if wrong:
            raise ConfigError(f"notebook {nb} has no 'dataset' parameter (it reads {IMPLICIT_DATASET}), so it "
                              f"cannot be swept over --datasets {','.join(datasets)}; sweep --datasets "
                              f"{IMPLICIT_DATASET}, or leave it out with --only")
    contained = out is not None
    if contained:
        root = Path(out).resolve()
        store, publish_dir = root / "points", root / "figures"
    else:
        root = (R.REPO / "build" / "sweep" / Path(profile_name).stem).resolve()
        store, publish_dir = root / "points", R.default_out(profile_name, profile)
    docs_dir = None
    if profile.get("docs"):
        docs_dir = (root / "docs") if contained else (R.REPO / profile["docs"]).resolve()
    short = R.short_of_design(profile_name, seeds, datasets, every_notebook=len(paths) == len(every), grid=grid)
    published = [d for d in (publish_dir, docs_dir) if d is not None and R.is_published(d)]
    if published and short is not None:
        if contained:
            raise ConfigError(f"--out {out}: {published[0]} holds the published results, which only a sweep of "
                              f"{R.PUBLISHED_MIN_SEEDS}+ seeds x {','.join(R.PUBLISHED_DATASETS)} of every notebook "
                              f"writes ({short}); give another --out")
        # Smaller than the published design: its own folder under build/, never figures/.
        publish_dir = R.scratch_out(profile_name, seeds, datasets)
        if docs_dir is not None:
            docs_dir = publish_dir.with_name(publish_dir.name.replace("figures-", "docs-", 1))
    gpu_key = profile.get("gpu", False)
    keys = list(grid)
    combos = [dict(zip(keys, c)) for c in itertools.product(*(grid[k] for k in keys))] or [{}]
    points: list[Point] = []
    first: set[str] = set()
    for seed in seeds:
        for ds in datasets:
            for ci, combo in enumerate(combos):
                family: list[str] = []
                is_first = seed == seeds[0] and ds == datasets[0] and ci == 0
                for path in sorted(paths, key=lambda p: (p.stem in R.READS_RESULTS, p.name)):
                    nb = path.stem
                    agg = nb in R.READS_RESULTS
                    overrides = {"seed": seed, "dataset": ds, **combo}
                    params = R.resolve_parameters(path, profile, profile_name, Path("/"), overrides)
                    params.pop("out_dir")
                    if "update_readme" in params:
                        # No point writes README: the sweep-level 05 run at publishing does,
                        # and only into the repository's own figures/.
                        params["update_readme"] = False
                    try:
                        R.preflight(path, params)
                    except ConfigError as e:
                        where = f"seed={seed} dataset={ds}" + "".join(f" {k}={v}" for k, v in combo.items())
                        raise ConfigError(f"point {where}: {e}") from None
                    deps = list(family) if agg else []
                    ident = _identity(nb, params, seed=seed, dataset=ds, grid=combo, deps=deps)
                    digest = digest_of(ident)
                    gpu = gpu_key is True or (isinstance(gpu_key, list) and nb in gpu_key)
                    pt = Point(nb, path, params, seed, ds, dict(combo), tuple(deps), gpu, ident, digest,
                               store / nb / digest)
                    if not any(q.digest == digest for q in points):
                        points.append(pt)
                    if not agg:
                        family.append(digest)
                    if is_first:
                        first.add(digest)
    points.sort(key=lambda p: p.aggregator)  # families first: a valid topological order
    return Plan(profile_name, profile, seeds, datasets, grid, points, root, store, publish_dir, docs_dir,
                int(profile.get("timeout_s", R.DEFAULT_TIMEOUT_S)),
                Path(notebooks_dir) if notebooks_dir is not None else R.NOTEBOOKS, contained, first,
                short_of_design=short)


# ----------------------------------------------------------------- execution

def is_complete(folder: Path, identity: dict[str, Any]) -> bool:
    """A point is complete when its folder holds point.json with the same identity and,
    for a family notebook, a results file recording the same parameters."""
    # A damaged file (not JSON, or JSON of another shape) means "not complete": the point
    # is executed again and its folder replaced.
    try:
        rec = json.loads((folder / "point.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(rec, dict) or rec.get("identity") != identity:
        return False
    nb = identity["notebook"]
    if nb in R.READS_RESULTS:
        return True
    try:
        doc = json.loads((folder / "results" / f"{nb}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    prov = doc.get("provenance") if isinstance(doc, dict) else None
    recorded = prov.get("parameters") if isinstance(prov, dict) else None
    if not isinstance(recorded, dict):
        return False
    return all(recorded.get(k) == v for k, v in identity["params"].items())


def spec_of(point: Point, plan_: Plan) -> dict[str, Any]:
    """What a worker needs to execute a point: plain, picklable values."""
    return {"notebook": str(point.path), "stem": point.notebook, "params": point.params,
            "identity": point.identity, "digest": point.digest, "folder": str(point.folder),
            "deps": [str(plan_.store / plan_.notebook_of[d] / d) for d in point.deps],
            "timeout_s": plan_.timeout_s, "cwd": str(plan_.cwd), "label": point.label()}


def _outcome(spec: dict[str, Any], status: str, **kw: Any) -> dict[str, Any]:
    return {"digest": spec["digest"], "notebook": spec["stem"], "status": status, "label": spec["label"],
            "error": None, "cell": None, "executed": None, "attempts": 0, "seconds": 0.0, **kw}


def execute_point(spec: dict[str, Any], *dep_outcomes: dict[str, Any]) -> dict[str, Any]:
    """Run one point (in a Dask worker or in-process); never raises for a notebook
    failure: returns {"status": "done" | "skipped" | "failed" | "blocked", ...}.

    Staging: the notebook writes into ``.<digest>.staging-<random>`` beside the point's
    folder, which is renamed to the final name only after success, so a kill at any
    moment leaves either no folder or a complete one. A failure is retried once; the
    second failure's staging folder is kept as ``<digest>.failed`` (its executed copy
    holds the traceback).
    """
    folder = Path(spec["folder"])
    ident = spec["identity"]
    if is_complete(folder, ident):
        return _outcome(spec, "skipped")
    bad = [d for d in dep_outcomes if d["status"] not in ("done", "skipped")]
    if bad:
        return _outcome(spec, "blocked", error="reads the results of failed point(s): "
                        + "; ".join(d["label"] for d in bad))
    folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fail = None
    staging = folder
    for attempt in (1, 2):
        staging = folder.parent / f".{folder.name}.staging-{uuid.uuid4().hex[:8]}"
        (staging / "results").mkdir(parents=True)
        for dep in spec["deps"]:
            for f in sorted((Path(dep) / "results").glob("*.json")):
                shutil.copyfile(f, staging / "results" / f.name)
        params = {**spec["params"], "out_dir": str(staging)}
        target = staging / "executed" / f"{spec['stem']}.ipynb"
        fail = R.execute(Path(spec["notebook"]), target, params, timeout_s=spec["timeout_s"], cwd=Path(spec["cwd"]))
        if fail is None:
            R._relocate(target, staging, folder)
            atomic_write(staging / "point.json", json.dumps({"identity": ident, "digest": spec["digest"]},
                                                             indent=1, sort_keys=True) + "\n")
            R.clean_tmp(staging)
            if folder.exists():
                if is_complete(folder, ident):  # another sweep finished it meanwhile
                    shutil.rmtree(staging)
                    return _outcome(spec, "skipped")
                shutil.rmtree(folder)
            os.rename(staging, folder)
            return _outcome(spec, "done", attempts=attempt, seconds=round(time.perf_counter() - t0, 1))
        if attempt == 1:
            shutil.rmtree(staging, ignore_errors=True)
    failed = folder.parent / f"{folder.name}.failed"
    R._relocate(staging / "executed" / f"{spec['stem']}.ipynb", staging, failed)
    shutil.rmtree(failed, ignore_errors=True)
    os.rename(staging, failed)
    executed = failed / "executed" / f"{spec['stem']}.ipynb"
    return _outcome(spec, "failed", error=fail.error, cell=fail.cell, executed=str(executed), attempts=2,
                    seconds=round(time.perf_counter() - t0, 1))


def _cleanup_store(store: Path) -> None:
    """Drop staging folders a killed sweep left (we hold the sweep's lock) and orphan
    .tmp files."""
    if store.exists():
        for p in store.glob("*/.*.staging-*"):
            shutil.rmtree(p, ignore_errors=True)
        R.clean_tmp(store)
    from .models import checkpoint_dir

    cache = checkpoint_dir()
    if cache.exists():
        # Another process may be writing the cache right now: only stale files go.
        R.clean_tmp(cache, older_than_s=3600)


class _Progress:
    """One bar over points: done / running / failed."""

    def __init__(self, total: int, log: Callable[[str], None]):
        from tqdm.auto import tqdm

        from .runtime import progress_disabled

        self.log = log
        self.bar = tqdm(total=total, desc="sweep", unit="point", disable=progress_disabled() or None,
                        dynamic_ncols=True)
        self.done = self.failed = 0

    def update(self, outcome: dict[str, Any], running: int) -> None:
        if outcome["status"] in ("failed", "blocked"):
            self.failed += 1
            self.log(f"[threatlab] sweep: FAILED {outcome['label']}: {outcome['error']}")
        else:
            self.done += 1
        self.bar.set_postfix_str(f"done {self.done}, running {running}, failed {self.failed}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _probe(address: str, timeout_s: float) -> None:
    """Ask the scheduler at `address` who it is; TimeoutError unless it answers within
    `timeout_s` in all (TCP connect, dask's handshake and the reply).

    Client(timeout=...) bounds only the TCP connect: a peer that accepts the connection
    and never answers hangs it indefinitely. Run in a thread of its own with a fresh event
    loop, so a caller inside a running loop (a notebook) can use it too."""
    import asyncio
    import threading

    from distributed.comm import connect

    async def ask() -> Any:
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["reply"] = asyncio.run(asyncio.wait_for(ask(), timeout_s))
        except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
            box["error"] = e

    t = threading.Thread(target=target, name="threatlab-scheduler-probe", daemon=True)
    t.start()
    t.join(timeout_s + 2)  # wait_for ends the loop in time; the margin is for its teardown
    if t.is_alive() or isinstance(box.get("error"), (TimeoutError, asyncio.TimeoutError)):
        raise TimeoutError(f"no answer from the scheduler within {timeout_s} s")
    if "error" in box:
        e = box["error"]
        raise e if isinstance(e, OSError) else OSError(f"{type(e).__name__}: {R._first_line(e)}")
    if not isinstance(box.get("reply"), dict) or box["reply"].get("type") != "Scheduler":
        raise OSError(f"the peer answered, but not as a Dask scheduler ({str(box.get('reply'))[:80]})")


def _connect(scheduler: str | None, workers: int | None, need_gpu: bool, log: Callable[[str], None]):
    """A dask Client: to `scheduler` (ConfigError within CONNECT_TIMEOUT_S if it cannot be
    reached) or to a fresh LocalCluster of `workers` single-threaded processes."""
    import logging

    from dask.distributed import Client, LocalCluster

    if scheduler:
        if not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+(:\d+)?/?", scheduler):
            raise ConfigError(f"--scheduler {scheduler!r} is not an address such as tcp://host:8786")
        try:
            _probe(scheduler, CONNECT_TIMEOUT_S)
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as e:
            raise ConfigError(f"--scheduler {scheduler} is unreachable within {CONNECT_TIMEOUT_S} s "
                              f"({type(e).__name__}: {R._first_line(e)})") from None
        return client, None
    n = workers if workers else (os.cpu_count() or 1)
    resources = None
    if need_gpu:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("the profile marks points as gpu but this machine has no CUDA device; submit to a "
                              "cluster with GPU workers (--scheduler) or drop the profile's gpu key")
        resources = {"GPU": 1}  # every local worker may run a GPU point; they share the device(s)
    # ":0": a free port, so two sweeps on one machine never collide on 8787 (Dask's
    # scheduler serves HTTP there with or without a dashboard).
    dashboard = ":0"
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=0,
                           dashboard_address=dashboard, resources=resources, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _run_sequential(plan_: Plan, progress: _Progress) -> dict[str, dict[str, Any]]:
    outcomes: dict[str, dict[str, Any]] = {}
    for p in plan_.points:
        o = execute_point(spec_of(p, plan_), *(outcomes[d] for d in p.deps))
        outcomes[p.digest] = o
        progress.update(o, running=0)
    return outcomes


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _dashboard(client: Any) -> str | None:
    """The dashboard's address, or None when there is none worth opening (no bokeh: Dask
    would serve a page that only asks to install it)."""
    if not _has_bokeh():
        return None
    try:
        if "dashboard" in client.scheduler_info().get("services", {}):
            return client.dashboard_link
    except Exception:
        pass
    return None


def cost_hints(plan_: Plan, log: Callable[[str], None] = lambda m: None) -> dict[str, int]:
    """Timing hints, longest notebook first: notebook -> its median wall seconds over
    the points the previous sweep in this folder ran (manifest rows with status "done").

    Points are independent, so on W workers the sweep's wall time is the makespan of
    their queue; starting the longest points first (the longest-processing-time rule)
    keeps a long point from starting last while the other workers run out of work.
    Without a previous manifest every hint is 0 and the plan's order stays.
    Hints only reorder: every point runs with the same parameters either way, and
    each point's results depend on its parameters alone.
    """
    path = plan_.root / MANIFEST
    if not path.exists():
        return {}
    # Only a hint: a damaged manifest costs the ordering, never the sweep.
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = doc.get("points", []) if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            raise ValueError("no list of points")
    except (OSError, ValueError) as e:
        log(f"[threatlab] sweep: warning: {path} does not read ({type(e).__name__}: {R._first_line(e)}); "
            "ignoring its timing hints")
        return {}
    seconds: dict[str, list[float]] = {}
    bad = 0
    for r in rows:
        if not isinstance(r, dict) or r.get("status") != "done":
            continue
        s = r.get("seconds")
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
            bad += 1
            continue
        seconds.setdefault(str(r.get("notebook")), []).append(float(s))
    if bad:
        log(f"[threatlab] sweep: warning: {path}: {bad} point(s) with no usable seconds; ignored as hints")
    return {nb: int(round(statistics.median(v))) for nb, v in seconds.items()}


def submission_order(points: list[Point], hints: dict[str, int]) -> list[Point]:
    """`points` in the order they are submitted: family points by descending hint
    (`cost_hints`; ties keep the plan's order), then the aggregators, whose
    dependencies must finish before them. `_run_dask` submits a point only when a worker
    thread is free, so this order is the order in which points start."""
    return sorted(points, key=lambda q: (q.aggregator, -hints.get(q.notebook, 0)))


def _slots(client: Any) -> int:
    """Points that may run at once: the cluster's worker threads now (at least 1, so a
    scheduler still waiting for its workers gets one point to hand the first to join)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def _run_dask(plan_: Plan, progress: _Progress, client: Any,
              log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Run the points on the cluster, never more at once than it has worker threads.

    Dask assigns a submitted task to a worker at once; with every point submitted up
    front it queued them on a worker by estimated durations it did not know yet, and
    did not steal them back: measured on 2 workers (make figures SEEDS=5), one worker ran
    five points in a row while the other sat idle. Here a point is submitted only when a
    thread is free, longest first (`submission_order`), an aggregator once its
    dependencies have finished (it gets their outcomes, not futures); the count is
    re-read after every completion, so workers that join a remote scheduler are used."""
    from dask.distributed import wait

    link = _dashboard(client)
    if link:
        log(f"[threatlab] sweep: dashboard at {link}")
    hints = cost_hints(plan_, log)
    pending = submission_order(plan_.points, hints)
    running: dict[Any, Point] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    while pending or running:
        free = _slots(client) - len(running)
        for p in [q for q in pending if all(d in outcomes for d in q.deps)][:max(0, free)]:
            fut = client.submit(execute_point, spec_of(p, plan_), *(outcomes[d] for d in p.deps),
                                key=f"{p.notebook}-{p.digest}", pure=False, retries=0,
                                resources={"GPU": 1} if p.gpu else None)
            running[fut] = p
            pending.remove(p)
        if not running:  # cannot happen (dependencies come first in the plan); never spin
            raise RuntimeError(f"sweep: {len(pending)} points wait for dependencies that never ran")
        done, _ = wait(list(running), return_when="FIRST_COMPLETED")
        for fut in done:
            point = running.pop(fut)
            try:
                o = fut.result()
            except Exception as e:  # the worker itself died (twice): record, go on
                o = _outcome(spec_of(point, plan_), "failed", error=f"{type(e).__name__}: {R._first_line(e)}")
            outcomes[point.digest] = o
            progress.update(o, running=len(running))
    return outcomes


@dataclass
class SweepResult:
    plan: Plan
    outcomes: dict[str, dict[str, Any]]
    manifest: Path
    table: Path | None

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes.values() if o["status"] in ("failed", "blocked")]


def failure_line(o: dict[str, Any]) -> str:
    """One line per failed point: point, cell, error, executed copy."""
    cell = f"cell {o['cell']}: " if o.get("cell") is not None else ""
    where = f" (full traceback: {o['executed']})" if o.get("executed") else ""
    return f"{o['label']}: {cell}{o['error']}{where}"


def write_manifest(plan_: Plan, outcomes: dict[str, dict[str, Any]]) -> Path:
    rows = []
    for p in plan_.points:
        o = outcomes.get(p.digest, {"status": "not run"})
        rows.append({"notebook": p.notebook, "digest": p.digest, "seed": p.seed, "dataset": p.dataset,
                     "grid": p.grid, "params": p.identity["params"], "folder": str(p.folder),
                     "status": o["status"], "attempts": o.get("attempts"), "seconds": o.get("seconds"),
                     "error": o.get("error"), "cell": o.get("cell"), "executed": o.get("executed")})
    doc = {"profile": plan_.profile_name, "seeds": plan_.seeds, "datasets": plan_.datasets,
           "grid": plan_.grid, "points": rows,
           "failures": [failure_line(o) for o in outcomes.values() if o["status"] in ("failed", "blocked")]}
    return atomic_write(plan_.root / MANIFEST, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def sweep(profile_name: str, *, seeds: list[int], datasets: list[str], grid: dict[str, list[Any]] | None = None,
          only: list[str] | None = None, out: str | None = None, scheduler: str | None = None,
          workers: int | None = None, notebooks_dir: Path | None = None, publish: bool = True,
          force: bool = False, log: Callable[[str], None] = R._print) -> SweepResult:
    """Plan, check, execute (resuming), collect and publish a sweep; see the module doc.

    `workers`: None = one per core, 0 = sequentially in this process, N = N processes.
    """
    most = MAX_WORKERS_PER_CORE * (os.cpu_count() or 1)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
                                or workers > most):
        raise ConfigError(f"--workers {workers!r} must be an integer in 0..{most} ({MAX_WORKERS_PER_CORE} per "
                          "core; 0 = in this process)")
    if scheduler and workers is not None:
        raise ConfigError("--workers sizes the local cluster; it cannot be combined with --scheduler")
    remote = None
    if scheduler:  # an unreachable scheduler is bad input: found first, within seconds
        remote = _connect(scheduler, None, False, log)[0]
    try:
        plan_ = plan(profile_name, seeds=seeds, datasets=datasets, grid=grid, only=only, out=out,
                     notebooks_dir=notebooks_dir)
        R.check_writable(plan_.store)
        plan_.force = force
        if publish:
            R.check_writable(plan_.publish_dir.parent)
            # Refused before any point runs, not at publishing after hours of them.
            R.claim(plan_.publish_dir, force=force, flag="the published folder")
            if plan_.docs_dir is not None:
                from .report import site

                site.claim_chapters(plan_.docs_dir, force=force)
    except BaseException:
        if remote is not None:
            remote.close()
        raise
    if remote is not None and any(p.gpu for p in plan_.points) and not any(
            "GPU" in (w.get("resources") or {}) for w in remote.scheduler_info().get("workers", {}).values()):
        log(f"[threatlab] sweep: no worker of {scheduler} offers the resource GPU yet; GPU points wait for "
            "one (dask worker ... --resources GPU=1)")
    t0 = time.perf_counter()
    try:
        with R.folder_lock(plan_.root):
            client, cluster = remote, None
            if remote is None and workers != 0:
                client, cluster = _connect(None, workers, any(p.gpu for p in plan_.points), log)
            try:
                _cleanup_store(plan_.store)
                n_skip = sum(is_complete(p.folder, p.identity) for p in plan_.points)
                log(f"[threatlab] sweep {profile_name}: {len(plan_.points)} points "
                    f"({n_skip} complete already), seeds {plan_.seeds}, data sets {plan_.datasets}"
                    + (f", grid {plan_.grid}" if plan_.grid else ""))
                progress = _Progress(len(plan_.points), log)
                try:
                    if client is None:
                        outcomes = _run_sequential(plan_, progress)
                    else:
                        outcomes = _run_dask(plan_, progress, client, log)
                finally:
                    progress.close()
            finally:
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()
            table = publish_sweep(plan_, outcomes, log) if publish else None
            manifest = write_manifest(plan_, outcomes)
    finally:
        if remote is not None:
            remote.close()  # closing twice is harmless
    counts = {s: sum(o["status"] in s for o in outcomes.values())
              for s in (("done",), ("skipped",), ("failed", "blocked"))}
    log(f"[threatlab] sweep {profile_name}: {counts[('done',)]} run, {counts[('skipped',)]} skipped, "
        f"{counts[('failed', 'blocked')]} failed in {time.perf_counter() - t0:.1f} s; manifest {manifest}")
    if publish:
        log(where_line(plan_))
    return SweepResult(plan_, outcomes, manifest, table)


def where_line(plan_: Plan) -> str:
    """The sweep's last line: where its figures went and, below the published design, why
    not into figures/."""
    where = R._shown(plan_.publish_dir)
    if plan_.docs_dir is not None:
        where += f" (pages in {R._shown(plan_.docs_dir)})"
    if plan_.short_of_design is not None and not plan_.contained:
        return (f"[threatlab] sweep: figures, tables and findings in {where}; figures/, docs/ and README.md "
                f"keep the published results ({plan_.short_of_design}: they need {R.PUBLISHED_MIN_SEEDS}+ "
                f"seeds x {','.join(R.PUBLISHED_DATASETS)})")
    return f"[threatlab] sweep: figures, tables and findings in {where}"


# ---------------------------------------------------------- collect / publish

def _tampered(folder: Path, why: str) -> ConfigError:
    return ConfigError(f"sweep point {folder}: {why}; the store was altered or damaged: remove that folder "
                       "and rerun the sweep (it re-executes the point)")


def collect_rows(store: Path, digests: set[str] | None = None) -> list[dict[str, Any]]:
    """One row per complete family point under `store` (or only those in `digests`):
    {"notebook", "dataset", "seed", "digest", "params", "results"}, sorted by
    (notebook, dataset, seed, digest). 00/05 points have no results file and no row.

    Each point is checked before it is gathered: its point.json must hash to its
    folder's name (the digest), and its results' recorded parameters (provenance) must
    be those of its identity. A mismatch is a ConfigError naming the folder: a table
    that silently mixed an edited or swapped point into the findings would be wrong
    without a trace."""
    rows = []
    for rec_path in sorted(Path(store).glob("*/*/point.json")):
        folder = rec_path.parent
        # Staging folders (".<digest>.staging-*", being written) and failed attempts
        # ("<digest>.failed") are not points.
        if folder.name.startswith(".") or folder.name.endswith(".failed"):
            continue
        if digests is not None and folder.name not in digests:
            continue
        try:
            rec = json.loads(rec_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise _tampered(folder, f"point.json does not read as JSON ({type(e).__name__})") from None
        ident = rec.get("identity") if isinstance(rec, dict) else None
        if not isinstance(ident, dict) or not isinstance(ident.get("params"), dict):
            raise _tampered(folder, "point.json holds no identity with parameters")
        try:
            actual = digest_of(ident)
        except ValueError:  # NaN/inf written into it: canonical() refuses them
            raise _tampered(folder, "point.json's identity holds a non-finite number") from None
        if actual != folder.name or rec.get("digest") != folder.name:
            raise _tampered(folder, f"point.json hashes to {actual} (records {rec.get('digest')!r}), "
                                    f"not to its folder's digest {folder.name}")
        nb = ident.get("notebook")
        if nb != folder.parent.name:
            raise _tampered(folder, f"point.json names notebook {nb!r}, not {folder.parent.name!r}")
        if nb in R.READS_RESULTS:
            continue
        res = folder / "results" / f"{nb}.json"
        if not res.exists():
            continue
        try:
            doc = json.loads(res.read_text(encoding="utf-8"))
            recorded = doc.get("provenance", {}).get("parameters", {})
            if not isinstance(recorded, dict):
                raise ValueError
        except (OSError, ValueError, AttributeError):
            raise _tampered(folder, f"results/{nb}.json does not read as a results file") from None
        params = ident["params"]
        for k, v in params.items():
            if recorded.get(k) != v:
                raise _tampered(folder, f"results/{nb}.json records {k}={recorded.get(k)!r} but the point's "
                                        f"identity has {k}={v!r}")
        rows.append({"notebook": nb, "dataset": params.get("dataset", IMPLICIT_DATASET),
                     "seed": params.get("seed"), "digest": rec.get("digest"), "params": params,
                     "results": doc})
    rows.sort(key=lambda r: (r["notebook"], r["dataset"], -1 if r["seed"] is None else r["seed"], r["digest"]))
    return rows


def write_table(rows: list[dict[str, Any]], folder: Path, store: Path) -> Path:
    """<folder>/sweep/points.jsonl (one JSON object a line) and points.csv (an index)."""
    jsonl = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in rows)
    path = atomic_write(folder / "sweep" / POINTS_JSONL, jsonl)
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["notebook", "dataset", "seed", "digest", "folder", "params"])
    for r in rows:
        w.writerow([r["notebook"], r["dataset"], r["seed"], r["digest"],
                    os.path.relpath(store / r["notebook"] / r["digest"], folder / "sweep"),
                    json.dumps(r["params"], sort_keys=True)])
    atomic_write(folder / "sweep" / POINTS_CSV, buf.getvalue())
    return path


def collect(profile_name: str = "quick", *, out: str | None = None, force: bool = False) -> Path:
    """`sweep collect`: gather every complete point of the store into the table.

    The table goes to <figures folder>/sweep/ like a sweep's: a folder threatlab did not
    write is refused in one line unless `force` (`run.claim`), and "sweep" joins the
    names its marker says the runner owns."""
    profile = R.load_profile(profile_name)
    if out is not None:
        root = Path(out).resolve()
        store, folder = root / "points", root / "figures"
    else:
        store = (R.REPO / "build" / "sweep" / Path(profile_name).stem / "points").resolve()
        folder = R.default_out(profile_name, profile)
    if not store.exists():
        raise ConfigError(f"no sweep points under {store}; run `python -m threatlab sweep` first")
    rows = collect_rows(store)
    if R.is_published(folder):
        seeds_of = {ds: {r["seed"] for r in rows if r["dataset"] == ds} for ds in R.PUBLISHED_DATASETS}
        short = R.short_of_design(profile_name, sorted(min(seeds_of.values(), key=len)),
                                  [ds for ds, s in seeds_of.items() if s])
        if short is not None:  # the published table is the design's, never a smaller store's
            raise ConfigError(f"sweep collect: {folder} holds the published results and the points under "
                              f"{store} fall short of their design ({short}); give --out")
    with R.folder_lock(folder):
        owned = R.claim(folder, force=force)
        path = write_table(rows, folder, store)
        if "sweep" not in owned:
            R._write_marker(folder, owned | {"sweep"})
        return path


def publish_sweep(plan_: Plan, outcomes: dict[str, dict[str, Any]], log: Callable[[str], None]) -> Path:
    """Write the gathered table and, when every first-coordinate point completed, copy
    those points' files into the publish folder as a single run writes them; run the
    `SWEEP_READERS` (05) once more there, over the gathered table (README rewritten only
    for the quick profile's own figures/); stage all of it and swap it into place; then
    export the executed notebooks as docs chapters when the profile names a docs folder. A failing 05 run is added to
    `outcomes` (key "publish:<notebook>") and nothing is published."""
    folder = plan_.publish_dir
    rows = collect_rows(plan_.store, {p.digest for p in plan_.points})
    firsts = [p for p in plan_.points if p.digest in plan_.first]
    ok = all(outcomes.get(p.digest, {}).get("status") in ("done", "skipped") for p in firsts)
    executed: list[Path] = []
    with R.folder_lock(folder):
        R.recover(folder)  # first: it may restore the previous folder a kill left aside
        owned = R.claim(folder, force=plan_.force)
        staging = R.stage(folder, owned)
        try:
            if ok:
                for p in firsts:
                    for src in sorted(p.folder.rglob("*")):
                        rel = src.relative_to(p.folder)
                        if src.is_dir() or rel.name == "point.json" or rel.parts[0] == "executed":
                            continue
                        dst = staging / rel
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, dst)
                    src_nb = p.folder / "executed" / f"{p.notebook}.ipynb"
                    dst_nb = staging / "executed" / src_nb.name
                    dst_nb.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src_nb, dst_nb)
                    R._relocate(dst_nb, p.folder, folder)
                    executed.append(folder / "executed" / src_nb.name)
            else:
                log(f"[threatlab] sweep: not publishing into {folder}: a point of seed {plan_.seeds[0]}, "
                    f"data set {plan_.datasets[0]} failed")
            table = write_table(rows, staging, plan_.store)
            failed = False
            for p in (firsts if ok else []):
                if p.notebook not in SWEEP_READERS:
                    continue
                params = {**p.params, "out_dir": str(staging)}
                if "update_readme" in params:
                    params["update_readme"] = R.readme_allowed(plan_.profile_name, folder,
                                                               design_met=plan_.short_of_design is None)
                target = staging / "executed" / f"{p.notebook}.ipynb"
                t0 = time.perf_counter()
                fail = R.execute(p.path, target, params, timeout_s=plan_.timeout_s, cwd=plan_.cwd)
                R._relocate(target, staging, folder)
                if fail is not None:
                    kept = plan_.root / "publish-failed" / target.name
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(target, kept)
                    outcomes[f"publish:{p.notebook}"] = {
                        "digest": None, "notebook": p.notebook, "status": "failed",
                        "label": f"{p.notebook} over the gathered table", "error": fail.error, "cell": fail.cell,
                        "executed": str(kept), "attempts": 1, "seconds": round(time.perf_counter() - t0, 1)}
                    failed = True
                else:
                    log(f"[threatlab] sweep: {p.notebook} over the gathered table in "
                        f"{time.perf_counter() - t0:.1f} s")
            if failed:
                ok = False
                log(f"[threatlab] sweep: not publishing into {folder}: the sweep-level 05 run failed")
            else:
                R.commit(staging, folder, owned)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    log(f"[threatlab] sweep: {len(rows)} point results gathered into {folder / 'sweep' / POINTS_JSONL}")
    if ok and plan_.docs_dir is not None and executed:
        export_docs(executed, plan_.docs_dir, log, force=plan_.force)
    return folder / "sweep" / table.name


def export_docs(executed: list[Path], docs_dir: Path, log: Callable[[str], None], *, force: bool = False) -> bool:
    """The published notebooks, executed and sanitized, as the docs site's chapters
    (`threatlab.report.site.export_chapters`); `make docs` builds the site from them."""
    from .report import site

    site.export_chapters(executed, docs_dir, root=R.REPO, force=force)
    log(f"[threatlab] sweep: executed notebooks exported as docs chapters into {docs_dir}")
    return True


# ------------------------------------------------------------------------ CLI

def add_cli(sub: Any) -> None:
    s = sub.add_parser("sweep", help="run notebooks over seeds x data sets x a grid on Dask",
                       description="python -m threatlab sweep [collect] ...")
    s.add_argument("action", nargs="?", choices=["collect"], help="collect: only gather the table")
    s.add_argument("--profile", default="quick", help=f"one of {R.profile_names()} or a .yaml path")
    s.add_argument("--seeds", default="0-4", help="range a-b or list a,b,c (default 0-4)")
    s.add_argument("--datasets", default="mnist,fashion_mnist",
                   help="comma-separated data set names (default mnist,fashion_mnist)")
    s.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2", help="extra parameter values")
    s.add_argument("--only", nargs="*", help="notebook names or prefixes (e.g. 02 04 05)")
    s.add_argument("--out", help="keep everything (points, manifest, figures/) under this folder")
    s.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    s.add_argument("--workers", type=int, help="local worker processes (default: one per core; 0: in-process)")
    s.add_argument("--force", action="store_true",
                   help="publish (or collect) into a non-empty folder threatlab did not write (its files are "
                        "left alone)")


def cli(args: Any) -> int:
    if args.action == "collect":
        path = collect(args.profile, out=args.out, force=args.force)
        print(f"[threatlab] sweep collect: {path}")
        return 0
    seeds = parse_seeds(args.seeds)
    datasets = parse_datasets(args.datasets)
    grid = parse_grid(args.grid)
    res = sweep(args.profile, seeds=seeds, datasets=datasets, grid=grid, only=args.only, out=args.out,
                scheduler=args.scheduler, workers=args.workers, force=args.force)
    if res.failures:
        for o in res.failures:
            print(f"threatlab: FAILED {failure_line(o)}", file=__import__("sys").stderr)
        return 1
    return 0


__all__ = ["Plan", "Point", "SweepResult", "collect", "collect_rows", "digest_of", "execute_point",
           "failure_line", "parse_datasets", "parse_grid", "parse_seeds", "plan", "publish_sweep", "sweep"]
