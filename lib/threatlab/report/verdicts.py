"""The verdict machinery every judge uses (the findings' general rules G0-G3).

A judge (`report/judges/<family>.py`) turns one run's evidence into a `Verdict` made of:

* `Condition`s: one per bar of the claim, each with its statistic `value`, its `bar`,
  the comparison `op` and the `reach` (lo, hi) the statistic could take in that run
  given what the run itself measured (G0): a rate lies in [0, 1], "k x baseline" in
  [0, 1 / baseline], a ratio of queries read off a budget grid between the grid's ends.
  A condition whose bar lies outside its reach is *decided by design* and makes the run
  `inconclusive (decided by design: ...)`, whatever the sign of its margin. `margin` is
  in the condition's own unit (a difference, or log(value / bar) for "k x" bars) and is
  > 0 exactly when the bar is passed.
* `Check`s: a power check (G1: `accuracy_check`) or an algebraic identity that fails
  only when code is broken (G0: F01's exact recovery); a failed one makes the run
  inconclusive.
* `Exact` conditions: binary outcomes decided on counts by an exact test (G3.3); the
  aggregate recomputes them on counts pooled over seeds.

`decide` applies G3's intersection-union rule over seeds: per condition a 95 % Student-t
interval of its margin over the usable runs (`stats.t_interval`); `supported` iff every
lower bound is > 0 and every exact test is significant in the claimed direction;
`not supported` iff some upper bound is < 0 or some exact test is significant the other
way (or a pooled point rule fails); else `inconclusive`. This module never imports the
judges or `report.findings` (which is the registry built on top of it).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import stats

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN = "supported", "not supported", "inconclusive", "not run"
STATUSES = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN)

#: Fewest runs a data set's verdict is decided from (G5: 5 seeds).
MIN_SEEDS = 5
#: Most inconclusive runs (power check, check failed, G0) a data set's verdict tolerates (G3.1).
MAX_INCONCLUSIVE_RUNS = 1
CONFIDENCE = stats.CONFIDENCE

OPS = (">=", ">", "<=", "<")
#: Condition units: fractions (accuracies, rates, AUCs and their differences), "k x"
#: ratios, decibels, rank correlations. The verdict figure draws one panel per unit.
UNITS = ("fraction", "ratio", "dB", "rho", "count")

#: Reach of a rate or accuracy, of a difference of two rates, of a rank correlation.
RATE = (0.0, 1.0)
RATE_DIFF = (-1.0, 1.0)
CORRELATION = (-1.0, 1.0)


def num(x: Any) -> float:
    """A needed evidence number as a finite float (ValueError when missing or not finite)."""
    if x is None:
        raise ValueError("a needed number is missing (None)")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"a needed number is not finite ({v}); replace 'never reached' by the rule's stand-in")
    return v


def half(n: float) -> float:
    """The half-count step of a rate measured on n items, 0.5 / n (G3.2: a ">= bar" on
    k of n compares (k + 0.5) / n); pass it as `Condition(half=...)`."""
    if num(n) <= 0:
        raise ValueError(f"a rate needs n > 0 items, got {n}")
    return 0.5 / num(n)


def multiple_reach(baseline: float, *, top: float = 1.0) -> tuple[float, float]:
    """Reach of "rate / baseline" when the rate lies in [0, top]: [0, top / baseline] (G0)."""
    b = num(baseline)
    return (0.0, math.inf) if b <= 0 else (0.0, top / b)


def minus_reach(baseline: float, *, top: float = 1.0) -> tuple[float, float]:
    """Reach of "rate - baseline" when the rate lies in [0, top]: [-baseline, top - baseline] (G0)."""
    b = num(baseline)
    return (-b, top - b)


def grid_ratio_reach(budgets: Sequence[float], factor: float = 2.0) -> tuple[float, float]:
    """Reach of a ratio of two queries-to-level read off one budget grid, where a level
    never reached counts as the largest budget x `factor`: [min / (max x factor),
    (max x factor) / min] (G0)."""
    b = [num(x) for x in budgets]
    lo, hi = min(b), max(b) * factor
    return lo / hi, hi / lo


# ----------------------------------------------------------------- one run


@dataclass(frozen=True)
class Condition:
    """One bar of a claim in one run: "value op bar", with the statistic's reach (G0).

    scale "linear": margin = value - bar (">=", ">") or bar - value ("<=", "<"), in the
    condition's unit; scale "log" (a "k x" bar, value and bar > 0): margin =
    log(value / bar) or log(bar / value). why: what bounds the reach, in words.
    design: a G0 rule that decides this condition by design in this run, in
    words ("" when none applies). baseline: the trivial baseline the bar is relative to,
    in words with its value ("" when the bar is absolute). half: the half-count of a
    rate measured on n items, 0.5 / n (G3.2): the bar is compared with value + half for
    ">=" bars and value - half for "<=" ones (the reach moves with it); `value` itself,
    and its interval in the tables, stay the measured rate.
    """

    name: str
    value: float
    bar: float
    op: str = ">="
    reach: tuple[float, float] = (-math.inf, math.inf)
    unit: str = "fraction"
    scale: str = "linear"
    why: str = ""
    design: str = ""
    baseline: str = ""
    half: float = 0.0

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"condition {self.name!r}: op={self.op!r}; choose one of {OPS}")
        if self.scale not in ("linear", "log"):
            raise ValueError(f"condition {self.name!r}: scale={self.scale!r}; choose 'linear' or 'log'")
        if self.unit not in UNITS:
            raise ValueError(f"condition {self.name!r}: unit={self.unit!r}; choose one of {UNITS}")
        object.__setattr__(self, "value", num(self.value))
        object.__setattr__(self, "bar", num(self.bar))
        lo, hi = (float(x) for x in self.reach)
        if not (math.isfinite(num(self.half)) and 0 <= self.half < 1):
            raise ValueError(f"condition {self.name!r}: half={self.half} must be a half-count 0.5 / n")
        if not lo <= hi:
            raise ValueError(f"condition {self.name!r}: reach {self.reach} has low > high")
        object.__setattr__(self, "reach", (lo, hi))
        if self.scale == "log" and (self.value <= 0 or self.bar <= 0):
            raise ValueError(f"condition {self.name!r}: a 'k x' bar needs positive numbers, "
                             f"got value={self.value}, bar={self.bar}")

    @property
    def upward(self) -> bool:
        """True for ">=" and ">" (larger values pass)."""
        return self.op in (">=", ">")

    def _shifted(self, x: float) -> float:
        return x + self.half if self.upward else x - self.half

    @property
    def margin(self) -> float:
        """> 0 iff the bar is passed (0 at the bar), in the condition's unit (log for "k x")."""
        v = self._shifted(self.value)
        d = math.log(v / self.bar) if self.scale == "log" else v - self.bar
        return d if self.upward else -d

    @property
    def holds(self) -> bool:
        return self.margin > 0 or (self.margin == 0 and self.op in (">=", "<="))

    @property
    def g0(self) -> str:
        """Why the design decides this condition in this run ("" when the bar is in reach)."""
        if self.design:
            return self.design
        lo, hi = (self._shifted(x) for x in self.reach)
        strict = self.op in (">", "<")
        if self.upward:
            unreachable = self.bar >= hi if strict else self.bar > hi
            certain = self.bar < lo if strict else self.bar <= lo
        else:
            unreachable = self.bar <= lo if strict else self.bar < lo
            certain = self.bar > hi if strict else self.bar >= hi
        if not (unreachable or certain):
            return ""
        what = "cannot be passed" if unreachable else "cannot fail"
        return (f"{self.name}: bar {self.bar:.4g} {what}, the statistic lies in [{lo:.4g}, {hi:.4g}]"
                + (f" ({self.why})" if self.why else ""))

    @property
    def best(self) -> float:
        """The best value the reach allows (its top for ">=" bars, its bottom for "<=")."""
        return self.reach[1] if self.upward else self.reach[0]

    @property
    def at_ceiling(self) -> bool:
        """The statistic sits at the best value its reach allows (G3.5)."""
        return math.isfinite(self.best) and abs(self.value - self.best) <= 1e-12 * max(1.0, abs(self.best))


