"""The surveyed papers' own numbers as data, and their join with what threatlab measures.

`data/literature/<family>.csv` holds one row per surveyed attack paper that threatlab
implements or compares against: who, when, where, under which adversary knowledge,
against which model and data, and one headline number with its units and *where in the
paper* it stands. `verified` is "yes" only for numbers read in the paper's own text
(its `note` says which text); everything else is "no" and is shown as unverified.

`source` names where a verified number was read (a repository and file, or the
abstract and where its text was found); every verified row must have one.

Two optional columns tie a row to threatlab's results files: `measured` names the
number (see `resolve`) and `measured_metric` says in words what it is. A reported
number and a measured one are compared only as far as their settings agree: the join
marks rows whose paper did not use MNIST as a different setting, and `settings`
(`key=paper's | threatlab's; ...` for the keys in SETTING_KEYS) says which other
settings agree: model, targeted or not, the statistic (mean vs median), the budget.
Over a sweep, the measured number is each seed's, shown as its mean with a 95 %
Student-t interval (`reported_vs_sweep`).

    >>> rows = load()                                  # every family, schema-checked
    >>> table = reported_vs_reproduced(rows, results.load_all("figures"))
    >>> reported_for("F06")                            # the rows behind one finding
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

from . import findings
from ..errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
#: Where the CSV files live in a checkout.
LITERATURE_DIR = REPO / "data" / "literature"
FAMILIES = ("extraction", "inversion", "poisoning", "adversarial")
REQUIRED = ("attack", "authors", "year", "venue", "family", "knowledge", "target_model", "dataset",
            "metric", "reported_value", "units", "location", "verified", "finding", "notebook")
OPTIONAL = ("arxiv", "measured", "measured_metric", "note", "source", "settings")
#: Settings a `settings` cell compares, paper's value | threatlab's value.
SETTING_KEYS = ("model", "targeted", "statistic", "budget")
#: Adversary knowledge, from most to least access; one of these per row.
KNOWLEDGE = ("white-box", "white-box (defender)", "white-box + training data (write)",
             "training data (write)", "gradients (federated)", "black-box (scores)", "black-box (labels)")
#: A location must name a part of the paper.
_LOCATION = re.compile(r"\b(Table|Fig\.|Figure|Section|Abstract|Theorem|Appendix|Algorithm)\b")
_ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")
_MNIST = re.compile(r"(?<![\w-])MNIST\b")
#: Statuses of the reported-vs-reproduced join.
SAME, DIFFERENT, NOT_RUN, NOT_RECORDED, NO_COUNTERPART = (
    "MNIST, as in the paper", "different setting", "not run yet", "not recorded", "no counterpart")


# --- loading and the schema ---------------------------------------------------------

def _fail(path: Path, line: int, column: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{path.name}, row {line}, column {column!r}: {value!r} is not allowed; {allowed}")


def parse_spec(spec: str) -> list[tuple[bool, list[str]]]:
    """Split a `measured` spec into terms: ([(invert, path), ...]) for `[1 - ]A [/ B]`.

    A path is `::`-separated: `evidence::<finding>::<key>...` walks the notebook's
    results document (list segments: an integer index, `max`, `min`, or `name=value`
    to pick the index where the list `name` found beside an enclosing key equals
    value); `verdict::<finding>::<number name>` reads the number the finding's judge
    reports. `A / B` divides; a leading `1 -` takes the complement of A.
    """
    spec = spec.strip()
    invert = spec.startswith("1 - ")
    parts = [p.strip() for p in (spec[4:] if invert else spec).split(" / ")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigError(f"measured={spec!r} must be 'PATH', 'PATH / PATH' or '1 - PATH'")
    terms = []
    for i, p in enumerate(parts):
        segs = p.split("::")
        if segs[0] not in ("evidence", "verdict") or len(segs) < 3 or segs[1] not in findings.BY_ID:
            raise ConfigError(f"measured={spec!r}: path {p!r} must start with 'evidence::<Fnn>::' or "
                              f"'verdict::<Fnn>::' with a finding id from {list(findings.BY_ID)}")
        if segs[0] == "verdict" and len(segs) != 3:
            raise ConfigError(f"measured={spec!r}: 'verdict::<Fnn>::<number name>' takes exactly one name")
        terms.append((invert and i == 0, segs))
    return terms


def parse_settings(cell: str) -> dict[str, tuple[str, str]]:
    """`key=paper | ours; ...` -> {key: (paper's, threatlab's)}; keys from SETTING_KEYS."""
    out = {}
    for part in [p.strip() for p in cell.split(";") if p.strip()]:
        key, eq, pair = part.partition("=")
        key = key.strip()
        if not eq or key not in SETTING_KEYS or pair.count("|") != 1:
            raise ConfigError(f"settings={cell!r}: each entry must be 'key=paper | threatlab' "
                              f"with key one of {list(SETTING_KEYS)}; got {part!r}")
        paper, ours = (v.strip() for v in pair.split("|"))
        if not paper or not ours or key in out:
            raise ConfigError(f"settings={cell!r}: {part!r} needs both values, once per key")
        out[key] = (paper, ours)
    return out


def settings_cell(row: dict[str, Any], dataset: str = "MNIST") -> str:
    """Which settings agree between the paper and threatlab: 'dataset: same (MNIST); ...'.

    dataset: the data set threatlab's number comes from (a label such as "MNIST").
    """
    paper_mnist = is_mnist(row["dataset"])
    ours_mnist = dataset == "MNIST"
    same_ds = paper_mnist and ours_mnist
    parts = [f"dataset: same ({dataset})" if same_ds else f"dataset: differs ({row['dataset']} vs {dataset})"]
    for key, (paper, ours) in parse_settings(row.get("settings") or "").items():
        parts.append(f"{key}: same ({paper})" if paper == ours else f"{key}: differs ({paper} vs {ours})")
    return "; ".join(parts)


def _check_row(row: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in REQUIRED:
        v = (row.get(col) or "").strip()
        if not v:
            _fail(path, line, col, v, "a value is required")
        out[col] = v
    for col in OPTIONAL:
        out[col] = (row.get(col) or "").strip()
    try:
        out["year"] = int(out["year"])
    except ValueError:
        _fail(path, line, "year", out["year"], "a four-digit year is required")
    if not 1980 <= out["year"] <= 2100:
        _fail(path, line, "year", out["year"], "a year between 1980 and 2100 is required")
    try:
        out["reported_value"] = float(out["reported_value"])
    except ValueError:
        _fail(path, line, "reported_value", out["reported_value"], "a plain number is required (units go in 'units')")
    if not math.isfinite(out["reported_value"]):
        _fail(path, line, "reported_value", out["reported_value"], "a finite number is required")
    if out["family"] != path.stem:
        _fail(path, line, "family", out["family"], f"rows of {path.name} must say {path.stem!r}")
    if out["knowledge"] not in KNOWLEDGE:
        _fail(path, line, "knowledge", out["knowledge"], f"choose one of {list(KNOWLEDGE)}")
    if not _LOCATION.search(out["location"]):
        _fail(path, line, "location", out["location"],
              "say where in the paper the number stands (Table/Figure/Section/Abstract/Theorem/Appendix ...)")
    if out["verified"] not in ("yes", "no"):
        _fail(path, line, "verified", out["verified"], "'yes' (read in the paper's text) or 'no'")
    if out["verified"] == "yes" and not out["note"]:
        _fail(path, line, "note", out["note"], "a verified number must say in 'note' which text it was read in")
    if out["verified"] == "yes" and not out["source"]:
        _fail(path, line, "source", out["source"],
              "a verified number must name where it was read (repository and file, or 'abstract ...')")
    if out["settings"]:
        try:
            parse_settings(out["settings"])
        except ConfigError as e:
            _fail(path, line, "settings", out["settings"], str(e))
    if out["finding"] not in findings.BY_ID:
        _fail(path, line, "finding", out["finding"], f"choose one of {list(findings.BY_ID)}")
    f = findings.BY_ID[out["finding"]]
    if f.family != out["family"]:
        _fail(path, line, "finding", out["finding"], f"it belongs to family {f.family!r}, not {out['family']!r}")
    if out["notebook"] != f.notebook:
        _fail(path, line, "notebook", out["notebook"], f"finding {f.id} is judged in {f.notebook!r}")
    if out["arxiv"] and not _ARXIV.match(out["arxiv"]):
        _fail(path, line, "arxiv", out["arxiv"], "an arXiv id like 1412.6572, or empty")
    if out["measured"]:
        try:
            parse_spec(out["measured"])
        except ConfigError as e:
            _fail(path, line, "measured", out["measured"], str(e))
        if not out["measured_metric"]:
            _fail(path, line, "measured_metric", "", "say in words what the measured number is")
    return out


def load_file(path: str | Path) -> list[dict[str, Any]]:
    """Read and schema-check one `<family>.csv`; ConfigError names file, row and column."""
    path = Path(path)
    if path.stem not in FAMILIES:
        raise ConfigError(f"{path.name}: the file name must be one of {[f + '.csv' for f in FAMILIES]}")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
        if missing or unknown:
            raise ConfigError(f"{path.name}, header: missing columns {missing}, unknown columns {unknown}; "
                              f"required {list(REQUIRED)}, optional {list(OPTIONAL)}")
        rows = []
        for line, row in enumerate(reader, start=2):  # line 1 is the header
            if None in row or any(v is None for v in row.values()):
                raise ConfigError(f"{path.name}, row {line}: has {len([v for v in row.values() if v is not None])} "
                                  f"cells, the header has {len(header)}")
            rows.append(_check_row(row, path, line))
    return rows


def load(families: list[str] | tuple[str, ...] | None = None, folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of the chosen families (all by default), ordered by family then year then attack."""
    fams = list(FAMILIES if families is None else families)
    for f in fams:
        if f not in FAMILIES:
            raise ConfigError(f"family={f!r} is unknown; choose from {list(FAMILIES)}")
    folder = Path(folder) if folder else LITERATURE_DIR
    rows = []
    for f in fams:
        p = folder / f"{f}.csv"
        if not p.is_file():
            raise ConfigError(f"{p} is missing; every family in {list(FAMILIES)} has a CSV file")
        rows += sorted(load_file(p), key=lambda r: (r["year"], r["attack"]))
    return rows


