"""Stacked against sequential training of notebook 03's victims (rule G1, early stopping).

`python benchmarks/poisoning_stacked.py [--arch mlp] [--models 4] [--n 10000]`: M poisoned
copies of the first n MNIST training images (random label flips, one draw each), trained
(a) one after another with `models.train_early_stopping` and (b) at once with
`ensemble.train_ensemble_early_stopping`; prints wall seconds of each, their ratio, the
1-minute load before each, and the largest parameter difference. Writes nothing to the
model cache. Not a test: timings depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from threatlab import data, ensemble, models
from threatlab.attacks import poisoning


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, y = data.load("mnist", "train", n=a.n)
    sets = []
    for m in range(a.models):
        ps = poisoning.random_flip(x, y, budget=poisoning.label_budget(a.n, 0.02 * (m + 1)), num_classes=10,
                                   generator=torch.Generator().manual_seed(m))
        sets.append((ps.x, ps.y))
    load_seq = os.getloadavg()[0]
    t0 = time.perf_counter()
    seq = []
    for xs, ys in sets:
        net = models.build(a.arch, seed=0)
        models.train_early_stopping(net, xs, ys, seed=0, progress=False)
        seq.append(net)
    t_seq = time.perf_counter() - t0
    load_st = os.getloadavg()[0]
    t0 = time.perf_counter()
    st, _ = ensemble.train_ensemble_early_stopping(a.arch, sets, seed=0, progress=False)
    t_st = time.perf_counter() - t0
    diff = max(float((p - q).abs().max()) for s, t in zip(seq, st)
               for p, q in zip(s.state_dict().values(), t.state_dict().values()))
    print(f"{a.arch} x {a.models} on {a.n} images, {a.threads} thread(s): sequential {t_seq:.1f} s (load {load_seq:.1f}), "
          f"stacked {t_st:.1f} s (load {load_st:.1f}), stacked / sequential {t_st / t_seq:.2f}; "
          f"max |param difference| {diff:.2e}")


if __name__ == "__main__":
    main()
