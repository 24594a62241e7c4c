"""Stacked against sequential training of notebook 03's victims (rule G1, early stopping).

Two cases, as notebook 03 trains them (n = 10,000 training images, holdout 1,000):

* ``victims``: F09's label-flip victims, the MLP on M poisoned copies (random flips of
  2 %, 5 %, 10 %, ... of the labels, one draw each);
* ``retrain``: F12's retrainings, LeNet-5 on M BadNets-poisoned sets (rate 1 %, source 7,
  target 0, one poison draw each; the filter's removals are not applied, which keeps
  every set the same size as the notebook's filtered sets are);
* ``substitutes``: notebook 01's F02, the MLP substitutes of the three output modes
  (probs, rounded, label) at each of the eight query budgets 25-3,200, as the notebook
  fits them (`protocols.extraction.mode_curves`, its default settings, the seed-0 CNN
  victim from the model cache), one mode after another against all three at once.

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
    PYTHONPATH=lib python benchmarks/stacked_training.py --case substitutes --repeats 4

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
ARCH = {"victims": "mlp", "retrain": "lenet5", "substitutes": "mlp"}


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


def substitutes(a: argparse.Namespace) -> dict:
    """The ``substitutes`` case: F02's mode curves fitted sequentially and stacked (ABBA)."""
    from threatlab.protocols import extraction as px
    from threatlab.attacks import extraction as ex
    from threatlab.oracle import BlackBox

    budgets = [25, 50, 100, 200, 400, 800, 1600, 3200]        # notebook 01's defaults
    task = px.attacker_data(a.dataset, n_train=a.n, n_pool=10_000, n_eval=2_000, stream_length=budgets[-1],
                            calibration_clients=4, benign_clients=2, budgets=budgets, device=torch.device("cpu"))
    victims, _ = px.train_victims(task, victim_arch="cnn", mlp_hidden=128, seed=0, device=torch.device("cpu"),
                                  progress=False)
    victim = victims["victim"]
    labels = ex.victim_labels(BlackBox(victim, mode="label"), task.x_eval)
    sub_kw = dict(arch="mlp", arch_params={"hidden": [128]}, max_epochs=100, patience=10, min_steps=300)
    runs, loads, got = {"sequential": [], "stacked": []}, [], {}
    for r in range(a.repeats):
        for mode in (("sequential", "stacked") if r % 2 == 0 else ("stacked", "sequential")):
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            got[mode] = px.mode_curves(victim, task.pool, budgets, eval_x=task.x_eval, eval_labels=labels,
                                       decimals=2, seed=10, sub_kw=sub_kw, stacked=mode == "stacked")[0]
            runs[mode].append(time.perf_counter() - t0)
            print(f"repeat {r} {mode}: {runs[mode][-1]:.1f} s (load {loads[-1]:.1f})", flush=True)
    seq_c, st_c = got["sequential"], got["stacked"]
    diff = max(float((p - q).abs().max()) for m in seq_c for s, t in zip(seq_c[m].substitutes, st_c[m].substitutes)
               for p, q in zip(s.state_dict().values(), t.state_dict().values()))
    with torch.no_grad():
        agree = [float((seq_c[m].substitutes[-1](task.x_eval).argmax(1)
                        == st_c[m].substitutes[-1](task.x_eval).argmax(1)).float().mean()) for m in seq_c]
    seq, st = statistics.median(runs["sequential"]), statistics.median(runs["stacked"])
    print(f"F02 substitutes: sequential {seq:.1f} s, stacked {st:.1f} s, stacked / sequential {st / seq:.2f}; "
          f"epochs equal: {all(seq_c[m].epochs == st_c[m].epochs for m in seq_c)}")
    return {"case": a.case, "arch": "mlp", "dataset": a.dataset, "models": 3 * len(budgets), "n": budgets[-1],
            "threads": a.threads, "repeats": a.repeats, "sequential_s": runs["sequential"], "stacked_s": runs["stacked"],
            "ratio": st / seq, "load_1min": loads, "max_param_diff": diff,
            "best_epoch": {"sequential": {m: c.epochs for m, c in seq_c.items()},
                           "stacked": {m: c.epochs for m, c in st_c.items()}},
            "test_acc": {"sequential": [c.agreement[-1] for c in seq_c.values()],
                         "stacked": [c.agreement[-1] for c in st_c.values()]},
            "label_agreement": agree,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs",
            "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


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
    if a.case == "substitutes":
        row = substitutes(a)
        write(row)
        return
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
    write(row)


def _epochs(x: dict) -> str:
    seq, st = x.get("best_epoch", {}).get("sequential", "–"), x.get("best_epoch", {}).get("stacked", "–")
    if isinstance(seq, dict):  # substitutes: epochs of every fit, by mode
        pairs = [(a, b) for m in seq for a, b in zip(seq[m], st[m])]
        same = sum(a == b for a, b in pairs)
        return f"same in {same} of {len(pairs)} fits"
    return f"{seq} / {st}"


def write(row: dict) -> None:
    """Add `row` to stacked_training.json (one per case and data set) and rewrite the table."""
    path = HERE / "stacked_training.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [x for x in rows if (x["case"], x["dataset"]) != (row["case"], row["dataset"])] + [row]
    path.write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# Stacked against sequential training (notebooks 01 and 03)", "",
             "Written by `benchmarks/stacked_training.py`; medians over interleaved (ABBA) repeats, one torch "
             "thread. Not a test: the ratio is what counts, both paths ran under the same load. The "
             "`substitutes` row (notebook 01, F02) fits 3 output modes x 8 budgets: n is its largest query "
             "set, its accuracy column is the substitutes' agreement with the victim at that budget and its "
             "labels column compares the two paths' largest substitutes.", "",
             "| case | model x M | n | sequential s | stacked s | stacked / sequential | load (1 min) | max param diff "
             "| best epochs seq / stacked | test acc seq / stacked (min) | labels alike (min) | date |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for x in rows:
        lines.append(f"| {x['case']} ({x['dataset']}) | {x['arch']} x {x['models']} | {x['n']} | "
                     f"{statistics.median(x['sequential_s']):.1f} | {statistics.median(x['stacked_s']):.1f} | "
                     f"**{x['ratio']:.2f}** | {min(x['load_1min']):.1f}-{max(x['load_1min']):.1f} | "
                     f"{x['max_param_diff']:.1e} | {_epochs(x)} | "
                     + (f"{min(x['test_acc']['sequential']):.4f} / {min(x['test_acc']['stacked']):.4f} | "
                        f"{min(x['label_agreement']):.4f}" if "test_acc" in x else "– | –")
                     + f" | {x['date_utc']} |")
    (HERE / "stacked_training.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