CHECK_KINDS = ("power", "accuracy", "identity")


@dataclass(frozen=True)
class Check:
    """A run-level check: kind "power" (the run can decide the claim), "accuracy" (G1's
    clean-accuracy bar, `accuracy_check`) or "identity" (an algebraic identity, fails
    only when code is broken, G0). A failed check makes the run inconclusive."""

    name: str
    value: Any
    ok: bool
    kind: str = "power"

    def __post_init__(self):
        if self.kind not in CHECK_KINDS:
            raise ValueError(f"check {self.name!r}: kind={self.kind!r}; choose one of {CHECK_KINDS}")
        object.__setattr__(self, "ok", bool(self.ok))

    @property
    def failure(self) -> str:
        v = f"{self.value:.4g}" if isinstance(self.value, float) else str(self.value)
        prefix = {"power": "power check failed", "accuracy": "victim under-trained",
                  "identity": "check failed"}[self.kind]
        return f"{prefix}: {self.name} (got {v})"


def power_check(name: str, value: Any, ok: bool) -> Check:
    """A named power check with the value it looked at; `ok` False makes the run inconclusive."""
    return Check(name, value, ok, "power")


def identity_check(name: str, value: Any, ok: bool) -> Check:
    """An algebraic identity reported as a check (G0): it fails only when code is broken."""
    return Check(name, value, ok, "identity")


