"""results.md: machine, versions, every setting, the table, and the targets checked."""
from __future__ import annotations

import math
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from peers import version
from threatlab.report.results import git_sha

#: The issue's targets: agreement within 2 points, threatlab no slower than the fastest
#: peer, PGD within 1.15x of steps x (forward + backward).
AGREE_PTS, PEER_RATIO, PGD_BOUND = 2.0, 1.0, 1.15


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.system()} {platform.machine()}, {_cpu_model()}, {os.cpu_count()} logical CPUs",
        "load_average_at_end": " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(),
        "git": git_sha(),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
    }
    for label, mod in (("threatlab", "threatlab"), ("torchattacks", "torchattacks"),
                       ("adversarial-robustness-toolbox", "art"), ("foolbox", "foolbox"),
                       ("eagerpy", "eagerpy")):
        env[label] = version(mod)
    return env


def _f(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, fmt)


def _time(t: dict[str, float]) -> str:
    return f"{t['median']:.3f} ({t['min']:.3f}–{t['max']:.3f})"


def _rounds(row) -> str:
    vals = row.get("robust_acc_per_round") or row.get("auc_per_round")
    if not vals:
        return "–"
    return " ".join(f"{v:.3f}" for v in vals) if len(set(vals)) > 1 else f"{vals[0]:.3f} (all)"


def _model_line(m: dict[str, Any], run: dict[str, Any]) -> str:
    """The attacked model, as run.py recorded it (threatlab's SmallCNN, or the
    third-party LeNet-5 of benchmarks/third_party.py, trained here or advertorch's)."""
    if m["arch"] == "cnn":
        what = "threatlab `cnn` on MNIST (notebook 04's)"
    elif m.get("weights") != "trained here":
        return (f"advertorch 0.2.3's MNIST LeNet-5 as its authors wrote it (`.view` flatten, "
                f"benchmarks/third_party.py: threatlab's kernels fall back from their channels-last view) "
                f"with advertorch's weights {m['weights']} (sha256 {m['weights_sha256']}...)")
    else:
        what = ("advertorch 0.2.3's MNIST LeNet-5 architecture as its authors wrote it (`.view` flatten, "
                "benchmarks/third_party.py: threatlab's kernels fall back from their channels-last view)")
    return (f"{what}, trained with epochs={m['epochs']}, batch_size={m['batch_size']}, lr={m['lr']} "
            f"on the first {m['n_train']} training images, seed {run['seed']} (checkpoint {m['checkpoint_key']})")


