"""F11's transfer heads: the clean rows copied into every head against passed once.

Notebook 03's F11 (Poison Frogs, Shafahi et al. 2018, arXiv 1804.00792) fits one
logistic head per target on the frozen features of the 1,000 clean images + that
target's poisons, all 50 heads in one batched L-BFGS run (`fit_logistic_head`). Before,
the clean rows were copied into each head's features ([50, 1,005, d] float64 read on
every L-BFGS evaluation, forward and backward); now they are passed once
(`shared_features`, one [1,000, d] x [d, 50] product). This times both forms on the
quick profile's inputs (the seed's cached MLP victim, its target and base classes,
targets and 5 poisons per target crafted once, outside the clock), interleaved (ABBA),
one torch thread, and checks that they decide every target alike.

    PYTHONPATH=lib python benchmarks/logistic_head.py --seed 5 --repeats 4

Prints a markdown row (paste into PROFILING.md). Not a test: the ratio is what counts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from threatlab import data, ensemble, models, runtime
from threatlab.attacks import poisoning
from threatlab.protocols import poisoning as pp


def inputs(seed: int, dataset: str):
    """F11's features as `frogs_experiment` builds them for the 5-poison row."""
    x_all, y_all = data.load(dataset, "train", n=11_500)
    x_train, y_train = x_all[:10_000], y_all[:10_000]
    x_pool, y_pool = x_all[10_000:11_000], y_all[10_000:11_000]
    x_test, y_test = data.load(dataset, "test")
    (clean,), _ = ensemble.cached_many("mlp", f"{dataset}-poison", [(x_train, y_train)], seed=seed,
                                        num_classes=10, stacked=True, holdout=1000)
    clean.eval()
    g = torch.Generator().manual_seed(seed + 3)   # the notebook's F11 seed
    with torch.no_grad():
        feats = clean.features(x_train).flatten(1)
        pred = models.predict(clean, x_test)
    tc = sorted(set(y_train.tolist()))[int(runtime.randint(0, 10, (1,), g))]
    bc = poisoning.nearest_class(feats, y_train, tc)
    order = runtime.randperm(y_train.shape[0], g)
    rows = torch.cat([order[y_train[order] == tc][:500], order[y_train[order] == bc][:500]])
    ok = ((y_test == tc) & (pred == y_test)).nonzero().squeeze(1)
    x_tgt = x_test[ok[runtime.randperm(ok.numel(), g)[:50]]]
    res, _ = pp.craft_frogs(clean, x_tgt, x_pool[y_pool == bc], base_class=bc, n_poisons=5, steps=1000,
                            rel_tol=0.01)
    with torch.no_grad():
        f_clean = clean.features(x_train[rows]).flatten(1)
        f_poison = clean.features(res.x_poison).flatten(1).view(50, 5, -1)
        f_target = clean.features(x_tgt).flatten(1)
    return f_clean, (y_train[rows] == bc).long(), f_poison, f_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--repeats", type=int, default=4)
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    torch.set_num_threads(1)
    f_clean, yb, f_poison, f_target = inputs(a.seed, a.dataset)
    t, k = f_poison.shape[:2]
    ones = torch.ones(t, k, dtype=torch.long)

    def copied():
        return pp.fit_logistic_head(torch.cat([f_clean.expand(t, *f_clean.shape), f_poison], 1),
                                    torch.cat([yb.expand(t, -1), ones], 1))

    def shared():
        return pp.fit_logistic_head(f_poison, ones, shared_features=f_clean, shared_labels=yb)

    runs, heads, loads = {"copied": [], "shared": []}, {}, []
    for fn in (copied, shared):   # warm-up
        fn()
    for r in range(a.repeats):
        for name in (("copied", "shared") if r % 2 == 0 else ("shared", "copied")):
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            heads[name] = (copied if name == "copied" else shared)()
            runs[name].append(time.perf_counter() - t0)
            print(f"repeat {r} {name}: {runs[name][-1]:.2f} s (load {loads[-1]:.1f})", flush=True)
    dec = {n: (h.logits(f_target.unsqueeze(1))[:, 0] > 0) for n, h in heads.items()}
    c, s = statistics.median(runs["copied"]), statistics.median(runs["shared"])
    print(f"| F11 heads ({a.dataset}, seed {a.seed}) | {t} x ({f_clean.shape[0]} + {k}) rows, d = {f_clean.shape[1]} "
          f"| {c:.2f} | {s:.2f} | **{s / c:.2f}** | {heads['copied'].iterations} / {heads['shared'].iterations} "
          f"| {float((heads['copied'].weight - heads['shared'].weight).abs().max()):.1e} "
          f"| {int((dec['copied'] == dec['shared']).sum())} of {t} | {min(loads):.1f}-{max(loads):.1f} |")


if __name__ == "__main__":
    main()
