"""Where a notebook's time goes: wall seconds per section of executed notebooks.

papermill records every cell's duration in ``cell.metadata.papermill.duration``; this
sums them per section (the notebook's ``##`` headings, one per finding) and prints a
markdown table, one column per executed notebook given:

    PYTHONPATH=lib python benchmarks/notebook_sections.py RUN1/executed/03_poisoning.ipynb RUN2/...

Used for benchmarks/PROFILING.md (empty against warm model cache). Reads JSON only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def sections(path: Path) -> list[tuple[str, float]]:
    """[(section heading, seconds)] in notebook order; cells before the first ``##``
    heading count as "set-up"."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    out: list[list] = [["set-up", 0.0]]
    for cell in nb.get("cells", []):
        src = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            for line in src.splitlines():
                if line.startswith("## "):
                    out.append([line[3:].strip(), 0.0])
                    break
            continue
        duration = (cell.get("metadata", {}).get("papermill", {}) or {}).get("duration")
        if isinstance(duration, (int, float)):
            out[-1][1] += float(duration)
    return [(name, secs) for name, secs in out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--labels", default="", help="comma-separated column labels (default: file paths)")
    a = ap.parse_args(argv)
    missing = [str(p) for p in a.notebooks if not p.is_file()]
    if missing:
        print(f"notebooks: {missing} do not exist", file=sys.stderr)
        return 2
    labels = a.labels.split(",") if a.labels else [str(p) for p in a.notebooks]
    if len(labels) != len(a.notebooks):
        print(f"--labels: {len(labels)} labels for {len(a.notebooks)} notebooks", file=sys.stderr)
        return 2
    cols = [dict(sections(p)) for p in a.notebooks]
    names: list[str] = []
    for p in a.notebooks:
        names += [n for n, _ in sections(p) if n not in names]
    print("| section | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{c[n]:.0f}" if n in c else "–" for c in cols) + " |")
    print("| **total** | " + " | ".join(f"**{sum(c.values()):.0f}**" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