def markdown(run: dict[str, Any], results: list[dict[str, Any]]) -> str:
    env = run["environment"]
    L: list[str] = []
    L += ["# Benchmarks: threatlab vs torchattacks, ART, foolbox", "",
          "Written by `" + run.get("command", "python benchmarks/run.py" + (" --quick" if run["quick"] else "")) + "` "
          f"on {env['date_utc']} UTC. Regenerate with `make bench`. Benchmarks are not tests: "
          "nothing here is asserted by `make test`. Why each kernel is as fast as it is, what was "
          "changed after profiling, and how to read the misses: [PROFILING.md](PROFILING.md).", ""]
    if run["quick"]:
        L += ["> **Quick run** (small n, few repeats): a check that the harness works, not the "
              "numbers to quote.", ""]
    L += ["## Machine and versions", "", "| | |", "| --- | --- |"]
    L += [f"| {k} | {v} |" for k, v in env.items()]
    m = run["model"]
    L += ["", "## Protocol", "",
          f"- Model: {_model_line(m, run)}; clean test accuracy "
          f"{run['clean_test_accuracy']:.4f}. Parameters frozen (`requires_grad=False`) for every library.",
          f"- Inputs: the first n = {run['n']} correctly classified MNIST test images, the same tensor for "
          "every library, in [0, 1]; " + ("normalization is inside the model." if m["arch"] == "cnn" else
                                         "the model takes them as they are (no normalization)."),
          "- Robust accuracy = fraction of those n still classified correctly by the same model on the "
          "adversarials each library returned (no library's own success flag is read). Median L2 / "
          "L-inf over the fooled examples only. `valid` checks the output lies in [0, 1] and inside "
          "the eps-ball (relative slack 1e-4).",
          "- Row chunks: " + (f"threatlab sends at most {run['row_chunk']} rows through the model at "
          "once on a CPU (`threatlab.runtime.row_chunk`; results are the same bits for any chunking, "
          "tested); ART gets the same `batch_size`; torchattacks and foolbox have no such setting and "
          "forward the whole batch. The bound is the faster of one pass over all rows and one in "
          "chunks." if run.get("row_chunk") else "none on this device: every library forwards the "
          "whole batch."),
          "- Forward rows / example (white-box attacks): rows the model forwarded during one call, over n, "
          "counted by one wrapper module that every library's model goes through (threatlab's too): "
          "forward passes per example, so early stops and extra evaluations show. Black-box queries "
          "are counted in their own table.",
          f"- Seeds: round r of the {run['repeats']} timed rounds re-seeds every random source (torch, "
          f"NumPy, random; threatlab's Generator) with {run['seed']} + r before each call, the same for "
          "every library, so attacks with a random start are compared over several draws. Every "
          "metric is the mean over the rounds; `robust acc per round` shows the spread.",
          f"- Time: one warm-up call, then {run['repeats']} timed calls per library, interleaved across "
          "libraries (the order rotates each round); the device is synchronized before each clock "
          "read. Shown as median (min–max) seconds for the whole batch. ART's NumPy conversions count "
          "in its time, as for its users.",
          "- Bound: grad_evals x the median time of one forward + backward (input gradient of the summed "
          "cross-entropy) on the same batch as the attack's iterations see it (the clean images moved "
          "to a random point of the case's ball; L2 radius 1.5 for minimal-perturbation attacks; "
          "FGSM's one gradient is at the clean images), "
          "measured 5 times per round in the same rounds. `x bound` = time / bound. The channels-last "
          "bound times the same pass through threatlab's channels-last view of the model "
          "(`threatlab.attacks.layout`, what its white-box kernels run on; peers get the model as it is). "
          "On clean MNIST "
          "the pass is cheaper (blank backgrounds: the last column under Targets), which no "
          "iterate after the first enjoys; both are in results.json.",
          "- Same images as threatlab: the share of the n examples for which the peer, called with "
          "the same seed in the same round, returned threatlab's adversarial in every pixel (compared "
          "as float32; mean over the rounds). Two correct implementations need not agree to the bit "
          "(other random draws, other summation order), so this says how alike, not which is right.",
          f"- Targets (from the issue): |Δ robust acc| <= {AGREE_PTS:g} points vs each peer; threatlab / "
          f"fastest peer <= {PEER_RATIO:g} on CPU; PGD <= {PGD_BOUND:g} x bound.",
          f"- torch threads: {run['threads']}; device {run['device']}; total benchmark wall time "
          f"{run['wall_s']:.0f} s.", ""]

    L += ["## Results", "",
          "| attack | library | robust acc | Δ pts (threatlab − peer) | median L2 | median L-inf "
          "| valid | forward rows / example | time s, median (min–max) | x bound | threatlab / fastest peer "
          "| robust acc (MI: AUC) per round | same images as threatlab |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for lib, row in r["rows"].items():
            ratio = (f"**{row['ratio_to_fastest_peer']:.2f}** (vs {row['fastest_peer']})"
                     if "ratio_to_fastest_peer" in row else "")
            L.append(f"| {r['case']} | {lib} | {_f(row.get('robust_acc'), '.3f')} | "
                     f"{_f(row.get('delta_robust_acc_pts'), '+.1f')} | {_f(row.get('median_l2'), '.3f')} | "
                     f"{_f(row.get('median_linf'), '.3f')} | {row.get('valid', '–')} | "
                     f"{_f(row.get('forward_rows_per_example'), '.1f')} | {_time(row['time'])} | "
                     f"{_f(row.get('ratio_to_bound'), '.2f')} | {ratio} | {_rounds(row)} | "
                     f"{_f(row.get('identical_to_threatlab'), '.0%')} |")
        for lib, why in r["skipped"].items():
            L.append(f"| {r['case']} | {lib} | not run: {why} | | | | | | | | | | |")
    bb = [(r, lib, row) for r in results if r["threat"] != "membership" for lib, row in r["rows"].items()
          if "queries_per_example" in row]
    if bb:
        L += ["", "Black-box attacks: queries per example = model rows forwarded during the call / n "
              "(threatlab: its `BlackBox` oracle's counter; peers: a counting wrapper module around the "
              "model), so every library is counted the same way; median over examples where the oracle "
              "counts per example (threatlab). Median L2 over the fooled examples.", "",
              "| attack | library | robust acc | median L2 | median L-inf | queries / example | "
              "median queries (per-example counter) | time s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        L += [f"| {r['case']} | {lib} | {_f(row.get('robust_acc'), '.3f')} | {_f(row.get('median_l2'), '.3f')} | "
              f"{_f(row.get('median_linf'), '.3f')} | {row['queries_per_example']:.1f} | "
              f"{_f(row.get('median_queries'), '.0f')} | {row['time']['median']:.3f} |" for r, lib, row in bb]
    mi = [(r, lib, row) for r in results if r["threat"] == "membership" for lib, row in r["rows"].items()]
    if mi:
        L += ["", "Membership inference: AUC and threshold-optimal balanced accuracy over the pool "
              "(members = the target's training half), both from threatlab.metrics on each library's "
              "scores; queries = target rows forwarded / pool size.", "",
              "| attack | library | AUC | Δ AUC pts (threatlab − peer) | balanced acc | TPR @ 1% FPR | "
              "queries / example | time s, median (min–max) | threatlab / fastest peer |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r, lib, row in mi:
            ratio = (f"**{row['ratio_to_fastest_peer']:.2f}** (vs {row['fastest_peer']})"
                     if "ratio_to_fastest_peer" in row else "")
            L.append(f"| {r['case']} | {lib} | {row['auc']:.3f} | {_f(row.get('delta_auc_pts'), '+.1f')} | "
                     f"{row['balanced_acc']:.3f} | {row['tpr_at_1%']:.3f} | "
                     f"{_f(row.get('queries_per_example'), '.1f')} | {_time(row['time'])} | {ratio} |")

    diag = [(r, lib, row) for r in results for lib, row in r["rows"].items() if "edge_pixels_moved" in row]
    if diag:
        L += ["", "Diagnostics (minimal-perturbation attacks): share of input pixels at exactly 0 or 1 "
              "that the attack moved, and the median logit margin (y minus best other) of the "
              "examples it did not fool (~0: stalled on the boundary).", "",
              "Blank outputs: examples returned as an all-zero image (not an attack result; foolbox's "
              "C&W does this for examples it never fooled), and the robust accuracy counting them as "
              "failures.", "",
              "| attack | library | edge pixels moved | unfooled median margin | blank outputs "
              "| robust acc, blank = failed |", "| --- | --- | --- | --- | --- | --- |"]
        L += [f"| {r['case']} | {lib} | {_f(row['edge_pixels_moved'], '.3f')} | "
              f"{_f(row['unfooled_median_margin'], '.3g')} | {_f(row['blank_outputs'], '.3g')} | "
              f"{_f(row['robust_acc_blank_as_failed'], '.3f')} |" for r, lib, row in diag]

    L += ["", "## Targets", "", "Agreement is robust accuracy for evasion attacks and AUC for membership "
          "inference.", "", "| attack | agreement (max |Δ| pts) | threatlab / fastest peer | "
          "threatlab x bound | threatlab x channels-last bound | fwd+bwd ms: bound's batch / clean batch / "
          "channels-last |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        tl = r["rows"].get("threatlab", {})
        key = "delta_auc_pts" if r["threat"] == "membership" else "delta_robust_acc_pts"
        deltas = [abs(row[key]) for row in r["rows"].values() if key in row]
        agree = (f"{max(deltas):.1f} {'ok' if max(deltas) <= AGREE_PTS else 'MISSED'}" if deltas else "–")
        ratio = tl.get("ratio_to_fastest_peer")
        speed = f"{ratio:.2f} {'ok' if ratio <= PEER_RATIO else 'MISSED'}" if ratio is not None else "–"
        b = tl.get("ratio_to_bound")
        if b is None:
            bound = "–"
        elif r["case"].startswith("PGD"):
            bound = f"{b:.2f} {'ok' if b <= PGD_BOUND else 'MISSED'}"
        else:
            bound = f"{b:.2f}"
        fb = (f"{r['bound']['fwd_bwd_s'] * 1e3:.2f} / {r['bound']['fwd_bwd_clean_s'] * 1e3:.2f}"
              + (f" / {r['bound']['fwd_bwd_channels_last_s'] * 1e3:.2f}" if "fwd_bwd_channels_last_s" in r["bound"]
                 else "") if r["bound"] else "–")
        L.append(f"| {r['case']} | {agree} | {speed} | {bound} | "
                 f"{_f(tl.get('ratio_to_channels_last_bound'), '.2f')} | {fb} |")

    L += ["", "## Settings, written out per library", ""]
    for r in results:
        L += [f"### {r['case']}", "", f"n = {r['n']}. Shared: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items())
              + (f"; eps={r['eps']}" if r["eps"] is not None and "eps" not in r["settings"] else ""), ""]
        if r["bound"]:
            b = r["bound"]
            L.append(f"Bound: {b['grad_evals']} x {b['fwd_bwd_s'] * 1e3:.2f} ms = {b['bound_s']:.3f} s "
                     f"({b['batch']}; on the clean batch {b['grad_evals']} x "
                     f"{b['fwd_bwd_clean_s'] * 1e3:.2f} ms = {b['bound_clean_s']:.3f} s).")
            L.append("")
        L += [f"- {lib}: `{args}`" for lib, args in r["args"].items()]
        if r["note"]:
            L += ["", f"Note: {r['note']}"]
        L.append("")
    L += extra_sections()
    return "\n".join(L).rstrip() + "\n"


def extra_sections() -> list[str]:
    """The sections the issue-22 benchmarks keep in results.md (ensemble_bench.py,
    compile_bench.py), from their JSON beside this file, so a rerun of run.py keeps them."""
    import json
    from pathlib import Path

    here = Path(__file__).resolve().parent
    out: list[str] = []
    for stem, module in (("ensemble", "ensemble_bench"), ("compile", "compile_bench")):
        path = here / f"{stem}.json"
        if path.exists():
            mod = __import__(module)
            out += [mod.section(json.loads(path.read_text(encoding="utf-8"))), ""]
    return out