# --- the join with threatlab's results ----------------------------------------------

def _walk(doc: Any, segs: list[str]) -> Any:
    stack = []  # enclosing dicts, innermost last, for `name=value` selectors
    cur = doc
    for s in segs:
        if cur is None:
            return None
        if isinstance(cur, dict):
            stack.append(cur)
            cur = cur.get(s)
        elif isinstance(cur, list):
            if not cur:
                return None
            nums = [x for x in cur if isinstance(x, (int, float))]
            if s in ("max", "min"):
                cur = (max if s == "max" else min)(nums) if nums else None
            elif "=" in s:
                name, want = s.split("=", 1)
                keys = next((d[name] for d in reversed(stack) if isinstance(d.get(name), list)), None)
                idx = [i for i, k in enumerate(keys or []) if isinstance(k, (int, float))
                       and math.isclose(k, float(want), rel_tol=1e-9, abs_tol=1e-12)]
                cur = cur[idx[0]] if idx and idx[0] < len(cur) else None
            else:
                try:
                    cur = cur[int(s)]
                except (ValueError, IndexError):
                    return None
        else:
            return None
    return cur


def resolve(spec: str, notebook: str, docs: dict[str, dict[str, Any]]) -> float | None:
    """The number a `measured` spec names in the results documents, or None if absent."""
    terms = parse_spec(spec)
    values = []
    for invert, segs in terms:
        if segs[0] == "verdict":
            v = findings.get(segs[1]).judge(docs).numbers.get(segs[2])
        else:
            v = _walk(docs.get(notebook), segs)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        values.append(1 - v if invert else float(v))
    if len(values) == 2:
        return None if values[1] == 0 else values[0] / values[1]
    return values[0]