#: G1's power check: clean test accuracy a victim needs, keyed by (data set, architecture).
ACCURACY_BARS: dict[tuple[str, str], float] = {
    ("mnist", "cnn"): 0.97, ("mnist", "lenet5"): 0.97, ("mnist", "mlp"): 0.94,
    ("fashion_mnist", "cnn"): 0.86, ("fashion_mnist", "lenet5"): 0.86, ("fashion_mnist", "mlp"): 0.81,
}


def accuracy_bar(dataset: str, architecture: str) -> float:
    """G1's clean-accuracy bar for a victim of this architecture on this data set."""
    key = (str(dataset), str(architecture))
    if key not in ACCURACY_BARS:
        raise ConfigError(f"(dataset, architecture)={key} has no accuracy bar; "
                          f"choose one of {sorted(ACCURACY_BARS)}")
    return ACCURACY_BARS[key]


def accuracy_check(dataset: str, architecture: str, accuracy: float, *, who: str = "victim") -> Check:
    """G1: the model's clean test accuracy against its (data set, architecture) bar;
    below it the run is `inconclusive (victim under-trained)`."""
    bar = accuracy_bar(dataset, architecture)
    acc = num(accuracy)
    return Check(f"{who} clean accuracy >= {bar:g} ({architecture} on {dataset})", acc, acc >= bar, "accuracy")


def victim_checks(e: dict[str, Any], accuracy_key: str, *, architecture_key: str = "architecture",
                  who: str = "victim") -> list[Check]:
    """G1's check from an evidence dict, applied when the evidence records the data set,
    the architecture and the accuracy (the notebooks record them for every finding);
    [] when any is missing (no value is invented)."""
    ds, arch, acc = e.get("dataset"), e.get(architecture_key), e.get(accuracy_key)
    if ds is None or arch is None or acc is None:
        return []
    return [accuracy_check(ds, arch, acc, who=who)]


@dataclass(frozen=True)
class Exact:
    """A condition decided on counts by an exact test or a rule on counts (G3.3).

    decision: +1 significant (or met) in the claimed direction, -1 in the opposite one,
    0 neither. value and interval: the number shown, e.g. a pooled rate with its
    Clopper-Pearson interval. detail: the counts and p-values, in words.
    """

    name: str
    decision: int
    value: float
    interval: tuple[float, float] = (math.nan, math.nan)
    detail: str = ""
    unit: str = "fraction"

    def __post_init__(self):
        if self.decision not in (-1, 0, 1):
            raise ValueError(f"exact condition {self.name!r}: decision must be -1, 0 or +1")


