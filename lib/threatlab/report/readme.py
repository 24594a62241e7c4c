"""The verdicts readers see first: the README's matrix and the docs site's findings page.

Both are rendered here from one gathered table (a sweep's ``sweep/points.jsonl``, or one
run's results as points) by the same judges (`report.findings`), so they cannot
disagree (tests/test_readme.py checks the committed files):

- `verdict_matrix`: 18 findings x 2 data sets, each claim in at most 10 words
  (`Finding.short`), the verdict with k/N (runs that supported the claim / runs), and a
  link to the finding's section of the findings page. Written between the markers
  `START` and `END` in README.md.
- `findings_page`: docs/findings.md, one section per finding: the full claim, the judge
  rule, per data set the verdict, k/N, every condition's interval and margin, the
  deciding numbers and baselines, and the figure.

The claims restate the survey's findings (He et al., "Towards Security Threats of Deep
Learning Systems: A Survey", arXiv 1911.12562) in this project's own words.

`publish` writes both; notebook 05 calls it when it may rewrite the README (the quick
profile's sweep publishing into the repository's own figures/).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write
from . import findings as F

#: README.md's verdict matrix lies between these lines.
START, END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"

#: Where the README's links point (the findings page, relative to the repository root;
#: GitHub renders it, and the docs site builds it into findings.html).
PAGE = "docs/findings.md"

#: A mark before each verdict, so the matrix reads at a glance (text symbols, not emoji:
#: they render in every common font, GitHub's and a headless browser's alike).
MARK = {F.SUPPORTED: "✔", F.NOT_SUPPORTED: "✘", F.INCONCLUSIVE: "◐", F.NOT_RUN: "·"}


def anchor(finding_id: str) -> str:
    """The HTML id of a finding's section on the findings page ('F01' -> 'f01')."""
    return finding_id.lower()


def verdicts(points: Sequence[dict[str, Any]], datasets: dict[str, str] | None = None
             ) -> dict[tuple[str, str], tuple[str, int, int]]:
    """{(finding id, data set label): (status, k, n)} over the gathered table `points`."""
    datasets = dict(F.DATASETS if datasets is None else datasets)
    aggs = F.sweep_aggregates(points, tuple(datasets))
    return {(fid, datasets[ds]): (a.status, a.k, a.n) for (fid, ds), a in aggs.items()}


