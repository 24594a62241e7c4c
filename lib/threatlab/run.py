"""`python -m threatlab run`: execute the notebooks under a profile with papermill.

A profile (notebooks/profiles/<name>.yaml) holds `defaults` (given to every selected
notebook that declares the parameter) and per-notebook parameters. Before anything
runs, the profile's schema is checked (malformed YAML and wrong shapes are reported as
``file:line: message``), every key is checked against the notebook's own parameters
cell (a misspelt key or a value of the wrong type is an error, not a silent no-op), and
every selected notebook's declared ranges and cross-parameter bounds (its
``CONSTRAINTS``, see `threatlab.validate.check_notebook`) are evaluated on the resolved
parameters. Bad input exits with code 2.

A run is contained in its output folder (``--out``, else the profile's ``out``):
figures, tables, results and the executed copies (``<out>/executed/``) go there and
nowhere else. The run writes into a staging folder beside it and swaps it into place
only when every notebook succeeded, so an interrupted run leaves the previous complete
folder; a lock beside the folder refuses a second concurrent run into it. The runner
touches only names it created there, listed in the folder's ``.threatlab-run.json``: a
non-empty folder it did not write is refused unless ``--force`` (see `claim`). README.md is
rewritten only by a sweep that meets the published design (5+ seeds x both data sets,
see `short_of_design`); a run never writes the repository's figures/ or docs/: where
the profile names them, it writes `scratch_out` (build/figures-<profile>-s<seed>-<data set>/).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import ctypes
import errno
import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from . import validate
from .errors import ConfigError
from .io import atomic_write, read_marker_names

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
PROFILES = NOTEBOOKS / "profiles"
#: The published results: only a sweep that meets their design (`short_of_design`)
#: writes these folders and README.md's table; smaller runs go to `scratch_out`.
REPO_FIGURES = REPO / "figures"
REPO_DOCS = REPO / "docs"
#: The published design (the verdicts' MIN_SEEDS, over both data sets).
PUBLISHED_MIN_SEEDS = 5
PUBLISHED_DATASETS = ("mnist", "fashion_mnist")
PUBLISHED_PROFILES = ("quick", "full")
#: Injected by the runner into every notebook; not allowed in profiles.
RUNNER_PARAMS = ("out_dir", "profile")
#: Top-level profile keys and what each must be.
PROFILE_KEYS = {
    "description": "a string",
    "defaults": "a mapping of parameter -> value",
    "notebooks": "a mapping of notebook -> mapping of parameter -> value",
    "out": "a path (string)",
    "timeout_s": "a positive integer (seconds per notebook)",
    "gpu": "true/false, or a list of notebooks whose sweep points need a GPU worker",
    "docs": "a path (string): where a sweep exports the executed notebooks as the docs site's chapters",
}
DEFAULT_TIMEOUT_S = 1800


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


# Notebooks that read the family notebooks' results files: they run after them, so
# one run from an empty output folder gives the same tables as a second run.
READS_RESULTS = ("00_literature", "05_findings")


def notebook_paths(notebooks_dir: Path | None = None) -> list[Path]:
    """Family, literature and findings notebooks in execution order: the families
    (01-04) first, then 00 and 05, which read their results (tutorials are nbval's)."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"), key=lambda p: (p.stem in READS_RESULTS, p.name))


def profile_path(name: str) -> Path:
    """notebooks/profiles/<name>.yaml, or `name` itself when it is a path to a .yaml file."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"profile={name!r} is not a profile; choose one of {profile_names()}")
    if name.endswith((".yaml", ".yml")):
        if Path(name).is_file():
            return Path(name)
        raise ConfigError(f"profile={name!r}: no such file")
    if name not in profile_names():
        raise ConfigError(f"profile={name!r} is not a profile; choose one of {profile_names()} "
                          "or give a path to a .yaml file")
    return PROFILES / f"{name}.yaml"


class Profile(dict):
    """A checked profile: the YAML mapping, plus where it came from (`path`) and the line
    of every key (`lines`, keyed by tuples such as ("defaults", "seed")) for messages."""

    path: Path
    lines: dict[tuple, int]

    def where(self, *key: str) -> str:
        """``file:line`` of a key (or of the file when the key has no line)."""
        for k in (tuple(key), tuple(key[:1]), ()):
            if k in self.lines:
                return f"{self.path}:{self.lines[k]}"
        return f"{self.path}:1"


def _key_lines(node: Any, prefix: tuple = ()) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = prefix + (k.value,)
            out[key] = k.start_mark.line + 1
            out.update(_key_lines(v, key))
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (at any depth): PyYAML
    keeps the last one silently, so a profile's first value would be a no-op."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for k, _ in node.value:
            key = self.construct_object(k, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {seen[key]})", k.start_mark)
                seen[key] = k.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader's own check reports it below
                continue
        return super().construct_mapping(node, deep=deep)


def _refuse_anchors(text: str, path: Path) -> None:
    """ConfigError at the first anchor or alias, before anything is composed or walked.

    Profiles need neither, and an alias is how a 1 kB file expands into billions of
    nodes ("billion laughs"): refusing them while parsing keeps every later step linear
    in the size of the file."""
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) is not None:
            what = f"alias *{ev.anchor}" if isinstance(ev, yaml.AliasEvent) else f"anchor &{ev.anchor}"
            raise ConfigError(f"{path}:{ev.start_mark.line + 1}: YAML {what} is not allowed in a profile; "
                              "write the values out")


def _read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}:1: the profile is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{path}:1: cannot read the profile ({e.strerror or e})") from None
    try:
        _refuse_anchors(text, path)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{line}: malformed YAML: {problem}") from None
    return doc, ({(): 1} | _key_lines(node)) if node is not None else {(): 1}


def load_profile(name: str, *, notebooks_dir: Path | None = None) -> Profile:
    """Read a profile and check its schema; ConfigError ``file:line: message`` if wrong."""
    path = profile_path(name)
    doc, lines = _read_yaml(path)
    prof = Profile({} if doc is None else doc) if isinstance(doc, dict) or doc is None else None
    if prof is None:
        raise ConfigError(f"{path}:1: a profile must be a mapping with keys from {sorted(PROFILE_KEYS)}, "
                          f"got {type(doc).__name__}")
    prof.path, prof.lines = path, lines
    for key in prof:
        if key not in PROFILE_KEYS:
            raise ConfigError(f"{prof.where(key)}: unknown top-level key {key!r}; allowed: {sorted(PROFILE_KEYS)}")
    for key in ("defaults", "notebooks"):
        if prof.get(key) is None:
            prof[key] = {}
        if not isinstance(prof[key], dict):
            raise ConfigError(f"{prof.where(key)}: {key!r} must be {PROFILE_KEYS[key]}, "
                              f"got {type(prof[key]).__name__}")
    for key in prof["defaults"]:
        if not isinstance(key, str):
            raise ConfigError(f"{prof.where('defaults')}: defaults key {key!r} must be a parameter name")
        if key in RUNNER_PARAMS:
            raise ConfigError(f"{prof.where('defaults', key)}: {key!r} is set by the runner, not profiles")
    known = {p.stem for p in notebook_paths(notebooks_dir)}
    for nb, section in list(prof["notebooks"].items()):
        if nb not in known:
            raise ConfigError(f"{prof.where('notebooks', nb)}: notebook {nb!r} does not exist; "
                              f"choose from {sorted(known)}")
        if section is None:
            prof["notebooks"][nb] = {}
        elif not isinstance(section, dict):
            raise ConfigError(f"{prof.where('notebooks', nb)}: notebooks.{nb} must be a mapping of "
                              f"parameter -> value, got {type(section).__name__}")
    for key in ("description", "out", "docs"):
        if key in prof and (not isinstance(prof[key], str) or not prof[key].strip()):
            raise ConfigError(f"{prof.where(key)}: {key!r} must be {PROFILE_KEYS[key]}, got {prof[key]!r}")
    if "timeout_s" in prof:
        t = prof["timeout_s"]
        if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
            raise ConfigError(f"{prof.where('timeout_s')}: timeout_s={t!r} must be {PROFILE_KEYS['timeout_s']}")
    if "gpu" in prof:
        g = prof["gpu"]
        if not isinstance(g, bool) and not (isinstance(g, list) and all(n in known for n in g)):
            raise ConfigError(f"{prof.where('gpu')}: gpu={g!r} must be {PROFILE_KEYS['gpu']} "
                              f"(notebooks: {sorted(known)})")
    return prof


def _parameters_cell(nb: Any, path: Path) -> int:
    idx = [i for i, c in enumerate(nb.cells)
           if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(idx) != 1:
        raise ConfigError(f"notebook {path.stem} must have exactly one cell tagged 'parameters', has {len(idx)}")
    return idx[0]


def _read_notebook(path: Path) -> Any:
    """The notebook at `path`, parsed once per version of the file (a sweep's planning
    asks for every notebook's parameters and constraints once per point)."""
    st = Path(path).stat()
    return _read_cached(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, mtime_ns: int, size: int) -> Any:
    import nbformat

    with warnings.catch_warnings():
        # Only reading: a notebook saved without cell ids is still read correctly, and the
        # runner's output should be its own lines, not nbformat's advice.
        warnings.simplefilter("ignore")
        return nbformat.read(path, as_version=4)


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The literal defaults of a notebook's `parameters` cell, by name.

    Parsed with `ast` rather than papermill's inspector, which skips any line whose
    trailing comment it cannot parse (an '=' or a quote in the comment) and would let a
    profile key for that parameter slip through unchecked.
    """
    nb = _read_notebook(path)
    cell = nb.cells[_parameters_cell(nb, path)]
    out: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name):
                try:
                    out[t.id] = ast.literal_eval(value) if value is not None else None
                except ValueError:
                    out[t.id] = None  # non-literal default: the audit forbids these
    return out


def notebook_constraints(path: Path) -> dict[str, Any]:
    """The literal ``CONSTRAINTS = {...}`` of the cell right after `parameters` (the
    validation cell), or {} when the notebook declares none."""
    nb = _read_notebook(path)
    i = _parameters_cell(nb, path) + 1
    if i >= len(nb.cells) or nb.cells[i].cell_type != "code":
        return {}
    for node in ast.parse(nb.cells[i].source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "CONSTRAINTS"):
            try:
                found = ast.literal_eval(node.value)
            except ValueError:
                raise ConfigError(f"notebook {path.stem}: CONSTRAINTS must be a literal dict") from None
            if not isinstance(found, dict):
                raise ConfigError(f"notebook {path.stem}: CONSTRAINTS must be a dict")
            return found
    return {}


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_kind(nb: str, key: str, value: Any, default: Any, where: str = "") -> None:
    """ConfigError when `value` is not of the kind of the notebook's default."""
    if not _same_kind(value, default):
        raise ConfigError(f"{where + ': ' if where else ''}notebook {nb}: parameter {key}={value!r} has type "
                          f"{type(value).__name__}; the notebook's default {default!r} is "
                          f"{type(default).__name__}")


def resolve_parameters(path: Path, profile: dict[str, Any], profile_name: str, out_dir: Path,
                       overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters to inject into one notebook; ConfigError on unknown keys or wrong types.

    `overrides` (a sweep's seed, data set and grid values) apply last, to the keys the
    notebook declares.
    """
    declared = notebook_parameters(path)
    nb = path.stem
    where = profile.where if isinstance(profile, Profile) else (lambda *k: f"profile {profile_name!r}")
    params: dict[str, Any] = {k: v for k, v in profile["defaults"].items() if k in declared}
    own = profile["notebooks"].get(nb) or {}
    for key, value in own.items():
        if key in RUNNER_PARAMS:
            raise ConfigError(f"{where('notebooks', nb, key)}: profile {profile_name!r}, notebook {nb}: "
                              f"{key!r} is set by the runner, not profiles")
        if key not in declared:
            raise ConfigError(f"{where('notebooks', nb, key)}: profile {profile_name!r}, notebook {nb}: "
                              f"unknown parameter {key!r}; the notebook declares {sorted(declared)}")
        params[key] = value
    for key, value in (overrides or {}).items():
        if key in declared:
            params[key] = value
    for key, value in params.items():
        check_kind(nb, key, value, declared[key],
                   where("notebooks", nb, key) if key in own else where("defaults", key))
    for key in RUNNER_PARAMS:
        if key not in declared:
            raise ConfigError(f"notebook {nb} does not declare the runner parameter {key!r}")
    params["out_dir"] = str(out_dir)
    params["profile"] = profile_name
    return params


def preflight(path: Path, params: dict[str, Any]) -> None:
    """Evaluate the notebook's declared CONSTRAINTS on its full parameters (defaults
    filled in); ConfigError naming the notebook on the first violation."""
    full = {**notebook_parameters(path), **params}
    try:
        validate.check_notebook(full, notebook_constraints(path))
    except ConfigError as e:
        raise ConfigError(f"notebook {path.stem}: {e}") from None


def check_defaults_used(profile: Profile, paths: list[Path], all_paths: list[Path] | None = None) -> None:
    """Each `defaults` key must be a parameter of at least one notebook the run covers:
    the selected ones, plus those the profile names (so `--only 05` does not turn the
    profile's `seed` default into an error, while a misspelt key always is one)."""
    named = [p for p in (all_paths or []) if p.stem in profile["notebooks"]]
    covered = list(dict.fromkeys([*paths, *named]))
    declared = set().union(*(notebook_parameters(p) for p in covered)) if covered else set()
    for key in profile["defaults"]:
        if key not in declared:
            raise ConfigError(f"{profile.where('defaults', key)}: defaults key {key!r} is not a parameter of "
                              f"any selected notebook ({', '.join(p.stem for p in covered)})")


def select(paths: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks named (or prefixed) by `only`; all when `only` is None."""
    if only is None:
        return paths
    if not only or any(not isinstance(o, str) or not o.strip() for o in only):
        raise ConfigError(f"--only {only!r} selects nothing; name notebooks or prefixes such as 02 04, "
                          f"or leave --only out to run all of {[p.stem for p in paths]}")
    unknown = [o for o in only if not any(p.stem == o or p.stem.startswith(o) for p in paths)]
    if unknown:
        raise ConfigError(f"--only {unknown} matches no notebook; choose from {[p.stem for p in paths]}")
    return [p for p in paths if any(p.stem == o or p.stem.startswith(o) for o in only)]


def default_out(profile_name: str, profile: dict[str, Any]) -> Path:
    out = profile.get("out", "figures")
    return (REPO / out).resolve()


def is_published(path: Path) -> bool:
    """Whether `path` is (or lies inside) the repository's published figures/ or docs/."""
    path = Path(path).resolve()
    return any(path == root or root in path.parents for root in (REPO_FIGURES.resolve(), REPO_DOCS.resolve()))


def short_of_design(profile_name: str, seeds: list[int], datasets: list[str], *, every_notebook: bool = True,
                    grid: dict[str, list[Any]] | None = None) -> str | None:
    """Why a sweep may not write the published results, or None when it meets their design:
    at least `PUBLISHED_MIN_SEEDS` seeds over every data set of `PUBLISHED_DATASETS`, a
    profile of `PUBLISHED_PROFILES`, every notebook, no extra grid. Fewer runs would turn
    the published verdicts into "inconclusive (1 run)" (He et al. 2019's findings are
    judged over 5 seeds x 2 data sets)."""
    if Path(profile_name).stem not in PUBLISHED_PROFILES or Path(profile_name).suffix:
        return f"profile {profile_name!r} is not one of {list(PUBLISHED_PROFILES)}"
    if len(seeds) < PUBLISHED_MIN_SEEDS:
        return f"{len(seeds)} seed{'s' * (len(seeds) != 1)} < {PUBLISHED_MIN_SEEDS}"
    missing = [d for d in PUBLISHED_DATASETS if d not in datasets]
    if missing:
        return f"data sets {','.join(datasets)} lack {','.join(missing)}"
    if not every_notebook:
        return "only some notebooks (--only)"
    if grid:
        return "an extra --grid"
    return None


def scratch_out(profile_name: str, seeds: list[int], datasets: list[str]) -> Path:
    """Where a run smaller than the published design writes: build/figures-<profile>-s<seeds>-<data sets>."""
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1:
        tag = f"{seeds[0]}-{seeds[-1]}"
    else:
        tag = "_".join(str(s) for s in seeds[:8]) + ("_etc" if len(seeds) > 8 else "")
    return (REPO / "build" / f"figures-{Path(profile_name).stem}-s{tag}-{'_'.join(datasets)}").resolve()


def readme_allowed(profile_name: str, out_dir: Path, *, design_met: bool = False) -> bool:
    """Only a sweep that meets the published design (`short_of_design`), of the quick or
    full profile, writing into the repository's own figures/ rewrites README."""
    return (design_met and Path(profile_name).stem in PUBLISHED_PROFILES
            and Path(out_dir).resolve() == REPO_FIGURES.resolve())


def _shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (what a reader types)."""
    path = Path(path).resolve()
    return f"{path.relative_to(REPO)}/" if REPO in path.parents else str(path)


def _print(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ execution

@dataclass(frozen=True)
class Failure:
    """One notebook that did not complete."""

    notebook: str
    cell: int | None
    error: str        # "ExceptionType: message" (first line)
    executed: Path    # executed copy holding the full traceback

    def line(self) -> str:
        cell = f"cell {self.cell}" if self.cell is not None else "before the first cell"
        return f"{self.notebook}: {cell}: {self.error} (full traceback: {self.executed})"


class RunFailed(RuntimeError):
    """Some notebooks failed; `failures` holds one `Failure` each."""

    def __init__(self, failures: list[Failure]):
        self.failures = failures
        super().__init__("\n".join(f.line() for f in failures))


def _kernel_manager_class(socket_dir: str):
    """An AsyncKernelManager whose kernel talks over IPC (Unix sockets in `socket_dir`),
    so ipykernel does not warn about unencrypted TCP and no port can collide between
    concurrent sweep workers."""
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(socket_dir, "kernel"))
            super().__init__(**kwargs)

        async def start_kernel(self, **kw: Any) -> None:
            # The kernel's own log lines (start-up, shutdown interrupts) go to a file; the
            # runner prints its own one-line summary, and quotes the file if the kernel died.
            kw.setdefault("stdout", subprocess.DEVNULL)
            kw.setdefault("stderr", open(os.path.join(socket_dir, "kernel.log"), "ab"))  # noqa: SIM115
            return await super().start_kernel(**kw)

    return IPCKernelManager


def _first_line(text: str) -> str:
    text = str(text).strip()
    return text.splitlines()[0][:500] if text else ""


def execute(path: Path, target: Path, params: dict[str, Any], *, timeout_s: int,
            cwd: Path | None = None) -> Failure | None:
    """Execute one notebook into `target` (the executed copy); None on success, else a
    `Failure` whose error line names the cell, exception type and message."""
    import papermill

    target.parent.mkdir(parents=True, exist_ok=True)
    # Short socket paths: a Unix socket path must stay under ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="tl-k-") as sockets:
        try:
            papermill.execute_notebook(
                str(path), str(target), parameters=params, kernel_name="python3",
                execution_timeout=int(timeout_s), progress_bar=False, cwd=str(cwd or path.parent),
                log_output=False, kernel_manager_class=_kernel_manager_class(sockets))
        except papermill.PapermillExecutionError as e:
            return Failure(path.stem, e.exec_count if e.exec_count is not None else e.cell_index,
                           f"{e.ename}: {_first_line(e.evalue)}", target)
        except Exception as e:  # kernel died, timeout, unreadable notebook: still one line
            log = Path(sockets) / "kernel.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            why = f"{type(e).__name__}: {_first_line(e)}" + (f" (kernel: {tail[0][:200]})" if tail else "")
            return Failure(path.stem, None, why, target)
    hide_injected(target)
    return None


def hide_injected(executed: Path) -> None:
    """Tag papermill's injected-parameters cell `remove-cell`: it repeats every parameter
    (tens of lines) before the first experiment; the notebook's own parameters cell, tagged
    `hide-input`, stays one click away in the rendered pages."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
            changed = True
    if changed:
        atomic_write(executed, nbformat.writes(nb))


# --------------------------------------------------------- contained output folders

_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_into_place(staging: Path, final: Path) -> None:
    """Make `staging` the folder at `final`; the previous `final` (if any) is removed.

    A reader sees either the old complete folder or the new complete one: an atomic
    exchange where the kernel has one, else two renames with the old folder kept as
    ``.<name>.old-<pid>`` in between (restored by `recover` if a kill lands there).
    """
    if not final.exists():
        os.rename(staging, final)
        return
    if _exchange(staging, final):
        shutil.rmtree(staging)  # now holds the previous folder
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old)


def recover(final: Path, owned: set[str] | None = None) -> None:
    """Under the folder's lock: restore a previous folder a kill left between the two
    renames of `swap_into_place`, drop the runner's staging folders beside it, and drop
    orphan .tmp files of the names the runner owns in it (`owned`, default: what
    `owned_names` finds); a user's own files, .tmp or not, are never touched."""
    parent = final.parent
    if not parent.exists():
        return
    olds = sorted(parent.glob(f".{glob.escape(final.name)}.old-*"))
    if olds and not final.exists():
        os.rename(olds[-1], final)
        olds = olds[:-1]
    for p in olds + sorted(parent.glob(f".{glob.escape(final.name)}.staging-*")):
        shutil.rmtree(p, ignore_errors=True)
    if final.is_dir():
        if owned is None:
            owned = owned_names(final) or set()
        clean_owned_tmp(final, owned)


def clean_owned_tmp(folder: Path, owned: set[str]) -> list[Path]:
    """Orphan temporary files of the runner's own names in `folder`: everything matching
    ``.*.tmp`` inside an owned sub-folder, and ``.<name>.*.tmp`` beside an owned file
    (or the marker) at the top, which is how `threatlab.io.atomic_write` names them."""
    removed: list[Path] = []
    for name in sorted(owned | {MARKER}):
        p = folder / name
        if p.is_dir() and not p.is_symlink():
            removed += clean_tmp(p)
        for t in folder.glob(f".{glob.escape(name)}.*.tmp"):
            if t.is_file():
                t.unlink(missing_ok=True)
                removed.append(t)
    return removed


def clean_tmp(folder: Path, *, older_than_s: float = 0.0) -> list[Path]:
    """Remove orphan ``.<name>.*.tmp`` files (left by killed atomic writes) under `folder`."""
    removed = []
    now = time.time()
    for p in Path(folder).rglob(".*.tmp"):
        try:
            if p.is_file() and now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:
            pass
    return removed


class LockHeld(ConfigError):
    """Another process holds the lock of an output folder."""


@contextlib.contextmanager
def folder_lock(final: Path) -> Iterator[Path]:
    """Exclusive lock ``.<name>.lock`` beside `final` (flock: released when the process
    dies, even by kill -9). A second run into the same folder fails at once, naming the
    holder's pid."""
    import fcntl

    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.parent / f".{final.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise LockHeld(f"--out {final} is being written by another run (pid {holder}); "
                           "wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        os.close(fd)


def check_writable(folder: Path) -> None:
    """ConfigError now (not after training) if `folder` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.", suffix=".tmp"):
            pass
    except OSError as e:
        raise ConfigError(f"output folder {folder} is not writable ({e.strerror or e})") from None


#: Written by the runner into every output folder it fills: the names (top-level
#: entries) it created there. Staging, recovery and temp-file cleaning act on those
#: names only, so a run never deletes, copies or swaps a user's own files.
MARKER = ".threatlab-run.json"
#: The top-level names of an output folder written before the marker existed (the
#: repository's figures/, folders of earlier runs): figures ``NN_*.png|svg|pdf``,
#: results/, tables/, executed/, sweep/ and findings.md.
_LEGACY_NAME = re.compile(r"^(results|tables|executed|sweep|findings\.md|\d\d_[\w.-]+\.(png|svg|pdf))$")
_LEGACY_RESULT = re.compile(r"^(\d\d_\w+(\.run)?\.json|\..+\.tmp)$")


def owned_names(final: Path) -> set[str] | None:
    """The names the runner owns in the output folder `final`: set() for a missing or
    empty folder; the marker's list; for a folder the runner wrote before markers
    existed (recognised by results/ holding only results files ``NN_name[.run].json``,
    at least one), its entries named as the runner names them (`_LEGACY_NAME`); None for
    any other folder (a user's). ConfigError for a marker that does not read."""
    if not final.exists():
        return set()
    if not final.is_dir():
        raise ConfigError(f"--out {final} is a file, not a folder")
    marker = final / MARKER
    if marker.exists():
        try:
            return read_marker_names(marker, "names", lambda n: bool(n) and "/" not in n and n not in (".", ".."))
        except ValueError:
            raise ConfigError(f"--out {final}: {MARKER} does not read as the runner's list of names; "
                              "restore it or choose another --out") from None
    entries = [e.name for e in final.iterdir()]
    if not entries:
        return set()
    res = final / "results"
    if res.is_dir() and not res.is_symlink():
        files = [e.name for e in res.iterdir()]
        if any(_LEGACY_RESULT.match(f) and not f.startswith(".") for f in files) and all(
                _LEGACY_RESULT.match(f) for f in files):
            return {e for e in entries if _LEGACY_NAME.match(e)}
    return None


def claim(final: Path, *, force: bool = False, flag: str = "--out") -> set[str]:
    """The names the runner owns in `final` (see `owned_names`); a non-empty folder it
    did not write is refused in one line unless `force`, and then owns nothing in it:
    the run adds its names beside the user's files and touches nothing else."""
    owned = owned_names(final)
    if owned is None:
        if not force:
            raise ConfigError(f"{flag} {final} is a non-empty folder that threatlab did not write (no {MARKER}); "
                              "choose a new or empty folder, or pass --force to write threatlab's files into it "
                              "beside yours (yours are left alone; files of the same name are replaced)")
        return set()
    return owned


def stage(final: Path, owned: set[str] | None = None) -> Path:
    """A fresh staging folder beside `final`, starting as a copy of the runner's own
    names in it (so a run of some notebooks keeps the others' results, which 00 and 05
    read); nothing else of `final` is copied."""
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    if owned is None:
        owned = owned_names(final) or set()
    for name in sorted(owned):
        src = final / name
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, staging / name, symlinks=True, ignore=shutil.ignore_patterns(".*.tmp"))
        elif src.is_file() or src.is_symlink():
            shutil.copy2(src, staging / name, follow_symlinks=False)
    return staging


def _write_marker(folder: Path, names: set[str]) -> None:
    # No pid or time: the marker is the same bytes for the same outputs (figures/ is
    # committed).
    atomic_write(folder / MARKER, json.dumps({"written_by": "threatlab", "format": 1, "names": sorted(names)},
                                             indent=1) + "\n")


def commit(staging: Path, final: Path, owned: set[str]) -> None:
    """Make the staged outputs those of `final`.

    When `final` holds nothing but the runner's names, the whole folder is swapped in one
    step (`swap_into_place`): a reader sees the old complete folder or the new one. When
    it also holds a user's files (``--force``, or files added to a run folder), each of
    the runner's names is replaced on its own (atomically per name) and the user's files
    stay where they are; the marker first claims the union of old and new names, so a
    kill half-way leaves nothing the runner wrote unlisted, then lists the new ones."""
    new = {e.name for e in staging.iterdir()} - {MARKER}
    foreign = set()
    if final.exists():
        foreign = {e.name for e in final.iterdir()} - owned - {MARKER}
    _write_marker(staging, new)
    if not foreign:
        swap_into_place(staging, final)
        return
    _write_marker(final, owned | new)
    trash = staging / f".{MARKER}.replaced"
    trash.mkdir()
    for name in sorted(new):
        src, dst = staging / name, final / name
        if not os.path.lexists(dst):
            os.rename(src, dst)
        elif not _exchange(src, dst):  # src now holds the previous entry (removed with staging)
            os.rename(dst, trash / name)
            os.rename(src, dst)
    for name in sorted(owned - new):  # the runner's names this run no longer writes
        p = final / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif os.path.lexists(p):
            p.unlink()
    _write_marker(final, new)


def _relocate(executed: Path, staging: Path, final: Path) -> None:
    """Rewrite the staging path to the final one inside an executed copy (its injected
    parameters and printed paths), so the copy reads as if run in place."""
    if executed.exists():
        text = executed.read_text(encoding="utf-8")
        if str(staging) in text:
            atomic_write(executed, text.replace(str(staging), str(final)))


def run(profile_name: str, *, only: list[str] | None = None, out: str | None = None,
        log=_print, notebooks_dir: Path | None = None, force: bool = False) -> list[Path]:
    """Execute the selected notebooks under a profile; return the executed copies.

    Everything is checked first (profile schema, parameters, declared constraints, the
    output folder writable, and either new, empty or written by the runner before --
    else `force`, see `claim`). Notebooks then run into a staging copy of the runner's
    names in the output folder, which replace them only when all succeeded (`commit`).
    On failures the previous outputs stay, the failed executed copies go to
    ``<out>/executed/failed/``, and RunFailed lists them.
    """
    profile = load_profile(profile_name, notebooks_dir=notebooks_dir)
    out_dir = Path(out).resolve() if out else default_out(profile_name, profile)
    if is_published(out_dir):
        # One run of each notebook is one seed: never the published results.
        if out:
            raise ConfigError(f"--out {out}: {out_dir} holds the published results, which only a sweep of "
                              f"{PUBLISHED_MIN_SEEDS}+ seeds x {','.join(PUBLISHED_DATASETS)} writes "
                              "(python -m threatlab sweep); give another --out, or leave it out")
        out_dir = scratch_out(profile_name, [profile["defaults"].get("seed", 0)],
                              [profile["defaults"].get("dataset", "mnist")])
    every = notebook_paths(notebooks_dir)
    paths = select(every, only)
    check_defaults_used(profile, paths, every)
    # Check every notebook's parameters before executing any of them.
    plan = [(p, resolve_parameters(p, profile, profile_name, out_dir)) for p in paths]
    for p, params in plan:
        if "update_readme" in params and not readme_allowed(profile_name, out_dir):
            params["update_readme"] = False
        preflight(p, params)
    timeout_s = int(profile.get("timeout_s", DEFAULT_TIMEOUT_S))
    check_writable(out_dir.parent)
    claim(out_dir, force=force)  # a user's folder is refused before anything runs
    cwd = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS
    with folder_lock(out_dir):
        recover(out_dir)  # first: it may restore the previous folder a kill left aside
        owned = claim(out_dir, force=force)  # again under the lock: what we may touch
        staging = stage(out_dir, owned)
        failures: list[Failure] = []
        done = []
        try:
            for path, params in plan:
                t0 = time.perf_counter()
                log(f"[threatlab] {profile_name}: {path.name} ...")
                params = {**params, "out_dir": str(staging)}
                target = staging / "executed" / path.name
                fail = execute(path, target, params, timeout_s=timeout_s, cwd=cwd)
                _relocate(target, staging, out_dir)
                if fail is not None:
                    log(f"[threatlab] {profile_name}: {path.name} FAILED after {time.perf_counter() - t0:.1f} s")
                    failures.append(fail)
                    continue
                log(f"[threatlab] {profile_name}: {path.name} done in {time.perf_counter() - t0:.1f} s")
                done.append(out_dir / "executed" / path.name)
            if failures:
                if "executed" not in owned:  # executed/failed/ below is the runner's too
                    owned = owned | {"executed"}
                    _write_marker(out_dir, owned)
                kept = []
                for f in failures:
                    dest = out_dir / "executed" / "failed" / f.executed.name
                    if f.executed.exists():
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(f.executed, dest)
                    kept.append(Failure(f.notebook, f.cell, f.error, dest))
                raise RunFailed(kept)
            clean_tmp(staging)
            commit(staging, out_dir, owned)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return done


def package_version() -> str:
    """The installed distribution's version (importlib.metadata), else the package's
    ``__version__`` (a checkout on PYTHONPATH without an install)."""
    from importlib import metadata

    from . import __version__

    try:
        return metadata.version("threatlab")
    except metadata.PackageNotFoundError:
        return __version__


def needs_checkout(cmd: str) -> str | None:
    """The one-line reason `cmd` cannot run, when threatlab is an installed package and not
    a source checkout (`paths.source_checkout`); None when it can."""
    from . import paths

    if cmd not in ("run", "sweep") or paths.source_checkout() is not None:
        return None
    return (f"`threatlab {cmd}` needs a source checkout of threatlab: it executes the research notebooks "
            f"(notebooks/*.ipynb) under the profiles in notebooks/profiles/ and writes figures/ and the "
            f"README's tables into that checkout, none of which an installed package has; clone the "
            f"repository and run it there (`pip install -e '.[notebooks]'`). The attack kernels "
            f"(threatlab.attacks) work from the installed package.")


def parse_args_and_run(argv: list[str] | None = None) -> int:
    prog = "threatlab" if Path(sys.argv[0]).name == "threatlab" else "python -m threatlab"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"threatlab {package_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    # Listed for --help only: `threatlab.__main__.main` hands `audit ...` to threatlab.audit
    # before this parser runs, so its own flags are parsed (and documented) there.
    sub.add_parser("audit", help="audit your own model across the four threat families (threatlab audit --help)")
    r = sub.add_parser("run", help="execute notebooks under a profile")
    r.add_argument("--profile", default="quick", help=f"one of {profile_names()} or a .yaml path")
    r.add_argument("--only", nargs="*", help="notebook names or prefixes (e.g. 04 05)")
    r.add_argument("--out", help="output folder for figures, tables, results and executed copies")
    r.add_argument("--force", action="store_true",
                   help="write into a non-empty folder threatlab did not write (its files are left alone)")
    from . import sweep as _sweep

    _sweep.add_cli(sub)
    args = ap.parse_args(argv)
    reason = needs_checkout(args.cmd)
    if reason is not None:
        print(f"threatlab: {reason}", file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        validate.check_env_switches()  # a bad switch is one line now, not mid-run
        if args.cmd == "run":
            done = run(args.profile, only=args.only, out=args.out, force=args.force)
            where = done[0].parent.parent if done else Path(args.out or ".")
            print(f"[threatlab] profile {args.profile}: all done in {time.perf_counter() - t0:.1f} s; "
                  f"figures, tables and results in {_shown(where)}")
            return 0
        return _sweep.cli(args)
    except RunFailed as e:
        for f in e.failures:
            print(f"threatlab: FAILED {f.line()}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"threatlab: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """`threatlab` (console script) / `python -m threatlab` run|sweep|sweep collect|--version;
    0 ok, 1 failures, 2 bad input (or no source checkout for run / sweep)."""
    return parse_args_and_run(argv)


__all__ = ["Failure", "Profile", "RunFailed", "check_defaults_used", "execute", "load_profile",
           "notebook_constraints", "notebook_parameters", "notebook_paths", "preflight",
           "resolve_parameters", "run", "select", "swap_into_place", "main", "package_version", "needs_checkout"]

