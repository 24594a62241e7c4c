"""The quick sweep with 1 and with 2 local workers: points per hour and their ratio.

    python benchmarks/sweep_scaling.py                       # -> sweep_scaling.json, results.md section
    python benchmarks/sweep_scaling.py --seeds 0 --datasets mnist --only 01 02 03 04 --workers 1 2

What is timed: `python -m threatlab sweep --profile quick ... --workers N --out <fresh
folder>` as a whole command (Dask start-up, every point, the gathering), once per worker
count, into a new output folder each time so no point is skipped. The model cache is
the project's (`$THREATLAB_CACHE` or data/cache), used as it is: run this after a
`make figures` so both configurations find the same warm cache, and no configuration
pays for training the other one did. The family notebooks run with `threads` = 1
(their default), so one worker uses one core; the point of the comparison is whether a
second worker process buys a second core's worth of points on this machine.

Each point's own wall time (its `.run.json`) is reported too, so a reader sees whether
two points side by side slowed each other down (memory bandwidth, a shared L3). The
load average is read before and after each run. One run per configuration: a quick
sweep takes minutes, not milliseconds, and the per-point times show its spread.
Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- sweep-scaling:start -->", "<!-- sweep-scaling:end -->"


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _point_times(out: Path) -> dict[str, float]:
    """{"<notebook>/<digest>": wall seconds} from every point's run record under `out`."""
    times = {}
    for rec in sorted((out / "points").glob("*/*/results/*.run.json")):
        doc = json.loads(rec.read_text())
        times[f"{rec.parents[2].name}/{rec.parents[1].name}"] = float(doc["wall_time_s"])
    return times


def run_one(workers: int, args: argparse.Namespace) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"sweep-scaling-w{workers}-"))
    cmd = [sys.executable, "-m", "threatlab", "sweep", "--profile", args.profile, "--seeds", args.seeds,
           "--datasets", args.datasets, "--workers", str(workers), "--out", str(out)]
    if args.only:
        cmd += ["--only", *args.only]
    env = {**os.environ, "THREATLAB_NO_PROGRESS": "1"}
    load_before = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep with {workers} worker(s) failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    points = _point_times(out)
    shutil.rmtree(out, ignore_errors=True)
    return {"workers": workers, "wall_s": wall, "points": len(points), "points_per_hour": 3600 * len(points) / wall,
            "point_wall_s": points, "sum_point_s": sum(points.values()), "load_before": load_before,
            "load_after": _load()}


def markdown(doc: dict) -> str:
    rows = doc["runs"]
    lines = [START, "## Sweep scaling: 1 vs 2 local workers", "",
             f"`benchmarks/sweep_scaling.py`, {doc['date_utc']} at git {doc['git'][:7]}: `python -m threatlab sweep "
             f"--profile {doc['profile']} --seeds {doc['seeds']} --datasets {doc['datasets']}"
             + (f" --only {' '.join(doc['only'])}" if doc["only"] else "") + " --workers N`, warm model cache, a fresh "
             "--out per run, notebooks at threads = 1. One run per configuration.", "",
             "| workers | points | wall s | points / hour | sum of point walls s | load before / after |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['points']} | {r['wall_s']:.0f} | {r['points_per_hour']:.1f} | "
                     f"{r['sum_point_s']:.0f} | {r['load_before']} / {r['load_after']} |")
    names = sorted({k for r in rows for k in r["point_wall_s"]})
    lines += ["", "| point | " + " | ".join(f"{r['workers']} worker(s): wall s" for r in rows) + " |",
              "| --- | " + " | ".join("---" for _ in rows) + " |"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{r['point_wall_s'].get(n, float('nan')):.0f}" for r in rows) + " |")
    if len(rows) >= 2:
        lines += ["", f"Ratio of points per hour, {rows[-1]['workers']} workers / {rows[0]['workers']}: "
                  f"**{rows[-1]['points_per_hour'] / rows[0]['points_per_hour']:.2f}**."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--seeds", default="0")
    p.add_argument("--datasets", default="mnist")
    p.add_argument("--only", nargs="*", default=["01", "02", "03", "04"])
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--out", type=Path, default=HERE / "results.md", help="markdown report to update in place")
    args = p.parse_args(argv)
    if any(w < 1 for w in args.workers):
        raise SystemExit(f"--workers {args.workers}: every count must be >= 1 (local worker processes)")
    runs = []
    for w in args.workers:
        print(f"[sweep_scaling] {w} worker(s) ...", flush=True)
        runs.append(run_one(w, args))
        print(f"[sweep_scaling] {w} worker(s): {runs[-1]['wall_s']:.0f} s, {runs[-1]['points_per_hour']:.1f} points/h",
              flush=True)
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc = {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git": git,
           "profile": args.profile, "seeds": args.seeds, "datasets": args.datasets, "only": args.only, "runs": runs}
    (HERE / "sweep_scaling.json").write_text(json.dumps(doc, indent=1) + "\n")
    section = markdown(doc)
    text = args.out.read_text() if args.out.exists() else ""
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    args.out.write_text(text)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
