"""Ensemble training vs the same models trained one by one: K = 16 and 64, MLP and SmallCNN.

    PYTHONPATH=lib python benchmarks/ensemble_bench.py                  # -> ensemble.json, results.md section
    PYTHONPATH=lib python benchmarks/ensemble_bench.py --archs mlp --models 16 --repeats 3

Notebook 02's shadow setting: MNIST 28x28, every model on its own random half of a pool
of 2000 training images (`ensemble.half_splits`), batch 64, Adam lr 1e-3; the MLP has
hidden (128,) as there, SmallCNN its `models.py` layout. `--rows` caps the rows per
model (one epoch = rows / 64 steps): the MLP trains its full 1000-row half, SmallCNN 256
rows by default (its sequential K = 64 run is ~4 steps x 64 models of 60 ms each on
this shared CPU). Model construction (K x `models.build`) counts on both sides, as in
the notebook's own timing.

Protocol: one warm-up of each side, then `repeats` rounds; in each round both sides
run, in alternating order (A B, B A, ...), so a change of machine load hits both. Times
are medians (with min and max) of the rounds; ratio = median(sequential) /
median(ensemble). The load average is read before and after every configuration. The
ensemble's parameters are compared with the sequential ones after every round (the
largest absolute difference is reported; the tests' tolerance is rtol 1e-4 / atol 1e-5).
Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if (HERE.parent / "lib").is_dir() and not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(HERE.parent / "lib"))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from threatlab import data, ensemble  # noqa: E402
from threatlab.io import atomic_write  # noqa: E402

START, END = "<!-- ensemble:start -->", "<!-- ensemble:end -->"
ARCH_PARAMS = {"mlp": {"hidden": (128,)}, "cnn": {}}
DEFAULT_ROWS = {"mlp": 1000, "cnn": 256}


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _max_diff(ens, seq) -> tuple[float, float]:
    """Largest |ensemble - sequential| over all parameters, and the fraction of parameter
    elements outside tests/test_ensemble_dp.py's tolerance (atol 1e-5 + rtol 1e-4 |seq|)."""
    worst, outside, total = 0.0, 0, 0
    for m, net in enumerate(seq):
        got = ens.model(m).state_dict()
        for k, v in net.state_dict().items():
            d = (got[k] - v).abs()
            worst = max(worst, float(d.max()))
            outside += int((d > 1e-5 + 1e-4 * v.abs()).sum())
            total += v.numel()
    return worst, outside / total


