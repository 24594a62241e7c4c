"""The survey's 18 findings as testable claims: judges, margins and verdicts over seeds.

The survey (He et al., arXiv 1911.12562) states its findings in prose; the full text is
not available offline here, so each claim is restated in this project's own words as a
measurable statement (register v2 in the design notes, FINDINGS.md). Thresholds are the
claims' quantitative form, fixed before any run.

Per run, a judge reads the evidence one family notebook recorded
(`results.Recorder.evidence`) and returns a `Verdict` with a *margin*: a number that is
> 0 exactly when the claim holds in that run. A claim with several conditions takes the
minimum of their margins, each scaled so that 0 is its bar: `log_ratio_margin` for
"k x" bars, `diff_margin` for point differences on fractions. A run whose own power
check fails (e.g. an adversarially trained model too weak to judge anything) is
`inconclusive`, whatever its margin. Missing evidence is `not run`.

Over a sweep, `aggregate` decides per finding and data set from the 95 % Student-t
interval of the mean margin over seeds (scipy.stats.t.interval): above 0 -> supported,
below 0 -> not supported, straddling 0 (or more than one inconclusive run, or fewer
than `MIN_SEEDS` runs) -> inconclusive. A finding may add a condition over all seeds
pooled (`Finding.pooled`, e.g. F11's Fisher exact test on success counts summed over
seeds); it must hold as well.

The judges themselves live in `report/judges/<family>.py`, one module per family.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = "supported", "not supported", "inconclusive", "not run"
STATUSES = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN)

#: Fewest seeds an aggregate verdict is decided from (register v2: at least 5).
MIN_SEEDS = 5
#: Confidence level of the interval over seeds.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Verdict:
    """One run's (or one aggregate's) verdict.

    status: one of STATUSES. margin: min of `margins` (> 0 iff the claim holds), None
    when not run. margins: each condition's scaled margin by name. numbers: the deciding
    numbers. checks: power checks, each {"name", "value", "ok"}. note: why not run, or
    which check failed.
    """

    status: str
    margin: float | None = None
    margins: dict[str, float] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    checks: tuple[dict[str, Any], ...] = ()
    note: str = ""


def _finite(name: str, value: Any) -> float:
    if value is None:
        raise ValueError(f"{name}: a needed number is missing (None)")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}={v} is not finite; a judge needs finite numbers "
                         "(replace 'never reached' by the rule's stand-in first)")
    return v


def log_ratio_margin(value: float, bar: float) -> float:
    """Margin of "value >= bar" for a ratio bar ("k x"): log(value / bar); both > 0."""
    value, bar = _finite("value", value), _finite("bar", bar)
    if value <= 0 or bar <= 0:
        raise ValueError(f"log_ratio_margin needs positive numbers, got value={value}, bar={bar}")
    return math.log(value / bar)


def diff_margin(value: float, bar: float) -> float:
    """Margin of "value >= bar" for a point bar on fractions: value - bar (0.05 = 5 points)."""
    return _finite("value", value) - _finite("bar", bar)


def power_check(name: str, value: Any, ok: bool) -> dict[str, Any]:
    """A named power check with the value it looked at; `ok` False makes the run inconclusive."""
    return {"name": name, "value": value, "ok": bool(ok)}


def judged(margins: dict[str, float], numbers: dict[str, Any], *,
           checks: Sequence[dict[str, Any]] = (), note: str = "") -> Verdict:
    """The run verdict from its conditions' margins and power checks (see module doc)."""
    if not margins:
        raise ValueError("a judge needs at least one margin")
    clean = {k: _finite(f"margin {k!r}", v) for k, v in margins.items()}
    m = min(clean.values())
    failed = [c for c in checks if not c["ok"]]
    if failed:
        status = INCONCLUSIVE
        note = note or "power check failed: " + ", ".join(f"{c['name']} = {c['value']}" for c in failed)
    else:
        status = SUPPORTED if m > 0 else NOT_SUPPORTED
    return Verdict(status, m, clean, dict(numbers), tuple(checks), note)


def num(x: Any) -> float:
    """A needed evidence number as float (ValueError when it is missing)."""
    if x is None:
        raise ValueError("a needed number is missing (None)")
    return float(x)


