"""Stacked against sequential training of notebook 03's victims (rule G1, early stopping).

Two cases, as notebook 03 trains them (n = 10,000 training images, holdout 1,000):

* ``victims``: F09's label-flip victims, the MLP on M poisoned copies (random flips of
  2 %, 5 %, 10 %, ... of the labels, one draw each);
* ``retrain``: F12's retrainings, LeNet-5 on M BadNets-poisoned sets (rate 1 %, source 7,
  target 0, one poison draw each; the filter's removals are not applied, which keeps
  every set the same size as the notebook's filtered sets are).

Each repeat trains the M models (a) one after another with `models.train_early_stopping`
and (b) at once with `ensemble.train_ensemble_early_stopping`; repeats alternate the
order (ABBA) so a change of load hits both. Reports the median wall seconds of each,
their ratio, the 1-minute load, and how far the two paths' models are apart: the largest
parameter difference, each path's best epochs, test accuracies, and the share of test
images both label alike. The stacked path sums in another order, so weights agree to
float tolerance per step only; over thousands of Adam steps they drift apart as any two
runs on two CPUs do, and a held-out loss tie can pick another best epoch: what must
agree is what the notebook measures (accuracy, labels). Writes nothing to the model cache. Not a test: timings depend on the machine and its load.

    PYTHONPATH=lib python benchmarks/stacked_training.py --case victims --models 6 --repeats 2
    PYTHONPATH=lib python benchmarks/stacked_training.py --case retrain --models 4 --repeats 1

Writes benchmarks/stacked_training.json (cases accumulate) and stacked_training.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from threatlab import data, ensemble, models
from threatlab.attacks import poisoning
from threatlab.protocols.poisoning import poison_draw_generator

HERE = Path(__file__).resolve().parent
ARCH = {"victims": "mlp", "retrain": "lenet5"}


def training_sets(case: str, dataset: str, n: int, m_count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The M poisoned training sets of one case (as notebook 03 builds them)."""
    x, y = data.load(dataset, "train", n=n)
    sets = []
    for m in range(m_count):
        if case == "victims":
            ps = poisoning.random_flip(x, y, budget=poisoning.label_budget(n, 0.02 * (m + 1)), num_classes=10,
                                       generator=torch.Generator().manual_seed(m))
        else:
            ps = poisoning.badnets(x, y, rate=0.01, target_class=0, source_class=7, trigger=poisoning.make_trigger(4),
                                   num_classes=10, generator=poison_draw_generator(0, m))
        sets.append((ps.x, ps.y))
    return sets


def sequential(arch: str, sets) -> tuple[list[torch.nn.Module], list[int]]:
    nets, best = [], []
    for xs, ys in sets:
        net = models.build(arch, seed=0)
        best.append(models.train_early_stopping(net, xs, ys, seed=0, progress=False)["best_epoch"])
        nets.append(net)
    return nets, best


def stacked(arch: str, sets) -> tuple[list[torch.nn.Module], list[int]]:
    nets, hist = ensemble.train_ensemble_early_stopping(arch, sets, seed=0, progress=False)
    return nets, [h["best_epoch"] for h in hist]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(ARCH), default="victims")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.models < 1 or a.repeats < 1 or a.threads < 1 or a.n <= 1000:
        ap.error("--models, --repeats and --threads must be >= 1 and --n > 1000 (the holdout)")
    torch.set_num_threads(a.threads)
    arch = ARCH[a.case]
    sets = training_sets(a.case, a.dataset, a.n, a.models)
    runs = {"sequential": [], "stacked": []}
    loads = []
    nets = {}
    for r in range(a.repeats):
        order = ("sequential", "stacked") if r % 2 == 0 else ("stacked", "sequential")
        for mode in order:
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            nets[mode] = (sequential if mode == "sequential" else stacked)(arch, sets)
            runs[mode].append(time.perf_counter() - t0)
            print(f"repeat {r} {mode}: {runs[mode][-1]:.1f} s (load {loads[-1]:.1f})", flush=True)
    (seq_nets, seq_best), (st_nets, st_best) = nets["sequential"], nets["stacked"]
    diff = max(float((p - q).abs().max()) for s, t in zip(seq_nets, st_nets)
               for p, q in zip(s.state_dict().values(), t.state_dict().values()))
    xt, yt = data.load(a.dataset, "test")
    with torch.no_grad():
        pred = {k: [torch.cat([m.eval()(xt[i:i + 2000]).argmax(1) for i in range(0, len(yt), 2000)]) for m in v[0]]
                for k, v in nets.items()}
    acc = {k: [float((p == yt).float().mean()) for p in v] for k, v in pred.items()}
    agree = [float((p == q).float().mean()) for p, q in zip(pred["sequential"], pred["stacked"])]
    seq, st = statistics.median(runs["sequential"]), statistics.median(runs["stacked"])
    row = {"case": a.case, "arch": arch, "dataset": a.dataset, "models": a.models, "n": a.n, "threads": a.threads,
           "repeats": a.repeats, "sequential_s": runs["sequential"], "stacked_s": runs["stacked"],
           "ratio": st / seq, "load_1min": loads, "max_param_diff": diff,
           "best_epoch": {"sequential": seq_best, "stacked": st_best}, "test_acc": acc, "label_agreement": agree,
           "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs",
           "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    print(f"{arch} x {a.models} on {a.n} images: sequential {seq:.1f} s, stacked {st:.1f} s, "
          f"stacked / sequential {st / seq:.2f}; max |param difference| {diff:.2e}; best epochs {seq_best} / "
          f"{st_best}; test accuracy {acc}; labels alike {agree}")
    path = HERE / "stacked_training.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [x for x in rows if (x["case"], x["dataset"]) != (a.case, a.dataset)] + [row]
    path.write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# Stacked against sequential training (notebook 03)", "",
             "Written by `benchmarks/stacked_training.py`; medians over interleaved (ABBA) repeats, one torch "
             "thread. Not a test: the ratio is what counts, both paths ran under the same load.", "",
             "| case | model x M | n | sequential s | stacked s | stacked / sequential | load (1 min) | max param diff "
             "| best epochs seq / stacked | test acc seq / stacked (min) | labels alike (min) | date |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for x in rows:
        lines.append(f"| {x['case']} ({x['dataset']}) | {x['arch']} x {x['models']} | {x['n']} | "
                     f"{statistics.median(x['sequential_s']):.1f} | {statistics.median(x['stacked_s']):.1f} | "
                     f"**{x['ratio']:.2f}** | {min(x['load_1min']):.1f}-{max(x['load_1min']):.1f} | "
                     f"{x['max_param_diff']:.1e} | {x.get('best_epoch', {}).get('sequential', '–')} / "
                     f"{x.get('best_epoch', {}).get('stacked', '–')} | "
                     + (f"{min(x['test_acc']['sequential']):.4f} / {min(x['test_acc']['stacked']):.4f} | "
                        f"{min(x['label_agreement']):.4f}" if "test_acc" in x else "– | –")
                     + f" | {x['date_utc']} |")
    (HERE / "stacked_training.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