def run_config(arch: str, k: int, rows_per_model: int, epochs: int, repeats: int,
               x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    mask = ensemble.half_splits(x.shape[0], k, generator=torch.Generator().manual_seed(0))
    rows = torch.stack([r.nonzero().squeeze(1) for r in mask])[:, :rows_per_model]
    kw = dict(seeds=list(range(k)), epochs=epochs, batch_size=64, lr=1e-3, arch_params=ARCH_PARAMS[arch],
              device=device)

    def ens():
        return ensemble.train_ensemble(arch, x, y, rows, progress=False, **kw)

    def seq():
        return ensemble.train_sequential(arch, x, y, rows, **kw)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, out

    load_before = _load()
    small = dict(kw, seeds=kw["seeds"][:2])
    ensemble.train_ensemble(arch, x, y, rows[:2, :64], progress=False, **small)   # warm-up
    ensemble.train_sequential(arch, x, y, rows[:2, :64], **small)
    t_ens, t_seq, diffs, fracs = [], [], [], []
    for r in range(repeats):
        order = [("ens", ens), ("seq", seq)] if r % 2 == 0 else [("seq", seq), ("ens", ens)]
        outs = {}
        for name, fn in order:
            t, outs[name] = timed(fn)
            (t_ens if name == "ens" else t_seq).append(t)
        worst, frac = _max_diff(outs["ens"], outs["seq"])
        diffs.append(worst)
        fracs.append(frac)
    med_e, med_s = statistics.median(t_ens), statistics.median(t_seq)
    return {"arch": arch, "models": k, "rows_per_model": rows.shape[1], "epochs": epochs,
            "steps_per_model": epochs * -(-rows.shape[1] // 64), "batch_size": 64,
            "ensemble_s": {"median": med_e, "min": min(t_ens), "max": max(t_ens), "all": t_ens},
            "sequential_s": {"median": med_s, "min": min(t_seq), "max": max(t_seq), "all": t_seq},
            "ratio": med_s / med_e, "max_abs_param_diff": max(diffs), "frac_outside_tolerance": max(fracs),
            "load_before": load_before, "load_after": _load()}


def section(doc: dict) -> str:
    """The results.md section for an ensemble.json document."""
    run = doc["run"]
    L = [START, "## Ensemble training vs sequential (issue 22)", "",
         f"`{run['command']}` on {run['date_utc']} UTC; device {run['device']}, {run['threads']} torch "
         f"thread(s), {run['repeats']} interleaved rounds after a warm-up, git {run['git'][:10]}. "
         "Notebook 02's shadow setting (MNIST, random halves of a 2000-image pool, batch 64, Adam 1e-3; "
         "MLP hidden (128,), SmallCNN as in models.py); model construction counts on both sides. "
         "ratio = median sequential / median ensemble. Protocol and profile: "
         "[PROFILING.md](PROFILING.md#ensembles-stacked-layers-instead-of-vmap); "
         "script: [ensemble_bench.py](ensemble_bench.py).", "",
         "| arch | K | rows / model | steps / model | ensemble s, median (min–max) | sequential s, median (min–max) "
         "| ratio | max abs param diff | params outside test tolerance | load avg before → after |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in doc["configs"]:
        e, s = c["ensemble_s"], c["sequential_s"]
        L.append(f"| {c['arch']} | {c['models']} | {c['rows_per_model']} | {c['steps_per_model']} "
                 f"| {e['median']:.2f} ({e['min']:.2f}–{e['max']:.2f}) | {s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f}) "
                 f"| {c['ratio']:.2f} | {c['max_abs_param_diff']:.1e} "
                 f"| {100 * c.get('frac_outside_tolerance', float('nan')):.4f} % "
                 f"| {c['load_before']} → {c['load_after']} |")
    L += ["", END]
    return "\n".join(L)


def update_results_md(path: Path, text: str, start: str = START, end: str = END) -> None:
    """Replace the section between the `start` and `end` markers of results.md (or append it)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in old and end in old:
        new = old[:old.index(start)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    atomic_write(path, new)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="mlp,cnn")
    p.add_argument("--models", default="16,64")
    p.add_argument("--rows", type=int, default=None, help="rows per model (default: mlp 1000, cnn 256)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--out", default=str(HERE / "ensemble.json"))
    p.add_argument("--results-md", default=str(HERE / "results.md"),
                   help="markdown file whose ensemble section is replaced ('' = none)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ.setdefault("THREATLAB_NO_PROGRESS", "1")
    device = torch.device(a.device)
    x, y = data.load("mnist", "train", n=2000)
    configs = []
    for arch in [s.strip() for s in a.archs.split(",") if s.strip()]:
        for k in [int(s) for s in a.models.split(",") if s.strip()]:
            c = run_config(arch, k, a.rows or DEFAULT_ROWS[arch], a.epochs, a.repeats, x, y, device)
            print(f"{arch} K={k}: ensemble {c['ensemble_s']['median']:.2f} s, sequential "
                  f"{c['sequential_s']['median']:.2f} s, ratio {c['ratio']:.2f}, max diff "
                  f"{c['max_abs_param_diff']:.1e}, load {c['load_before']} -> {c['load_after']}", flush=True)
            configs.append(c)
    import report  # benchmarks/report.py: the same environment block as results.md
    from threatlab.report.results import git_sha
    run = {"command": " ".join(["python benchmarks/ensemble_bench.py", *(argv if argv is not None else sys.argv[1:])]),
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "device": str(device),
           "threads": torch.get_num_threads(), "repeats": a.repeats, "git": git_sha() or "unknown",
           "environment": report.environment(device)}
    doc = {"run": run, "configs": configs}
    out = Path(a.out)
    atomic_write(out, json.dumps(doc, indent=1) + "\n")
    if a.results_md:
        update_results_md(Path(a.results_md), section(doc))
    print(f"wrote {out}" + (f" and the ensemble section of {a.results_md}" if a.results_md else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