@dataclass(frozen=True)
class Verdict:
    """One run's verdict: status (one of STATUSES), its conditions, checks and exact
    conditions, the deciding numbers shown beside them and a note (why not run, which
    check failed, what the design decided)."""

    status: str
    conditions: tuple[Condition, ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    exact: tuple[Exact, ...] = ()
    note: str = ""

    @property
    def margins(self) -> dict[str, float]:
        """Each condition's margin by name (> 0: its bar is passed)."""
        return {c.name: c.margin for c in self.conditions}

    @property
    def margin(self) -> dict[str, float]:
        """Each condition's margin rounded to 4 digits, by name. Kept for notebooks 01-04,
        which print `verdict.margin`; margins in different units are never combined."""
        return {k: round(v, 4) for k, v in self.margins.items()}

    @property
    def usable(self) -> bool:
        """The run enters the intervals over seeds (it was run and is not inconclusive)."""
        return self.status in (SUPPORTED, NOT_SUPPORTED)


def judged(conditions: Sequence[Condition], numbers: dict[str, Any], *, checks: Sequence[Check] = (),
           exact: Sequence[Exact] = (), note: str = "") -> Verdict:
    """A run's verdict from its conditions, checks and exact conditions.

    In order: a failed identity check, then a failed power or accuracy check, then a
    condition decided by design (G0) make the run inconclusive with that reason;
    otherwise supported iff every condition holds and every exact condition is met,
    not supported iff one fails, inconclusive when an exact test decides neither way.
    """
    conditions, checks, exact = tuple(conditions), tuple(checks), tuple(exact)
    names = [c.name for c in conditions] + [x.name for x in exact]
    if not names:
        raise ValueError("a judge needs at least one condition")
    if len(set(names)) != len(names):
        raise ValueError(f"condition names repeat: {names}")
    failed = sorted((c for c in checks if not c.ok), key=lambda c: CHECK_KINDS.index(c.kind), reverse=True)
    design = [c.g0 for c in conditions if c.g0]
    if failed:
        status, why = INCONCLUSIVE, "; ".join(c.failure for c in failed)
    elif design:
        status, why = INCONCLUSIVE, "decided by design: " + "; ".join(design)
    elif all(c.holds for c in conditions) and all(x.decision == 1 for x in exact):
        status, why = SUPPORTED, ""
    elif any(not c.holds for c in conditions) or any(x.decision == -1 for x in exact):
        status, why = NOT_SUPPORTED, ""
    else:
        status, why = INCONCLUSIVE, "exact test undecided: " + ", ".join(x.name for x in exact if x.decision == 0)
    return Verdict(status, conditions, dict(numbers), checks, exact, "; ".join(s for s in (why, note) if s))


# ----------------------------------------------------------------- a finding

Judge = Callable[[dict[str, Any]], Verdict]
#: pooled(evidences of the usable runs of one data set) -> exact conditions on pooled counts.
Pooled = Callable[[list[dict[str, Any]]], Sequence[Exact]]

NOTEBOOK = {"extraction": "01_model_extraction", "inversion": "02_model_inversion",
            "poisoning": "03_poisoning", "adversarial": "04_adversarial"}
_BROKEN = (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError)


@dataclass(frozen=True)
class Finding:
    """A claim, its judge and where its evidence is drawn.

    judge_fn(evidence) -> Verdict for one run; evidence may carry "dataset" (added from
    the sweep point when the notebook did not record it). pooled(evidences) -> exact
    conditions recomputed on counts pooled over the usable runs. baselines: names in the
    verdict's `numbers` that are the finding's trivial baselines. short: the claim in
    at most 10 words, for the README's verdict matrix (set by `report.findings`).
    """

    id: str
    family: str
    claim: str
    rule: str           # the judge rule in words
    figure: str         # figure stem the evidence is drawn in
    judge_fn: Judge
    pooled: Pooled | None = None
    baselines: tuple[str, ...] = ()
    short: str = ""

    @property
    def notebook(self) -> str:
        return NOTEBOOK[self.family]

    def judge_evidence(self, ev: dict[str, Any] | None, dataset: str | None = None) -> Verdict:
        """Verdict from this finding's evidence dict (missing or broken -> not run)."""
        if ev is None:
            return Verdict(NOT_RUN, note=f"no evidence for {self.id}")
        if dataset is not None and "dataset" not in ev:
            ev = {**ev, "dataset": dataset}
        try:
            return self.judge_fn(ev)
        except _BROKEN as e:
            return Verdict(NOT_RUN, note=f"evidence for {self.id} incomplete: {type(e).__name__}: {e}")

    def judge(self, results: dict[str, dict[str, Any]], dataset: str | None = None) -> Verdict:
        """Verdict from all results files of one run (by notebook name)."""
        doc = results.get(self.notebook)
        if doc is None:
            return Verdict(NOT_RUN, note=f"no results from {self.notebook} yet")
        ev = doc.get("evidence", {}).get(self.id)
        if ev is None:
            return Verdict(NOT_RUN, note=f"{self.notebook} recorded no evidence for {self.id}")
        if dataset is None:  # one run's files: its provenance, MNIST when unset (as the tables read it)
            dataset = ((doc.get("provenance") or {}).get("parameters") or {}).get("dataset", "mnist")
        return self.judge_evidence(ev, dataset)


# ----------------------------------------------------------------- over seeds


@dataclass(frozen=True)
class ConditionSummary:
    """One condition over the usable runs of a data set.

    margin: (mean, low, high) Student-t interval of the margin (decides, G3.1).
    value: (centre, low, high) of the statistic as shown: bootstrap percentile for a
    bounded linear statistic (G3.4), Student-t for an unbounded one, Student-t on the
    log scale back-transformed (geometric mean) for a "k x" ratio. decision: +1 lower
    bound > 0, -1 upper bound < 0, 0 neither. at_ceiling: the statistic sat at its best
    reachable value in every run (G3.5). baseline: the most common baseline text.
    """

    name: str
    unit: str
    op: str
    bar: float
    scale: str
    runs: int
    margin: tuple[float, float, float] | None
    value: tuple[float, float, float] | None
    decision: int
    at_ceiling: bool
    g0: str
    baseline: str


@dataclass(frozen=True)
class Aggregate:
    """A finding's verdict on one data set over its runs (seeds).

    n runs that ran (not-run ones are counted in `not_run`), k of them supported,
    `inconclusive_runs` of them inconclusive (their reasons in `reasons`); per condition
    a `ConditionSummary`; exact conditions on pooled counts; deciding numbers as
    (centre, low, high); note: why the status is what it is when not plainly decided.
    """

    finding: str
    dataset: str
    status: str
    n: int
    k: int
    inconclusive_runs: int
    not_run: int
    conditions: tuple[ConditionSummary, ...] = ()
    exact: tuple[Exact, ...] = ()
    numbers: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    note: str = ""
    reasons: tuple[str, ...] = ()


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def flatten(numbers: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dicts and lists flattened to `key.subkey` / `key.0` entries (G4: every deciding
    number reaches the tables)."""
    out: dict[str, Any] = {}
    for k, v in numbers.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out.update(flatten({str(i): x for i, x in enumerate(v)}, key + "."))
        else:
            out[key] = v
    return out


def number_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """A deciding number's interval over seeds: bootstrap percentile when every value
    lies in [-1, 1] (rates, accuracies, their differences, correlations: G3.4), else
    Student-t."""
    if all(-1.0 <= float(v) <= 1.0 for v in values):
        return stats.bootstrap_interval(values)
    return stats.t_interval(values)


def summarise(usable: Sequence[Condition], ran: Sequence[Condition]) -> ConditionSummary:
    """One condition's summary: intervals over the usable runs that measured it, its G0
    state over every run that ran (`ran`, a superset of `usable`)."""
    first = ran[0]
    design = sum(bool(c.g0) for c in ran)
    g0 = f"decided by design in {design}/{len(ran)} runs" if design else "in reach"
    base = Counter(c.baseline for c in ran).most_common(1)[0][0]
    if not usable:
        return ConditionSummary(first.name, first.unit, first.op, first.bar, first.scale, 0, None, None, 0,
                                False, g0, base)
    m = stats.t_interval([c.margin for c in usable])
    decision = 1 if m[1] > 0 else -1 if m[2] < 0 else 0
    values = [c.value for c in usable]
    if first.scale == "log" and all(v > 0 for v in values):
        g = stats.t_interval([math.log(v) for v in values])
        value = (math.exp(g[0]), math.exp(g[1]) if math.isfinite(g[1]) else 0.0,
                 math.exp(g[2]) if math.isfinite(g[2]) else math.inf)
    elif all(math.isfinite(c.reach[0]) and math.isfinite(c.reach[1]) for c in usable):
        value = stats.bootstrap_interval(values)
    else:
        value = stats.t_interval(values)
    return ConditionSummary(first.name, first.unit, first.op, first.bar, first.scale, len(usable), m, value, decision,
                            all(c.at_ceiling for c in usable), g0, base)


def decide(verdicts: Sequence[Verdict], *, exact: Sequence[Exact] = (), min_seeds: int = MIN_SEEDS,
           finding: str = "", dataset: str = "") -> Aggregate:
    """G3's decision for one finding on one data set from its runs' verdicts.

    Runs not run are left out. Fewer than `min_seeds` runs, or more than
    MAX_INCONCLUSIVE_RUNS inconclusive ones (naming their reasons), make the verdict
    inconclusive. Otherwise each condition gets a Student-t interval of its margin over
    the usable runs, and the intersection-union rule decides together with `exact`
    (conditions on counts pooled over the usable runs): supported iff every lower bound
    is > 0 and every exact decision is +1; not supported iff some upper bound is < 0 or
    some exact decision is -1; else inconclusive. A condition measured in fewer than 2
    usable runs has no interval and decides nothing.
    """
    ran = [v for v in verdicts if v.status != NOT_RUN]
    not_run = len(verdicts) - len(ran)
    if not ran:
        note = next((v.note for v in verdicts if v.note), "no runs")
        return Aggregate(finding, dataset, NOT_RUN, 0, 0, 0, not_run, note=note)
    k = sum(v.status == SUPPORTED for v in ran)
    bad = [v for v in ran if not v.usable]
    usable = [v for v in ran if v.usable]
    reasons = tuple(v.note for v in bad)
    names: list[str] = []
    for v in ran:
        names += [c.name for c in v.conditions if c.name not in names]
    summaries = tuple(summarise([c for v in usable for c in v.conditions if c.name == name],
                                [c for v in ran for c in v.conditions if c.name == name]) for name in names)
    numbers: dict[str, tuple[float, float, float]] = {}
    flat = [flatten(v.numbers) for v in usable]
    for key in (flat[0] if flat else {}):
        vals = [f.get(key) for f in flat]
        if all(_is_number(x) for x in vals):
            numbers[key] = number_interval(vals)
    exact = tuple(exact)
    common = dict(finding=finding, dataset=dataset, n=len(ran), k=k, inconclusive_runs=len(bad),
                  not_run=not_run, conditions=summaries, exact=exact, numbers=numbers, reasons=reasons)
    if len(ran) < min_seeds:
        return Aggregate(status=INCONCLUSIVE, note=f"{len(ran)} runs < {min_seeds} seeds", **common)
    if len(bad) > MAX_INCONCLUSIVE_RUNS:
        top = Counter(_reason_kind(r) for r in reasons).most_common()
        return Aggregate(status=INCONCLUSIVE, note=f"{len(bad)} of {len(ran)} runs inconclusive: "
                         + "; ".join(f"{r} ({n})" for r, n in top), **common)
    decisions = [s.decision for s in summaries if s.runs] + [x.decision for x in exact]
    if decisions and all(d == 1 for d in decisions):
        return Aggregate(status=SUPPORTED, **common)
    if any(d == -1 for d in decisions):
        failing = [s.name for s in summaries if s.decision == -1] + [x.name for x in exact if x.decision == -1]
        return Aggregate(status=NOT_SUPPORTED, note="below its bar: " + ", ".join(failing), **common)
    open_ = [s.name for s in summaries if s.runs and s.decision == 0] + [x.name for x in exact if x.decision == 0]
    return Aggregate(status=INCONCLUSIVE, note="interval straddles its bar: " + ", ".join(open_), **common)


def _reason_kind(note: str) -> str:
    # "decided by design: best / noise: bar 3 cannot be passed ..." -> "decided by
    # design: best / noise", so runs with different numbers count as one reason.
    head = note.split(";")[0].split(" (got")[0]
    return ": ".join(head.split(": ")[:2])