def v1_judge(check: Callable[[dict[str, Any]], tuple[bool, dict[str, Any]]]) -> "Judge":
    """Wrap a register-v1 rule (claim holds?, numbers) as a judge without a margin.

    Transitional, for judges their family issue has not yet rewritten: the verdict has
    no margin, so `aggregate` reports such a finding as inconclusive over seeds.
    """
    def judge(ev: dict[str, Any]) -> Verdict:
        ok, numbers = check(ev)
        return Verdict(SUPPORTED if ok else NOT_SUPPORTED, None, {}, numbers, (), "register v1 rule, no margin")

    judge.__name__ = getattr(check, "__name__", "judge")
    return judge


Judge = Callable[[dict[str, Any]], Verdict]
Pooled = Callable[[list[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Finding:
    """A claim, its judge and where its evidence is drawn.

    judge(evidence) -> Verdict for one run. pooled(evidences of all seeds of one data
    set) -> {"margin": float, "numbers": {...}} is an optional condition over the seeds
    pooled. baselines: names in the verdict's `numbers` that are the register's trivial
    baselines (shown in the tables).
    """

    id: str
    family: str
    claim: str
    rule: str           # the judge rule in words
    figure: str         # figure stem the evidence is drawn in
    judge_fn: Judge
    pooled: Pooled | None = None
    baselines: tuple[str, ...] = ()

    @property
    def notebook(self) -> str:
        return NOTEBOOK[self.family]

    def judge_evidence(self, ev: dict[str, Any]) -> Verdict:
        """Verdict from this finding's evidence dict (missing or broken -> not run)."""
        try:
            return self.judge_fn(ev)
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as e:
            return Verdict(NOT_RUN, note=f"evidence for {self.id} incomplete: {type(e).__name__}: {e}")

    def judge(self, results: dict[str, dict[str, Any]]) -> Verdict:
        """Verdict from all results files of one run (by notebook name)."""
        doc = results.get(self.notebook)
        if doc is None:
            return Verdict(NOT_RUN, note=f"no results from {self.notebook} yet")
        ev = doc.get("evidence", {}).get(self.id)
        if ev is None:
            return Verdict(NOT_RUN, note=f"{self.notebook} recorded no evidence for {self.id}")
        return self.judge_evidence(ev)


NOTEBOOK = {"extraction": "01_model_extraction", "inversion": "02_model_inversion",
            "poisoning": "03_poisoning", "adversarial": "04_adversarial"}


def _all_findings() -> tuple[Finding, ...]:
    from .judges import adversarial, extraction, inversion, poisoning

    out = extraction.FINDINGS + inversion.FINDINGS + poisoning.FINDINGS + adversarial.FINDINGS
    ids = [f.id for f in out]
    if ids != [f"F{i:02d}" for i in range(1, 19)]:
        raise RuntimeError(f"findings out of order or missing: {ids}")
    return out


FINDINGS: tuple[Finding, ...] = _all_findings()
BY_ID = {f.id: f for f in FINDINGS}


def get(finding_id: str) -> Finding:
    """The finding with this id (F01..F18)."""
    if finding_id not in BY_ID:
        raise ConfigError(f"finding={finding_id!r} is unknown; choose one of {list(BY_ID)}")
    return BY_ID[finding_id]


def judge_all(results: dict[str, dict[str, Any]]) -> list[tuple[Finding, Verdict]]:
    """Every finding with its run verdict, in order."""
    return [(f, f.judge(results)) for f in FINDINGS]


# ----------------------------------------------------------------- over seeds


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean (scipy.stats.t.interval).

    An interval needs >= 2 values; with one it is (-inf, inf), which straddles 0 and so
    decides nothing. Identical values give a zero-width interval at their mean.
    """
    import numpy as np
    from scipy import stats

    v = np.asarray([_finite("value", x) for x in values], dtype=float)
    if v.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(v.mean())
    if v.size < 2:
        return mean, -math.inf, math.inf
    sem = float(stats.sem(v))
    if sem == 0.0:
        return mean, mean, mean
    lo, hi = stats.t.interval(confidence, df=v.size - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


@dataclass(frozen=True)
class Aggregate:
    """A finding's verdict on one data set over N seeds.

    status by the register's rule; k supported of n runs (runs not run are left out and
    counted in `not_run`); margin mean and its interval; per deciding number its
    (mean, low, high) when numeric in every run; pooled: the pooled condition's result.
    """

    finding: str
    dataset: str
    status: str
    n: int
    k: int
    inconclusive_runs: int
    not_run: int
    margin: tuple[float, float, float] | None
    numbers: dict[str, tuple[float, float, float]]
    pooled: dict[str, Any] | None = None
    note: str = ""


def aggregate(finding: Finding, dataset: str, evidences: Sequence[dict[str, Any] | None],
              *, min_seeds: int = MIN_SEEDS) -> Aggregate:
    """Aggregate one finding over the runs (seeds) of one data set (register v2, step 2).

    evidences: this finding's evidence dict per seed (None where that run recorded none).
    """
    verdicts = [finding.judge_evidence(e) if e is not None else Verdict(NOT_RUN, note="no evidence")
                for e in evidences]
    ran = [v for v in verdicts if v.status != NOT_RUN]
    not_run = len(verdicts) - len(ran)
    k = sum(v.status == SUPPORTED for v in ran)
    inconc = sum(v.status == INCONCLUSIVE for v in ran)
    if not ran:
        return Aggregate(finding.id, dataset, NOT_RUN, 0, 0, 0, not_run, None, {},
                         note=verdicts[0].note if verdicts else "no runs")
    if any(v.margin is None for v in ran):
        return Aggregate(finding.id, dataset, INCONCLUSIVE, len(ran), k, inconc, not_run, None, {},
                         note="a run's judge gave no margin (v1 rule)")
    margin = mean_interval([v.margin for v in ran])
    numbers: dict[str, tuple[float, float, float]] = {}
    for key in ran[0].numbers:
        vals = [v.numbers.get(key) for v in ran]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) and x is not None
               and math.isfinite(float(x)) for x in vals):
            numbers[key] = mean_interval(vals)
    pooled = None
    if finding.pooled is not None:
        pooled = finding.pooled([e for e, v in zip(evidences, verdicts) if v.status != NOT_RUN])
    _, lo, hi = margin
    note = ""
    if len(ran) < min_seeds:
        status, note = INCONCLUSIVE, f"{len(ran)} runs < {min_seeds} seeds"
    elif inconc > 1:
        status, note = INCONCLUSIVE, f"{inconc} runs inconclusive"
    elif lo > 0:
        status = SUPPORTED
    elif hi < 0:
        status = NOT_SUPPORTED
    else:
        status, note = INCONCLUSIVE, "the margin's interval straddles 0"
    if pooled is not None and status == SUPPORTED and not pooled["margin"] > 0:
        status, note = NOT_SUPPORTED, "the pooled condition fails"
    return Aggregate(finding.id, dataset, status, len(ran), k, inconc, not_run, margin, numbers, pooled, note)


# ----------------------------------------------------------------- tables


def fmt_numbers(numbers: dict[str, Any]) -> str:
    def one(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {one(x)}" for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(one(x) for x in v) + "]"
        return str(v)

    return "; ".join(f"{k} = {one(v)}" for k, v in numbers.items())


def table_rows(results: dict[str, dict[str, Any]], figure_prefix: str = "") -> list[dict[str, str]]:
    """One run's rows (id, family, claim, verdict, margin, key numbers, figure)."""
    rows = []
    for f, v in judge_all(results):
        fig = f"[{f.figure}]({figure_prefix}{f.figure}.png)" if v.status != NOT_RUN else ""
        rows.append({"id": f.id, "family": f.family, "claim": f.claim, "verdict": v.status,
                     "margin": "" if v.margin is None else f"{v.margin:.3g}",
                     "key numbers": fmt_numbers(v.numbers) if v.numbers else v.note, "figure": fig})
    return rows


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


def sweep_aggregates(points: Sequence[dict[str, Any]], datasets: Sequence[str] = tuple(DATASETS),
                     *, min_seeds: int = MIN_SEEDS,
                     register: Sequence[Finding] | None = None) -> dict[tuple[str, str], Aggregate]:
    """Every finding's `Aggregate` per data set: {(finding id, dataset): Aggregate}.

    register: the findings to judge (the 18 of `FINDINGS` by default).
    """
    out = {}
    for f in FINDINGS if register is None else register:
        for ds in datasets:
            runs = seed_runs(points, f.notebook, ds)
            if not runs:
                out[f.id, ds] = Aggregate(f.id, ds, NOT_RUN, 0, 0, 0, 0, None, {},
                                          note=f"no {f.notebook} points on {ds} in the sweep")
                continue
            evs = [(p["results"].get("evidence") or {}).get(f.id) for p in runs]
            out[f.id, ds] = aggregate(f, ds, evs, min_seeds=min_seeds)
    return out


def fmt_interval(mlh: tuple[float, float, float] | None, digits: int = 3) -> str:
    """'mean [low, high]' with `digits` significant digits; '' for None.

    An interval from one run is infinite; it shows as 'mean (1 run)'.
    """
    if mlh is None:
        return ""
    m, lo, hi = mlh
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m:.{digits}g} (1 run)"
    return f"{m:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def _categorical(verdicts: Sequence[Verdict], key: str) -> str:
    vals = [v.numbers.get(key) for v in verdicts]
    if not vals or not all(isinstance(x, (str, bool)) for x in vals):
        return ""
    top = max(sorted(set(map(str, vals))), key=[str(x) for x in vals].count)
    return f"{top} ({[str(x) for x in vals].count(top)}/{len(vals)})"


def _numbers_cell(agg: Aggregate, runs: Sequence[Verdict], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        if k in agg.numbers:
            parts.append(f"{k} = {fmt_interval(agg.numbers[k])}")
        else:
            cat = _categorical(runs, k)
            if cat:
                parts.append(f"{k} = {cat}")
    return "; ".join(parts)


def _pooled_cell(agg: Aggregate) -> str:
    if not agg.pooled:
        return ""
    return f"margin = {agg.pooled['margin']:.3g}" + (
        "; " + fmt_numbers(agg.pooled.get("numbers") or {}) if agg.pooled.get("numbers") else "")


def _verdict_cell(agg: Aggregate) -> str:
    if agg.status == NOT_RUN:
        return f"not run: {agg.note}" if agg.note else NOT_RUN
    return agg.status + (f" ({agg.note})" if agg.note and agg.status != SUPPORTED else "")


def sweep_rows(points: Sequence[dict[str, Any]], *, figure_prefix: str = "",
               datasets: dict[str, str] | None = None, min_seeds: int = MIN_SEEDS,
               register: Sequence[Finding] | None = None) -> list[dict[str, str]]:
    """The findings table over a sweep: one row per finding (F01..F18).

    Per data set (columns labelled as in `DATASETS`): its verdict (or why it did not
    run), `k/N` runs supported, the mean margin with its 95 % Student-t interval over
    seeds, the deciding numbers as 'mean [low, high]' (a text number shows its most
    common value and how many runs gave it), the finding's baselines and its pooled
    condition. Values are formatted strings, ready for Markdown or CSV. register: the
    findings (the 18 of `FINDINGS` by default).
    """
    datasets = dict(DATASETS if datasets is None else datasets)
    register = FINDINGS if register is None else tuple(register)
    aggs = sweep_aggregates(points, tuple(datasets), min_seeds=min_seeds, register=register)
    rows = []
    for f in register:
        row: dict[str, str] = {"id": f.id, "family": f.family, "claim": f.claim}
        for ds, label in datasets.items():
            agg = aggs[f.id, ds]
            runs = [f.judge_evidence(e) for e in
                    [(p["results"].get("evidence") or {}).get(f.id) for p in seed_runs(points, f.notebook, ds)]
                    if e is not None]
            runs = [v for v in runs if v.status != NOT_RUN]
            keys = [k for k in (runs[0].numbers if runs else {}) if k not in f.baselines]
            row[label] = _verdict_cell(agg)
            row[f"k/N {label}"] = f"{agg.k}/{agg.n}" if agg.n else ""
            row[f"margin {label}"] = fmt_interval(agg.margin)
            row[f"numbers {label}"] = _numbers_cell(agg, runs, keys)
            row[f"baseline {label}"] = _numbers_cell(agg, runs, f.baselines)
            row[f"pooled {label}"] = _pooled_cell(agg)
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
    for f, v in judge_all(results):
        doc = results.get(f.notebook) or {}
        ds = ((doc.get("provenance") or {}).get("parameters") or {}).get("dataset", "mnist")
        row: dict[str, str] = {"id": f.id, "family": f.family, "claim": f.claim}
        for name, label in datasets.items():
            if name != ds or v.status == NOT_RUN:
                why = v.note if name == ds else f"single run on {ds} only"
                row.update({label: f"not run: {why}", f"k/N {label}": "", f"margin {label}": "",
                            f"numbers {label}": "", f"baseline {label}": "", f"pooled {label}": ""})
                continue
            row[label] = f"{v.status} (single run)"
            row[f"k/N {label}"] = f"{int(v.status == SUPPORTED)}/1"
            row[f"margin {label}"] = "" if v.margin is None else f"{v.margin:.3g}"
            row[f"numbers {label}"] = fmt_numbers({k: x for k, x in v.numbers.items() if k not in f.baselines})
            row[f"baseline {label}"] = fmt_numbers({k: v.numbers[k] for k in f.baselines if k in v.numbers})
            row[f"pooled {label}"] = ""
        row["figure"] = f"[{f.figure}]({figure_prefix}{f.figure}.png)" if v.status != NOT_RUN else ""
        rows.append(row)
    return rows


# ----------------------------------------------------------------- the verdict figure


def margin_rows(points: Sequence[dict[str, Any]], datasets: dict[str, str] | None = None,
                *, register: Sequence[Finding] | None = None) -> list[dict[str, Any]]:
    """Tidy per-run margins: one row {"finding", "dataset", "seed", "margin"} per run.

    Runs that were not run or whose judge gave no margin (a v1 rule) are left out; the
    dataset is its label from `DATASETS`.
    """
    datasets = dict(DATASETS if datasets is None else datasets)
    rows = []
    for f in FINDINGS if register is None else register:
        for ds, label in datasets.items():
            for p in seed_runs(points, f.notebook, ds):
                ev = (p["results"].get("evidence") or {}).get(f.id)
                v = f.judge_evidence(ev) if ev is not None else None
                if v is not None and v.status != NOT_RUN and v.margin is not None:
                    rows.append({"finding": f.id, "dataset": label, "seed": p["seed"], "margin": v.margin})
    return rows


def _t_errorbar(values) -> tuple[float, float]:
    # seaborn calls this per (finding, data set); one run has no interval to draw.
    if len(values) < 2:
        return (math.nan, math.nan)
    _, lo, hi = mean_interval(list(values))
    return (lo, hi)


def verdict_figure(margins: Sequence[dict[str, Any]], *, datasets: Sequence[str] = tuple(DATASETS.values()),
                   title: str = "", order: Sequence[str] | None = None):
    """Each finding's mean margin with its 95 % Student-t interval over seeds, per data set.

    margins: tidy rows from `margin_rows` (or one run's margins, drawn without
    intervals). A seaborn pointplot: x = margin, y = finding (all 18, in order), hue =
    data set, a vertical line at 0 (right of it the claim holds); `order` replaces the
    18 ids. Margins of "k x" bars
    are log-ratios and of point bars fractions, so the axis mixes both scales: read a
    finding's interval against 0, not against its neighbours'.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    order = [f.id for f in FINDINGS] if order is None else list(order)
    df = pd.DataFrame(list(margins), columns=["finding", "dataset", "seed", "margin"])
    hues = [d for d in datasets if d in set(df["dataset"])] or list(datasets)
    palette = dict(zip(datasets, sns.color_palette("colorblind", len(datasets))))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(order) + 1.2))
    ax.axvline(0.0, color="#444444", lw=1.0, zorder=1)
    if len(df):
        sns.pointplot(data=df, x="margin", y="finding", hue="dataset", order=order, hue_order=hues,
                      palette=palette, errorbar=_t_errorbar, estimator="mean",
                      dodge=0.4 if len(hues) > 1 else False,  # seaborn divides by (hues - 1)
                      linestyle="none", markers="o", capsize=0.15, err_kws={"linewidth": 1.2}, ax=ax)
    else:
        ax.set_yticks(range(len(order)), order)
        ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set(xlabel="margin (> 0: the claim holds; log-ratio for 'k x' bars, fraction for point bars)",
           ylabel="", title=title or "Margins over seeds: mean and 95 % Student-t interval")
    ax.grid(axis="y", visible=False)
    if ax.get_legend() is not None:
        ax.legend(title="", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
