"""Converged victims (FINDINGS.md rule G1) against the power-check bars.

Trains, with `models.cached(..., early_stop=True)` (held-out loss on 1,000 of the
training images, patience 3, 3-15 epochs, best epoch kept; Adam 1e-3, batch 64), seed 0:
the MLP on 10k, LeNet-5 on 20k and SmallCNN on 10k training images of MNIST and of
Fashion-MNIST, and reports epochs run, best epoch, clean test accuracy (all 10,000 test
images) and training seconds against G1's bars. Models go into the shared cache
($THREATLAB_CACHE), so a rerun with an unchanged models.py only loads them (seconds
then say "cached").

    PYTHONPATH=lib python benchmarks/converged_victims.py [--threads 1]

Writes benchmarks/converged_victims.json and benchmarks/converged_victims.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from threatlab import data, models

HERE = Path(__file__).resolve().parent
#: (architecture, training images) as G1's reference measurements used them.
CASES = [("mlp", 10_000), ("lenet5", 20_000), ("cnn", 10_000)]
DATASETS = ["mnist", "fashion_mnist"]
#: G1's power-check bars on clean test accuracy.
BARS = {("mnist", "cnn"): 0.97, ("mnist", "lenet5"): 0.97, ("mnist", "mlp"): 0.94,
        ("fashion_mnist", "cnn"): 0.86, ("fashion_mnist", "lenet5"): 0.86, ("fashion_mnist", "mlp"): 0.81}


def measure(dataset: str, arch: str, n: int, seed: int = 0) -> dict:
    x, y = data.load(dataset, "train", n=n)
    xt, yt = data.load(dataset, "test")
    t0 = time.perf_counter()
    model, info = models.cached(arch, dataset, x, y, seed=seed, num_classes=data.info(dataset).num_classes,
                                early_stop=True)
    seconds = time.perf_counter() - t0
    h = info["history"]
    acc = models.accuracy(model, xt, yt)
    return {"dataset": dataset, "arch": arch, "n_train": n, "seed": seed, "epochs_run": h["epochs_run"],
            "best_epoch": h["best_epoch"], "holdout_loss": [round(v, 4) for v in h["holdout_loss"]],
            "test_accuracy": round(acc, 4), "bar": BARS[(dataset, arch)], "passes": acc >= BARS[(dataset, arch)],
            "train_seconds": None if info["from_cache"] else round(info["train_seconds"], 1),
            "wall_seconds": round(seconds, 1), "from_cache": info["from_cache"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for ds in DATASETS:
        for arch, n in CASES:
            load = os.getloadavg()[0]
            row = measure(ds, arch, n)
            row["load_before"] = round(load, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch_threads": args.threads, "torch": torch.__version__},
           "code_version": models.CODE_VERSION[:16], "rows": rows}
    (HERE / "converged_victims.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Converged victims (rule G1) against the power-check bars", "",
             "`python benchmarks/converged_victims.py`: seed 0, early stopping on the loss over 1,000 held-out "
             "training images (patience 3, 3-15 epochs, best epoch kept), Adam 1e-3, batch 64; clean accuracy "
             f"on all 10,000 test images. {args.threads} torch thread(s), {os.cpu_count()} cores; load = "
             "1-minute load average before each model.", "",
             "| data set | model | train images | epochs run | best epoch | test accuracy | bar | passes | "
             "seconds | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        secs = "cached" if r["from_cache"] else f"{r['train_seconds']:.0f}"
        lines.append(f"| {r['dataset']} | {r['arch']} | {r['n_train']} | {r['epochs_run']} | {r['best_epoch']} | "
                     f"{r['test_accuracy']:.4f} | {r['bar']:.2f} | {'yes' if r['passes'] else 'NO'} | {secs} | "
                     f"{r['load_before']} |")
    (HERE / "converged_victims.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
