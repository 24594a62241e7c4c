"""`python -m threatlab run`: execute the notebooks under a profile with papermill.

A profile (notebooks/profiles/<name>.yaml) holds `defaults` (given to every notebook
that declares the parameter) and per-notebook parameters. Every key is checked against
the notebook's own parameters cell before anything runs: a misspelt key or a value of
the wrong type is an error, not a silent no-op. Executed copies go to
build/executed/<profile>/; figures, tables and results go to the profile's output
folder (figures/ for quick and full, build/<profile>/figures for smoke).
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
PROFILES = NOTEBOOKS / "profiles"
#: Injected by the runner into every notebook; not allowed in profiles.
RUNNER_PARAMS = ("out_dir", "profile")


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


# Notebooks that read the family notebooks' results files: they run after them, so
# one run from an empty output folder gives the same tables as a second run.
READS_RESULTS = ("00_literature", "05_findings")


def notebook_paths() -> list[Path]:
    """Family, literature and findings notebooks in execution order: the families
    (01-04) first, then 00 and 05, which read their results (tutorials are nbval's)."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"), key=lambda p: (p.stem in READS_RESULTS, p.name))


def profile_path(name: str) -> Path:
    """notebooks/profiles/<name>.yaml, or `name` itself when it is a path to a .yaml file."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    if name not in profile_names():
        raise ConfigError(f"profile={name!r} is not a profile; choose one of {profile_names()} "
                          "or give a path to a .yaml file")
    return PROFILES / f"{name}.yaml"


def load_profile(name: str) -> dict[str, Any]:
    """Read a profile and check its shape."""
    doc = yaml.safe_load(profile_path(name).read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"profile {name!r} must be a mapping with 'defaults' and 'notebooks'")
    allowed = {"description", "defaults", "notebooks", "out", "timeout_s"}
    extra = set(doc) - allowed
    if extra:
        raise ConfigError(f"profile {name!r}: unknown top-level key(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    doc.setdefault("defaults", {})
    doc.setdefault("notebooks", {})
    known = {p.stem for p in notebook_paths()}
    for nb in doc["notebooks"]:
        if nb not in known:
            raise ConfigError(f"profile {name!r}: notebook {nb!r} does not exist; choose from {sorted(known)}")
    return doc


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The literal defaults of a notebook's `parameters` cell, by name.

    Parsed with `ast` rather than papermill's inspector, which skips any line whose
    trailing comment it cannot parse (an '=' or a quote in the comment) and would let a
    profile key for that parameter slip through unchecked.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ConfigError(f"notebook {path.stem} must have exactly one cell tagged 'parameters', has {len(cells)}")
    out: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name):
                try:
                    out[t.id] = ast.literal_eval(value) if value is not None else None
                except ValueError:
                    out[t.id] = None  # non-literal default: the audit forbids these
    return out


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def resolve_parameters(path: Path, profile: dict[str, Any], profile_name: str, out_dir: Path) -> dict[str, Any]:
    """Parameters to inject into one notebook; ConfigError on unknown keys or wrong types."""
    declared = notebook_parameters(path)
    nb = path.stem
    params: dict[str, Any] = {k: v for k, v in profile["defaults"].items() if k in declared}
    own = profile["notebooks"].get(nb) or {}
    for key, value in own.items():
        if key in RUNNER_PARAMS:
            raise ConfigError(f"profile {profile_name!r}, notebook {nb}: {key!r} is set by the runner, not profiles")
        if key not in declared:
            raise ConfigError(f"profile {profile_name!r}, notebook {nb}: unknown parameter {key!r}; "
                              f"the notebook declares {sorted(declared)}")
        params[key] = value
    for key, value in params.items():
        if not _same_kind(value, declared[key]):
            raise ConfigError(f"profile {profile_name!r}, notebook {nb}: parameter {key}={value!r} has type "
                              f"{type(value).__name__}; the notebook's default {declared[key]!r} is "
                              f"{type(declared[key]).__name__}")
    for key in RUNNER_PARAMS:
        if key not in declared:
            raise ConfigError(f"notebook {nb} does not declare the runner parameter {key!r}")
    params["out_dir"] = str(out_dir)
    params["profile"] = profile_name
    return params


def default_out(profile_name: str, profile: dict[str, Any]) -> Path:
    out = profile.get("out", "figures")
    return (REPO / out).resolve()


def _print(msg: str) -> None:
    print(msg, flush=True)


def run(profile_name: str, *, only: list[str] | None = None, out: str | None = None,
        log=_print) -> list[Path]:
    """Execute the selected notebooks under a profile; return the executed copies."""
    import papermill

    profile = load_profile(profile_name)
    out_dir = Path(out).resolve() if out else default_out(profile_name, profile)
    paths = notebook_paths()
    if only:
        chosen = [p for p in paths if any(p.stem == o or p.stem.startswith(o) for o in only)]
        unknown = [o for o in only if not any(p.stem == o or p.stem.startswith(o) for p in paths)]
        if unknown:
            raise ConfigError(f"--only {unknown} matches no notebook; choose from {[p.stem for p in paths]}")
        paths = chosen
    # Check every notebook's parameters before executing any of them.
    plan = [(p, resolve_parameters(p, profile, profile_name, out_dir)) for p in paths]
    executed_dir = REPO / "build" / "executed" / Path(profile_name).stem
    executed_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for path, params in plan:
        t0 = time.perf_counter()
        log(f"[threatlab] {profile_name}: {path.name} ...")
        target = executed_dir / path.name
        papermill.execute_notebook(
            str(path), str(target), parameters=params, kernel_name="python3",
            execution_timeout=int(profile.get("timeout_s", 1800)), progress_bar=False,
            cwd=str(NOTEBOOKS), log_output=False)
        log(f"[threatlab] {profile_name}: {path.name} done in {time.perf_counter() - t0:.1f} s")
        done.append(target)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m threatlab", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks under a profile")
    r.add_argument("--profile", default="quick", help=f"one of {profile_names()}")
    r.add_argument("--only", nargs="*", help="notebook names or prefixes (e.g. 04 05)")
    r.add_argument("--out", help="output folder for figures, tables and results")
    args = ap.parse_args(argv)
    try:
        t0 = time.perf_counter()
        run(args.profile, only=args.only, out=args.out)
        print(f"[threatlab] profile {args.profile}: all done in {time.perf_counter() - t0:.1f} s")
    except ConfigError as e:
        print(f"threatlab: {e}", file=sys.stderr)
        return 2
    return 0