def in_units(value: float | None, units: str) -> float | None:
    """A measured fraction expressed in a row's units (percent rows are scaled by 100)."""
    if value is None:
        return None
    return value * 100 if units.strip() == "%" else value


def is_mnist(dataset: str) -> bool:
    """True when the paper's data set is MNIST (Fashion-MNIST is not)."""
    return bool(_MNIST.search(dataset))


def fmt(value: float | None) -> str:
    """Four significant digits, deterministic; empty for a missing number."""
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def reported_vs_reproduced(rows: list[dict[str, Any]], docs: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """One row per paper: its reported number beside threatlab's number and how they relate.

    status is `MNIST, as in the paper` or `different setting` when threatlab measured
    the number, `not run yet` when the notebook has no results file, `not recorded`
    when it has one without this number, and `no counterpart` when threatlab does not
    measure anything comparable. Measured values are in the row's units.
    """
    out = []
    for r in rows:
        measured, status = None, NO_COUNTERPART
        if r["measured"]:
            if r["notebook"] not in docs:
                status = NOT_RUN
            else:
                measured = in_units(resolve(r["measured"], r["notebook"], docs), r["units"])
                status = NOT_RECORDED if measured is None else (SAME if is_mnist(r["dataset"]) else DIFFERENT)
        out.append({"finding": r["finding"], "attack": r["attack"], "paper": f"{r['authors'].split(',')[0]} {r['year']}",
                    "dataset": r["dataset"], "reported metric": r["metric"],
                    "reported": f"{fmt(r['reported_value'])} {r['units']}",
                    "where": r["location"], "verified": r["verified"],
                    "threatlab metric": r["measured_metric"],
                    "measured": f"{fmt(measured)} {r['units']}" if measured is not None else "",
                    "status": status, "settings": settings_cell(r), "source": r["source"]})
    return out


def reported_vs_sweep(rows: list[dict[str, Any]], points: list[dict[str, Any]],
                      dataset: str = "mnist") -> list[dict[str, str]]:
    """`reported_vs_reproduced` over a sweep: threatlab's number per seed, as an interval.

    points: records of `findings.load_points` (one results document per notebook, data
    set and seed). For each row, the `measured` spec is resolved in every seed's
    document of the row's notebook on `dataset`; "measured" is their mean with its 95 %
    Student-t interval (`findings.mean_interval`), "seeds" how many seeds had the
    number. A grid sweep with several configurations of a notebook raises ConfigError
    (choose one with `findings.select_points`).
    """
    label = findings.DATASETS.get(dataset, dataset)
    out = []
    for r in rows:
        values, status = [], NO_COUNTERPART
        if r["measured"]:
            runs = findings.seed_runs(points, r["notebook"], dataset)
            if not runs:
                status = NOT_RUN
            else:
                for p in runs:
                    v = in_units(resolve(r["measured"], r["notebook"], {r["notebook"]: p["results"]}), r["units"])
                    if v is not None:
                        values.append(v)
                status = NOT_RECORDED if not values else (SAME if is_mnist(r["dataset"]) and label == "MNIST"
                                                          else DIFFERENT)
        cell = ""
        if values:
            m, lo, hi = findings.mean_interval(values)
            cell = (f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}] {r['units']}" if len(values) > 1
                    else f"{fmt(m)} {r['units']} (1 seed)")
        out.append({"finding": r["finding"], "attack": r["attack"], "paper": f"{r['authors'].split(',')[0]} {r['year']}",
                    "dataset": r["dataset"], "reported metric": r["metric"],
                    "reported": f"{fmt(r['reported_value'])} {r['units']}",
                    "where": r["location"], "verified": r["verified"], "source": r["source"],
                    "threatlab metric": r["measured_metric"], "measured": cell,
                    "seeds": str(len(values)) if r["measured"] else "", "status": status,
                    "settings": settings_cell(r, label)})
    return out