def verdict_text(status: str, k: int, n: int) -> str:
    """One matrix cell: mark, verdict and k/N ('✔ supported 5/5'; 'not run' has no k/N)."""
    return f"{MARK[status]} {status}" + (f" {k}/{n}" if n else "")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def verdict_matrix(points: Sequence[dict[str, Any]], *, page: str = PAGE,
                   datasets: dict[str, str] | None = None) -> str:
    """The README's Markdown matrix: one row per finding, one verdict column per data set."""
    datasets = dict(F.DATASETS if datasets is None else datasets)
    v = verdicts(points, datasets)
    labels = list(datasets.values())
    lines = ["| | finding | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for f in F.FINDINGS:
        cells = [verdict_text(*v[f.id, label]) for label in labels]
        lines.append(f"| [{f.id}]({page}#{anchor(f.id)}) | {_cell(f.short)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _section(f: F.Finding, row: dict[str, str], v: dict[tuple[str, str], tuple[str, int, int]],
             labels: list[str], figures: str) -> list[str]:
    out = [f'<a id="{anchor(f.id)}"></a>', "", f"### {f.id} · {f.short}", "",
           f"**Claim.** {f.claim}", "", f"**Rule.** {f.rule}", "",
           "| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    fields = (("verdict", lambda lb: verdict_text(*v[f.id, lb]) + _why(row[lb])),
              ("runs supported (k/N)", lambda lb: row[f"k/N {lb}"]),
              ("conditions: value, margin interval", lambda lb: row[f"conditions {lb}"]),
              ("deciding numbers", lambda lb: row[f"numbers {lb}"]),
              ("trivial baselines", lambda lb: row[f"baseline {lb}"]),
              ("tests on pooled counts", lambda lb: row[f"exact {lb}"]))
    for name, get in fields:
        cells = [get(lb) for lb in labels]
        if any(cells):
            out.append(f"| {name} | " + " | ".join(_cell(c) for c in cells) + " |")
    out.append("")
    if any(v[f.id, lb][0] != F.NOT_RUN for lb in labels):
        out += [f"![{f.figure}]({figures}{f.figure}.png)", ""]
    return out


def _why(cell: str) -> str:
    """The reason a verdict cell carries after its status ('inconclusive (…)' -> ': …')."""
    for status in F.STATUSES:
        if cell.startswith(status):
            rest = cell[len(status):].strip(" :")
            return f": {rest.strip('()')}" if rest else ""
    return ""


def findings_page(points: Sequence[dict[str, Any]], *, figures: str = "../figures/",
                  datasets: dict[str, str] | None = None, source: str = "figures/sweep/points.jsonl") -> str:
    """docs/findings.md: the full table, one section per finding, with per-condition
    intervals (`findings.sweep_rows`). `figures`: the figures folder relative to the page."""
    datasets = dict(F.DATASETS if datasets is None else datasets)
    labels = list(datasets.values())
    v = verdicts(points, datasets)
    rows = F.sweep_rows(points, datasets=datasets)
    counts = {lb: {s: sum(v[f.id, lb][0] == s for f in F.FINDINGS) for s in F.STATUSES} for lb in labels}
    summary = "; ".join(f"{lb}: " + ", ".join(f"{n} {s}" for s, n in counts[lb].items() if n) for lb in labels)
    out = ["# Findings", "",
           "The survey's 18 findings (He et al., arXiv 1911.12562), restated as testable claims "
           "and judged from the numbers the notebooks measured. For each finding a fixed rule turns "
           "one run's numbers into conditions, each with a margin above 0 exactly when its bar is "
           "passed. Over the seeds of each data set the verdict is **supported** when every "
           "condition's 95 % Student-t interval of the mean margin lies above 0, **not supported** "
           "when one lies below 0, and **inconclusive** when an interval straddles 0 or more than one "
           "run failed its own power check; k/N counts the runs that supported the claim.", "",
           f"This page and the README's verdict matrix are written together by "
           f"`threatlab.report.readme.publish` from one gathered table (`{source}`, "
           f"{len(points)} runs). {summary}.", ""]
    for f, row in zip(F.FINDINGS, rows):
        out += _section(f, row, v, labels, figures)
    return "\n".join(out).rstrip("\n") + "\n"


def replace_matrix(readme_text: str, matrix: str) -> str:
    """README text with the part between `START` and `END` replaced by `matrix`."""
    if START not in readme_text or END not in readme_text:
        raise ConfigError(f"README has no {START} ... {END} markers; add them where the matrix goes")
    before, rest = readme_text.split(START, 1)
    return before + START + "\n" + matrix + END + rest.split(END, 1)[1]


def publish(points: Sequence[dict[str, Any]], root: str | os.PathLike = "..") -> list[Path]:
    """Write the verdict matrix into ``<root>/README.md`` and the findings page into
    ``<root>/docs/findings.md``, both from `points`. Returns the two paths."""
    root = Path(root)
    readme = root / "README.md"
    if not readme.is_file():
        raise ConfigError(f"root={str(root)!r} has no README.md; give the repository root")
    text = replace_matrix(readme.read_text(encoding="utf-8"), verdict_matrix(points))
    return [atomic_write(readme, text), atomic_write(root / PAGE, findings_page(points))]


__all__ = ["START", "END", "PAGE", "MARK", "anchor", "verdicts", "verdict_text", "verdict_matrix",
           "findings_page", "replace_matrix", "publish"]
