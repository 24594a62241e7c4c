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