def reported_for(finding_id: str, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The literature rows that bear on one finding (F01..F18); [] when none do."""
    f = findings.get(finding_id)
    rows = load() if rows is None else rows
    return [r for r in rows if r["finding"] == f.id]


def by_finding(docs: dict[str, dict[str, Any]], rows: list[dict[str, Any]] | None = None) -> list[dict[str, str]]:
    """Per finding: its verdict, the papers' reported numbers and threatlab's matching ones."""
    rows = load() if rows is None else rows
    joined = reported_vs_reproduced(rows, docs)
    out = []
    for f, v in findings.judge_all(docs):
        mine = [j for j in joined if j["finding"] == f.id]
        rep = "; ".join(f"{j['paper']}: {j['reported']}{'' if j['verified'] == 'yes' else ' (unverified)'}"
                        for j in mine)
        mea = "; ".join(f"{j['paper']}: {j['measured'] or j['status']}"
                        + (f" ({j['status']})" if j["measured"] else "") for j in mine)
        out.append({"id": f.id, "verdict": v.status, "reported (paper: value)": rep or "—",
                    "measured here": mea or "—"})
    return out


# --- tables and the timeline ------------------------------------------------------

TABLE_COLUMNS = ["attack", "authors", "year", "venue", "knowledge", "target_model", "dataset",
                 "metric", "reported_value", "units", "location", "verified", "finding"]


def family_table(rows: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    """A family's rows with the table columns, the value formatted deterministically."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is unknown; choose from {list(FAMILIES)}")
    return [{**{c: r[c] for c in TABLE_COLUMNS}, "reported_value": fmt(r["reported_value"])}
            for r in rows if r["family"] == family]


#: The survey's year (He et al., arXiv 1911.12562, November 2019): later work is marked.
SURVEY_YEAR = 2019


def timeline(rows: list[dict[str, Any]]):
    """A figure: one band per family, each attack a dot at its year on its own line, named.
    Work the survey covers (to `SURVEY_YEAR`) is a circle; later work, which the notebooks
    also measure, a diamond named "(after the survey)"."""
    import matplotlib.pyplot as plt

    from .plotting import FAMILY_COLORS

    fams = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    years = [r["year"] for r in rows] or [2015]
    step = 0.32  # one text line per paper, so long names never run into each other
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.22 * (len(rows) + len(fams))))
    base, ticks = 0.0, []
    for fam in fams:
        mine = sorted((r for r in rows if r["family"] == fam), key=lambda r: (r["year"], r["attack"]))
        ticks.append(base + step * (len(mine) - 1) / 2)
        for i, r in enumerate(mine):
            y = base + step * i
            color = FAMILY_COLORS[fam]
            later = r["year"] > SURVEY_YEAR
            ax.scatter([r["year"]], [y], s=34 if later else 30, edgecolors=color, marker="D" if later else "o",
                       facecolors=color if r["verified"] == "yes" else "white", zorder=3)
            ax.annotate(f"{r['attack']} ({r['authors'].split(',')[0]})" + (", after the survey" if later else ""),
                        (r["year"], y), xytext=(6, 0), textcoords="offset points", fontsize=7, va="center")
        base += step * (len(mine) + 1)
        ax.axhline(base - step, color="#dddddd", lw=0.8)
    ax.set(yticks=ticks, yticklabels=fams, ylim=(-step, base - step), xlabel="year",
           xlim=(min(years) - 0.5, max(years) + 3.5))
    ax.set_xticks(range(min(years), max(years) + 1))
    ax.grid(axis="y", visible=False)
    if any(r["year"] > SURVEY_YEAR for r in rows):
        ax.axvline(SURVEY_YEAR + 0.5, color="#999999", ls="--", lw=0.8)
        what = f"Attacks the survey covers (to {SURVEY_YEAR}, circles) and later work (diamonds)"
    else:
        what = f"Attacks the survey covers (to {SURVEY_YEAR})"
    ax.set_title(f"{what} by family and year; filled: number verified in the paper's text")
    return fig
