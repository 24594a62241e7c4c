"""The survey's 18 findings as testable claims: the registry, verdicts over seeds, tables.

The survey (He et al., arXiv 1911.12562) states its findings in prose; the full text is
not available offline here, so each claim is restated in this project's own words as a
measurable statement (the findings' testable rules). Thresholds are the claims'
quantitative form, fixed before any run.

The judges live in `report/judges/<family>.py`, one module per family, on the machinery
of `report.verdicts` (conditions with their reach, checks, exact tests on pooled counts,
the intersection-union decision over seeds) and `report.stats` (intervals). This module
collects the 18 judges in order (`FINDINGS`, `get`), judges a sweep's points per data
set (`sweep_aggregates`), and lays the verdicts out as tables (`sweep_rows`,
`single_run_rows`) and a figure (`verdict_figure`). The machinery's names are
re-exported here for the notebooks.

Re-judge a sweep from the command line:

    python -m threatlab.report.findings --points figures/sweep/points.jsonl
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import stats
from .judges import adversarial, extraction, inversion, poisoning
from .verdicts import (CONFIDENCE, INCONCLUSIVE, MIN_SEEDS, NOT_RUN, NOT_SUPPORTED, NOTEBOOK, STATUSES, SUPPORTED,
                       Aggregate, Check, Condition, ConditionSummary, Exact, Finding, Verdict, accuracy_check,
                       decide, flatten, identity_check, judged, num, power_check)

__all__ = ["FINDINGS", "BY_ID", "SHORT", "get", "judge_all", "aggregate", "sweep_aggregates", "sweep_rows", "single_run_rows",
           "points_from_results", "load_points", "select_points", "seed_runs", "margin_rows",
           "verdict_frame", "verdict_figure",
           "fmt_interval", "fmt_numbers", "mean_interval", "rejudge_lines", "DATASETS", "STATUSES", "SUPPORTED",
           "NOT_SUPPORTED", "INCONCLUSIVE", "NOT_RUN", "MIN_SEEDS", "CONFIDENCE", "NOTEBOOK", "Verdict", "Finding",
           "Aggregate", "Condition", "ConditionSummary", "Check", "Exact", "judged", "power_check", "identity_check",
           "accuracy_check", "num"]

#: The Student-t interval of a mean (kept under its old name for the literature tables).
mean_interval = stats.t_interval


#: Each claim in at most 10 words, for the README's verdict matrix and the docs site's
#: headings; the full claim (`Finding.claim`) is what the judge tests.
SHORT = {
    "F01": "Equation solving copies linear models exactly, not hidden-layer ones",
    "F02": "Probabilities need fewer queries than labels to copy a model",
    "F03": "Chosen queries beat random ones from the attacker's pool",
    "F04": "Adversarial examples made on a stolen copy transfer",
    "F05": "Membership inference AUC rises with the train-test gap",
    "F06": "Shadow models: optional on average, needed at low FPR",
    "F07": "Inversion recovers class prototypes; labels alone recover less",
    "F08": "Shared gradients leak inputs; batches and noise weaken it",
    "F09": "Random label flips barely hurt; targeted flips do",
    "F10": "A trigger on 1% of training data backdoors cheaply",
    "F11": "Feature-collision poisons work only with last-layer retraining",
    "F12": "Spectral signatures find poisons; retraining removes the backdoor",
    "F13": "Robustness under one norm does not carry to another",
    "F14": "Iteration buys success; optimisation finds the smallest L2",
    "F15": "Black-box attacks pay in queries, label-only ones far more",
    "F16": "Adversarial examples transfer across architectures; targeted ones less",
    "F17": "Surviving transformations needs optimising over them (EOT)",
    "F18": "Robustness costs accuracy; gradient masking is not robustness",
}


def _all_findings() -> tuple[Finding, ...]:
    out = extraction.FINDINGS + inversion.FINDINGS + poisoning.FINDINGS + adversarial.FINDINGS
    ids = [f.id for f in out]
    if ids != [f"F{i:02d}" for i in range(1, 19)] or sorted(SHORT) != ids:
        raise RuntimeError(f"findings out of order or missing: {ids} (short claims: {sorted(SHORT)})")
    return tuple(dataclasses.replace(f, short=SHORT[f.id]) for f in out)


FINDINGS: tuple[Finding, ...] = _all_findings()
BY_ID = {f.id: f for f in FINDINGS}


def get(finding_id: str) -> Finding:
    """The finding with this id (F01..F18)."""
    if finding_id not in BY_ID:
        raise ConfigError(f"finding={finding_id!r} is unknown; choose one of {list(BY_ID)}")
    return BY_ID[finding_id]


def judge_all(results: dict[str, dict[str, Any]]) -> list[tuple[Finding, Verdict]]:
    """Every finding with its run verdict, in order (the data set from each results
    file's provenance)."""
    return [(f, f.judge(results)) for f in FINDINGS]


def aggregate(finding: Finding, dataset: str, evidences: Sequence[dict[str, Any] | None],
              *, min_seeds: int = MIN_SEEDS) -> Aggregate:
    """One finding's verdict on one data set over its runs (G3, `verdicts.decide`).

    evidences: this finding's evidence dict per seed (None where that run recorded
    none). The finding's exact conditions are recomputed on counts pooled over the
    usable runs.
    """
    verdicts = [finding.judge_evidence(e, dataset) for e in evidences]
    exact: tuple[Exact, ...] = ()
    usable = [e for e, v in zip(evidences, verdicts) if v.usable]
    if finding.pooled is not None and usable:
        exact = tuple(finding.pooled([{**e, "dataset": e.get("dataset", dataset)} for e in usable]))
    return decide(verdicts, exact=exact, min_seeds=min_seeds, finding=finding.id, dataset=dataset)


# ----------------------------------------------------------------- formatting


def _g(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def fmt_numbers(numbers: dict[str, Any]) -> str:
    """'key = value; ...' with dicts and lists flattened to key.subkey (G4)."""
    out = []
    for k, v in flatten(numbers).items():
        out.append(f"{k} = {_g(v, 4) if isinstance(v, float) else v}")
    return "; ".join(out)


def fmt_interval(mlh: tuple[float, float, float] | None, digits: int = 3) -> str:
    """'centre [low, high]'; a zero-width interval shows its value alone, one run's
    infinite interval 'centre (1 run)'; '' for None."""
    if mlh is None:
        return ""
    m, lo, hi = mlh
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{_g(m, digits)} (1 run)"
    if lo == hi:
        return _g(m, digits)
    return f"{_g(m, digits)} [{_g(lo, digits)}, {_g(hi, digits)}]"


def fmt_condition(s: ConditionSummary) -> str:
    """One condition over seeds: name op bar: value interval (margin interval; G0 state;
    baseline). A statistic at its best reachable value in every run shows 'at ceiling'."""
    bar = f"{s.name} {s.op} {_g(s.bar)}"
    if s.runs == 0:
        return f"{bar}: no usable run ({s.g0})"
    if s.at_ceiling:
        value = f"at ceiling ({_g(s.value[0])})"
    else:
        value = fmt_interval(s.value)
    extra = [f"margin {fmt_interval(s.margin)}", f"G0 {s.g0}"]
    if s.baseline:
        extra.append(f"baseline {s.baseline}")
    return f"{bar}: {value} ({'; '.join(extra)})"


def fmt_exact(x: Exact) -> str:
    sign = {1: "met", -1: "fails", 0: "undecided"}[x.decision]
    ci = f" [{_g(x.interval[0])}, {_g(x.interval[1])}]" if all(math.isfinite(v) for v in x.interval) else ""
    return f"{x.name}: {_g(x.value)}{ci}, {sign} ({x.detail})"


def _verdict_cell(agg: Aggregate) -> str:
    if agg.status == NOT_RUN:
        return f"not run: {agg.note}" if agg.note else NOT_RUN
    return agg.status + (f" ({agg.note})" if agg.note and agg.status != SUPPORTED else "")


def _categorical(verdicts: Sequence[Verdict], key: str) -> str:
    vals = [str(flatten(v.numbers).get(key)) for v in verdicts]
    if not vals:
        return ""
    top = max(sorted(set(vals)), key=vals.count)
    return f"{top} ({vals.count(top)}/{len(vals)})"


def _numbers_cell(agg: Aggregate, runs: Sequence[Verdict], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        if k in agg.numbers:
            parts.append(f"{k} = {fmt_interval(agg.numbers[k])}")
        elif runs and any(flatten(v.numbers).get(k) is not None for v in runs):
            parts.append(f"{k} = {_categorical(runs, k)}")
    return "; ".join(parts)


def _keys(runs: Sequence[Verdict], baselines: Sequence[str], want_baselines: bool) -> list[str]:
    keys: list[str] = []
    for v in runs:
        for k in flatten(v.numbers):
            base = k.split(".")[0] in baselines or k in baselines
            if k not in keys and base == want_baselines:
                keys.append(k)
    return keys


# ----------------------------------------------------------------- one run

def table_rows(results: dict[str, dict[str, Any]], figure_prefix: str = "") -> list[dict[str, str]]:
    """One run's rows (id, family, claim, verdict, conditions, key numbers, figure)."""
    rows = []
    for f, v in judge_all(results):
        fig = f"[{f.figure}]({figure_prefix}{f.figure}.png)" if v.status != NOT_RUN else ""
        rows.append({"id": f.id, "family": f.family, "claim": f.claim,
                     "verdict": v.status + (f" ({v.note})" if v.note and v.status != SUPPORTED else ""),
                     "conditions": "; ".join(_run_condition(c) for c in v.conditions),
                     "key numbers": fmt_numbers(v.numbers) if v.numbers else v.note, "figure": fig})
    return rows


def _run_condition(c: Condition) -> str:
    g0 = f"; G0: {c.g0}" if c.g0 else ""
    return f"{c.name} {c.op} {_g(c.bar)}: {_g(c.value)} (margin {_g(c.margin)}{g0})"


# ----------------------------------------------------------------- over a sweep

#: Data sets the findings table shows, in order, with their column labels.
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
#: Point parameters that do not make a different experiment configuration.
RUN_KEYS = frozenset({"seed", "dataset", "out_dir", "profile"})
_POINT_KEYS = ("notebook", "dataset", "seed", "results")


def load_points(path: str | Path) -> list[dict[str, Any]]:
    """The records of a sweep's gathered table (`<figures>/sweep/points.jsonl`).

    One JSON object per line: {"notebook", "dataset", "seed", "digest", "params",
    "results"} where "results" is that point's results document (with "evidence" and,
    when the notebook drew curves, "curves"). Blank lines are skipped; a line that is
    not such an object raises ConfigError naming the file and line.
    """
    import json

    path = Path(path)
    points = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path.name}, line {line_no}: not JSON ({e.msg})") from None
        missing = [k for k in _POINT_KEYS if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise ConfigError(f"{path.name}, line {line_no}: a point needs keys {list(_POINT_KEYS)}; "
                              f"missing {missing}")
        if not isinstance(rec["results"], dict):
            raise ConfigError(f"{path.name}, line {line_no}: 'results' must be a results document (an object)")
        points.append(rec)
    return points


def _config(point: dict[str, Any]) -> str:
    import json

    params = point.get("params") or {}
    return json.dumps({k: v for k, v in params.items() if k not in RUN_KEYS}, sort_keys=True)


def select_points(points: Sequence[dict[str, Any]], where: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The points whose parameters equal every key of `where` (all points if None/empty)."""
    where = where or {}
    return [p for p in points if all((p.get("params") or {}).get(k, p.get(k)) == v for k, v in where.items())]


def seed_runs(points: Sequence[dict[str, Any]], notebook: str, dataset: str) -> list[dict[str, Any]]:
    """One notebook's points on one data set, one per seed, ordered by seed.

    A sweep with a grid holds several configurations of the same notebook; a verdict is
    over seeds of ONE configuration, so more than one raises ConfigError naming the
    parameters that differ (choose one with `select_points(points, where)`). The same
    seed twice with the same configuration is a duplicate point and raises too.
    """
    mine = [p for p in points if p["notebook"] == notebook and p["dataset"] == dataset]
    configs = sorted({_config(p) for p in mine})
    if len(configs) > 1:
        import json

        dicts = [json.loads(c) for c in configs]
        keys = sorted({k for d in dicts for k in d if any(d.get(k) != e.get(k) for e in dicts)})
        raise ConfigError(f"points of {notebook} on {dataset} come in {len(configs)} configurations "
                          f"(they differ in {keys}); pick one with where={{...}}")
    by_seed: dict[Any, dict[str, Any]] = {}
    for p in mine:
        if p["seed"] in by_seed and by_seed[p["seed"]].get("digest") != p.get("digest"):
            raise ConfigError(f"two points of {notebook} on {dataset} have seed {p['seed']}")
        by_seed[p["seed"]] = p
    return [by_seed[s] for s in sorted(by_seed)]


def _evidences(points, f: Finding, ds: str) -> list[dict[str, Any] | None]:
    return [(p["results"].get("evidence") or {}).get(f.id) for p in seed_runs(points, f.notebook, ds)]


def sweep_aggregates(points: Sequence[dict[str, Any]], datasets: Sequence[str] = tuple(DATASETS),
                     *, min_seeds: int = MIN_SEEDS,
                     register: Sequence[Finding] | None = None) -> dict[tuple[str, str], Aggregate]:
    """Every finding's `Aggregate` per data set: {(finding id, dataset): Aggregate}.

    register: the findings to judge (the 18 of `FINDINGS` by default).
    """
    out = {}
    for f in FINDINGS if register is None else register:
        for ds in datasets:
            evs = _evidences(points, f, ds)
            if not evs:
                out[f.id, ds] = Aggregate(f.id, ds, NOT_RUN, 0, 0, 0, 0,
                                          note=f"no {f.notebook} points on {ds} in the sweep")
                continue
            out[f.id, ds] = aggregate(f, ds, evs, min_seeds=min_seeds)
    return out


def _empty(label: str, why: str) -> dict[str, str]:
    return {label: why, f"k/N {label}": "", f"conditions {label}": "", f"numbers {label}": "",
            f"baseline {label}": "", f"exact {label}": ""}


def sweep_rows(points: Sequence[dict[str, Any]], *, figure_prefix: str = "",
               datasets: dict[str, str] | None = None, min_seeds: int = MIN_SEEDS,
               register: Sequence[Finding] | None = None) -> list[dict[str, str]]:
    """The findings table over a sweep: one row per finding (F01..F18).

    Per data set (columns labelled as in `DATASETS`): its verdict (or why it did not
    run, or why it is inconclusive), `k/N` runs supported; "conditions": each
    condition's value over seeds (bootstrap percentile interval for a bounded
    statistic, Student-t otherwise, geometric for ratios; 'at ceiling' when it sat at
    its best reachable value in every run) with its margin's Student-t interval, its G0
    state and its baseline; "numbers": every other deciding number (dicts and lists
    flattened to key.subkey) as 'mean [low, high]' (a text number shows its most
    common value and how many runs gave it); "baseline": the finding's trivial
    baselines; "exact": conditions decided on counts pooled over seeds. Values are
    formatted strings, ready for Markdown or CSV.
    """
    datasets = dict(DATASETS if datasets is None else datasets)
    register = FINDINGS if register is None else tuple(register)
    aggs = sweep_aggregates(points, tuple(datasets), min_seeds=min_seeds, register=register)
    rows = []
    for f in register:
        row: dict[str, str] = {"id": f.id, "family": f.family, "claim": f.claim}
        for ds, label in datasets.items():
            agg = aggs[f.id, ds]
            runs = [v for v in (f.judge_evidence(e, ds) for e in _evidences(points, f, ds) if e is not None)
                    if v.status != NOT_RUN]
            use = [v for v in runs if v.usable] or runs
            row[label] = _verdict_cell(agg)
            row[f"k/N {label}"] = f"{agg.k}/{agg.n}" if agg.n else ""
            row[f"conditions {label}"] = "; ".join(fmt_condition(s) for s in agg.conditions)
            row[f"numbers {label}"] = _numbers_cell(agg, use, _keys(use, f.baselines, False))
            row[f"baseline {label}"] = _numbers_cell(agg, use, _keys(use, f.baselines, True))
            row[f"exact {label}"] = "; ".join(fmt_exact(x) for x in agg.exact)
        ran = any(aggs[f.id, ds].status != NOT_RUN for ds in datasets)
        row["figure"] = f"[{f.figure}]({figure_prefix}{f.figure}.png)" if ran else ""
        rows.append(row)
    return rows


def points_from_results(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One run's results files as sweep points (one per notebook), for the same tables.

    Each point's dataset and seed come from its provenance (MNIST and seed 0 when unset);
    files without evidence (00, 05) are left out.
    """
    points = []
    for nb, doc in sorted(results.items()):
        if not doc.get("evidence"):
            continue
        params = (doc.get("provenance") or {}).get("parameters") or {}
        points.append({"notebook": nb, "dataset": params.get("dataset", "mnist"), "seed": params.get("seed", 0),
                       "digest": "", "params": dict(params), "results": doc})
    return points


def single_run_rows(results: dict[str, dict[str, Any]], *, figure_prefix: str = "",
                    datasets: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The same table as `sweep_rows` from ONE run's results files (no sweep yet).

    Verdicts say "(single run)": one seed decides nothing over seeds, so they are that
    run's verdicts. The run's data set is read from its provenance (MNIST when unset);
    the other data sets' cells say they were not run.
    """
    datasets = dict(DATASETS if datasets is None else datasets)
    rows = []
    for f in FINDINGS:
        doc = results.get(f.notebook) or {}
        ds = ((doc.get("provenance") or {}).get("parameters") or {}).get("dataset", "mnist")
        v = f.judge(results, ds)
        row: dict[str, str] = {"id": f.id, "family": f.family, "claim": f.claim}
        for name, label in datasets.items():
            if name != ds or v.status == NOT_RUN:
                row.update(_empty(label, f"not run: {v.note if name == ds else f'single run on {ds} only'}"))
                continue
            row[label] = f"{v.status} (single run)" + (f" ({v.note})" if v.note and v.status != SUPPORTED else "")
            row[f"k/N {label}"] = f"{int(v.status == SUPPORTED)}/1"
            row[f"conditions {label}"] = "; ".join(_run_condition(c) for c in v.conditions)
            flat = flatten(v.numbers)
            base = set(_keys([v], f.baselines, True))
            row[f"numbers {label}"] = fmt_numbers({k: x for k, x in flat.items() if k not in base})
            row[f"baseline {label}"] = fmt_numbers({k: x for k, x in flat.items() if k in base})
            row[f"exact {label}"] = "; ".join(fmt_exact(x) for x in v.exact)
        row["figure"] = f"[{f.figure}]({figure_prefix}{f.figure}.png)" if v.status != NOT_RUN else ""
        rows.append(row)
    return rows


# ----------------------------------------------------------------- the verdict figure

#: Panel titles of the verdict figure, one per condition unit.
UNIT_AXES = {"fraction": "margin (difference of fractions; > 0: the bar is passed)",
             "ratio": "value / bar (log scale; > 1: the bar is passed)",
             "dB": "margin (dB; > 0: the bar is passed)",
             "rho": "margin (rank correlation; > 0: the bar is passed)",
             "count": "margin (counts)"}


def margin_rows(points: Sequence[dict[str, Any]], datasets: dict[str, str] | None = None,
                *, register: Sequence[Finding] | None = None) -> list[dict[str, Any]]:
    """Tidy per-run condition margins: one row {"finding", "condition", "unit",
    "dataset", "seed", "margin", "usable"} per condition and run that was judged.
    usable is False for a run left out of the intervals (power check, check failed,
    decided by design); the dataset is its label from `DATASETS`."""
    datasets = dict(DATASETS if datasets is None else datasets)
    rows = []
    for f in FINDINGS if register is None else register:
        for ds, label in datasets.items():
            for p in seed_runs(points, f.notebook, ds):
                ev = (p["results"].get("evidence") or {}).get(f.id)
                v = f.judge_evidence(ev, ds)
                for c in v.conditions:
                    rows.append({"finding": f.id, "condition": f"{f.id} {c.name}", "unit": c.unit, "dataset": label,
                                 "seed": p["seed"], "margin": c.margin, "usable": v.usable})
    return rows


def verdict_frame(rows: Sequence[dict[str, Any]], datasets: Sequence[str] = tuple(DATASETS.values())):
    """The verdicts as a DataFrame indexed by finding (an HTML table in a notebook): the
    claim and, per data set, the whole verdict and k/N runs supported. rows: `sweep_rows`
    or `single_run_rows` output."""
    import pandas as pd

    cols = ["claim"] + [c for ds in datasets for c in (ds, f"k/N {ds}")]
    frame = pd.DataFrame([{"finding": r["id"], **{c: r.get(c, "") for c in cols}} for r in rows],
                         columns=["finding", *cols])
    return frame.set_index("finding")


def verdict_figure(margins: Sequence[dict[str, Any]], *, datasets: Sequence[str] = tuple(DATASETS.values()),
                   title: str = "", order: Sequence[str] | None = None):
    """Each condition's margin over seeds, per data set, one panel per unit (G4).

    margins: tidy rows from `margin_rows`. Per panel one row per condition ("F04 best
    transfer / noise success"), in finding order (`order` restricts to these finding
    ids); per data set the mean margin over the usable runs with its 95 % Student-t
    interval (the interval the verdict reads), and the runs left out as hollow marks.
    Fractions, dB and correlations are drawn as margins (line at 0); "k x" ratios as
    value / bar on a log axis (line at 1). One run draws without an interval.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = [f.id for f in FINDINGS] if order is None else list(order)
    rows = [r for r in margins if r["finding"] in order]
    units = [u for u in UNIT_AXES if any(r["unit"] == u for r in rows)] or ["fraction"]
    conds = {u: sorted({r["condition"] for r in rows if r["unit"] == u},
                       key=lambda c: (order.index(c.split(" ")[0]), [r["condition"] for r in rows].index(c)))
             for u in units}
    palette = dict(zip(datasets, sns.color_palette("colorblind", len(datasets))))
    heights = [max(1, len(conds[u])) for u in units]
    fig, axes = plt.subplots(len(units), 1, figsize=(8.5, 0.36 * sum(heights) + 1.1 * len(units) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, unit in zip(axes[:, 0], units):
        names = conds[unit]
        ratio = unit == "ratio"
        ax.axvline(1.0 if ratio else 0.0, color="#444444", lw=1.0, zorder=1)
        for j, ds in enumerate(datasets):
            off = (j - (len(datasets) - 1) / 2) * 0.25
            for i, name in enumerate(names):
                mine = [r for r in rows if r["condition"] == name and r["dataset"] == ds]
                used = [r["margin"] for r in mine if r["usable"]]
                left = [r["margin"] for r in mine if not r["usable"]]
                tf = (lambda m: math.exp(m)) if ratio else (lambda m: m)
                if left:
                    ax.scatter([tf(m) for m in left], [i + off] * len(left), s=14, facecolors="none",
                               edgecolors=palette[ds], linewidths=0.8, zorder=2)
                if used:
                    m, lo, hi = stats.t_interval(used)
                    if math.isfinite(lo):
                        ax.errorbar([tf(m)], [i + off], xerr=[[tf(m) - tf(lo)], [tf(hi) - tf(m)]], fmt="o",
                                    color=palette[ds], ms=4, capsize=3, lw=1.2, zorder=3)
                    else:
                        ax.plot([tf(m)], [i + off], "o", color=palette[ds], ms=4, zorder=3)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_ylim(len(names) - 0.5, -0.5)
        if ratio:
            ax.set_xscale("log")
        ax.set_xlabel(UNIT_AXES[unit], fontsize=8)
        ax.grid(axis="y", visible=False)
    handles = [plt.Line2D([], [], color=palette[d], marker="o", ls="none", label=d) for d in datasets]
    handles.append(plt.Line2D([], [], color="#777777", marker="o", mfc="none", ls="none", label="run left out"))
    axes[0, 0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    axes[0, 0].set_title(title or "Conditions over seeds: mean margin and 95 % Student-t interval")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------- re-judge a sweep


def rejudge_lines(points: Sequence[dict[str, Any]], datasets: dict[str, str] | None = None) -> list[str]:
    """Plain-text lines: per finding and data set the verdict, each condition's
    intervals and G0 state, and the exact conditions (for the CLI and reports)."""
    datasets = dict(DATASETS if datasets is None else datasets)
    aggs = sweep_aggregates(points, tuple(datasets))
    lines = []
    for f in FINDINGS:
        for ds, label in datasets.items():
            a = aggs[f.id, ds]
            lines.append(f"{f.id} {label}: {_verdict_cell(a)}" + (f"  [{a.k}/{a.n} runs supported]" if a.n else ""))
            lines += [f"    {fmt_condition(s)}" for s in a.conditions]
            lines += [f"    exact: {fmt_exact(x)}" for x in a.exact]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m threatlab.report.findings",
                                 description="Judge a sweep's points with the current judges and print the verdicts.")
    ap.add_argument("--points", required=True, help="a sweep's gathered table, e.g. figures/sweep/points.jsonl")
    args = ap.parse_args(argv)
    path = Path(args.points)
    if not path.is_file():
        raise ConfigError(f"--points={args.points!r} is not a file")
    print("\n".join(rejudge_lines(load_points(path))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
