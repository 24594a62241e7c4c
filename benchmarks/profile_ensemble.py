"""torch.profiler tables of ensemble training against the same models trained one by one.

    PYTHONPATH=lib python benchmarks/profile_ensemble.py --arch mlp --models 16
    PYTHONPATH=lib python benchmarks/profile_ensemble.py --arch cnn --models 16 --steps 4

Profiles `steps` training steps of notebook 02's shadow setting (MNIST 28x28, each model
on 1000 rows, batch 64, Adam 1e-3; MLP hidden (128,), or SmallCNN) for both
`ensemble.train_ensemble` and `ensemble.train_sequential`, after one warm-up run of
each, and prints the operators sorted by self CPU time (markdown, for PROFILING.md).
The numbers are per `steps` steps of all models. Run it against another checkout's
threatlab with PYTHONPATH to profile that version. Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if (HERE.parent / "lib").is_dir() and not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(HERE.parent / "lib"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from threatlab import data, ensemble  # noqa: E402


def table(prof, rows: int) -> str:
    """The top `rows` operators by self CPU time as a markdown table."""
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev) or 1.0
    out = ["| operator | calls | self CPU ms | self % |", "| --- | --- | --- | --- |"]
    for e in ev[:rows]:
        out.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | "
                   f"{100 * e.self_cpu_time_total / total:.1f} |")
    out.append(f"| total | | {total / 1e3:.1f} | 100 |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--models", type=int, default=16)
    p.add_argument("--steps", type=int, default=8, help="training steps profiled (batch 64 each)")
    p.add_argument("--rows", type=int, default=12, help="operators shown")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ.setdefault("THREATLAB_NO_PROGRESS", "1")
    batch = 64
    x, y = data.load("mnist", "train", n=2000)
    mask = ensemble.half_splits(2000, a.models, generator=torch.Generator().manual_seed(0))
    rows = torch.stack([r.nonzero().squeeze(1) for r in mask])[:, : a.steps * batch]
    kw = dict(seeds=list(range(a.models)), epochs=1, batch_size=batch, lr=1e-3,
              arch_params={"hidden": (128,)} if a.arch == "mlp" else {})
    runs = {
        "ensemble": lambda: ensemble.train_ensemble(a.arch, x, y, rows, progress=False, **kw),
        "sequential": lambda: ensemble.train_sequential(a.arch, x, y, rows, **kw),
    }
    print(f"# {a.arch}, {a.models} models, {a.steps} steps of batch {batch}, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}")
    for name, fn in runs.items():
        fn()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(f"\n## {name}\n")
        print(table(prof, a.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
