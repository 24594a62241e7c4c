"""Below the eager bound? torch.compile, channels-last and inference_mode on the PGD step.

    PYTHONPATH=lib python benchmarks/compile_bench.py                 # n = 100 and 500 -> compile.json
    PYTHONPATH=lib python benchmarks/compile_bench.py --n 100 --repeats 5

One PGD-L-inf step is: forward, backward to the input (summed cross-entropy), a
sign step, the projection onto the eps-ball and [0, 1]. The benchmark's bound
(results.md) is one eager forward + backward. Variants, each over the same batch
(notebook 04's MNIST CNN, the first n correctly classified test images moved to a
random point of the eps = 0.1 ball, threatlab's CPU chunks of <= 128 rows):

- eager_step: the kernel's step as `attacks.adversarial` runs it today;
- compiled_model: `torch.compile(model)` (forward and backward through AOTAutograd /
  Inductor's C++ backend), projection eager;
- compiled_step: the whole step compiled (``torch.func.grad`` inside `torch.compile`);
- compiled_projection: only sign step + projection compiled (one fused loop);
- channels_last: model and inputs in channels-last memory, eager.

And for the no-graph forward that evaluates success: `torch.no_grad` vs
`torch.inference_mode`. Protocol: every variant is compiled and run once (compile time
reported apart), then `repeats` rounds of `steps` steps each, variants interleaved in
rotating order; the median ms per step is reported with its ratio to the bound measured
in the same rounds. Each variant's adversarials after `steps` steps are compared with
the eager ones (largest absolute difference, fraction of pixels that differ by more
than 1e-6, and the model's accuracy on them). Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import copy
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
import torch.nn.functional as F  # noqa: E402

from threatlab import data, models, runtime  # noqa: E402
from threatlab.io import atomic_write  # noqa: E402
from threatlab.protocols import evasion  # noqa: E402

START, END = "<!-- compile:start -->", "<!-- compile:end -->"
EPS = 0.1


def _project(x_adv, x0, grad, alpha):
    delta = torch.clamp(x_adv + alpha * grad.sign() - x0, -EPS, EPS)
    return torch.clamp(x0 + delta, 0.0, 1.0)


def _grad(model, x_adv, y):
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
    return g


def make_variants(model, alpha):
    cmodel = torch.compile(model)
    cproj = torch.compile(_project)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)  # same numbers, other layout

    def loss_of(xa, y):
        return F.cross_entropy(model(xa), y, reduction="sum")

    gfun = torch.func.grad(loss_of)

    @torch.compile
    def whole(xa, x0, y):
        return _project(xa, x0, gfun(xa, y), alpha)

    return {
        "bound": lambda xa, x0, y: _grad(model, xa, y),
        "eager_step": lambda xa, x0, y: _project(xa, x0, _grad(model, xa, y), alpha),
        "compiled_model": lambda xa, x0, y: _project(xa, x0, _grad(cmodel, xa, y), alpha),
        "compiled_step": lambda xa, x0, y: whole(xa, x0, y),
        "compiled_projection": lambda xa, x0, y: cproj(xa, x0, _grad(model, xa, y), alpha),
        "channels_last": lambda xa, x0, y: _project(
            xa, x0, _grad(model_cl, xa.contiguous(memory_format=torch.channels_last), y), alpha),
    }


def run_n(model, x, y, n, steps, repeats, device):
    x, y = x[:n], y[:n]
    gen = torch.Generator().manual_seed(0)
    start = torch.clamp(x + (2 * torch.rand(x.shape, generator=gen) - 1).to(device) * EPS, 0, 1)
    alpha = 2.5 * EPS / 40
    chunks = runtime.row_slices(n, device)
    variants = make_variants(model, alpha)

    def walk(fn):
        outs = []
        for rows in chunks:
            xa, x0, yy = start[rows], x[rows], y[rows]
            for _ in range(steps):
                out = fn(xa, x0, yy)
                if fn is not variants["bound"]:  # the bound only differentiates, it does not step
                    xa = out
            outs.append(xa.detach())
        return torch.cat(outs)

    compile_s, finals = {}, {}
    for name, fn in variants.items():
        t0 = time.perf_counter()
        for rows in chunks:  # compile for every chunk shape (dynamic=False)
            fn(start[rows], x[rows], y[rows])
        compile_s[name] = time.perf_counter() - t0
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = walk(variants[name])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / steps)
            finals[name] = out
    bound = statistics.median(times["bound"])
    ref = finals["eager_step"]
    rows = []
    for name in names:
        med = statistics.median(times[name])
        row = {"variant": name, "ms_per_step": 1e3 * med, "min_ms": 1e3 * min(times[name]),
               "x_bound": med / bound, "first_call_s": compile_s[name]}
        if name != "bound":
            out = finals[name]
            with torch.no_grad():
                acc = float((torch.cat([model(out[s]).argmax(1) for s in chunks]) == y).float().mean())
            row.update(max_abs_diff=float((out - ref).abs().max()),
                       pixels_differ=float(((out - ref).abs() > 1e-6).float().mean()), robust_acc=acc)
        rows.append(row)
    # The evaluation forward: no_grad vs inference_mode.
    ev = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}
    ev_t = {k: [] for k in ev}
    for _ in range(max(3, repeats)):
        for k, ctx in ev.items():
            t0 = time.perf_counter()
            with ctx():
                torch.cat([model(x[s]).argmax(1) for s in chunks])
            ev_t[k].append(time.perf_counter() - t0)
    return {"n": n, "steps": steps, "repeats": repeats, "chunks": len(chunks), "rows": rows,
            "eval_forward_ms": {k: 1e3 * statistics.median(v) for k, v in ev_t.items()},
            "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg())}


def section(doc) -> str:
    run = doc["run"]
    L = [START, "## PGD step below the eager bound? torch.compile, channels-last, inference_mode (issue 22)", "",
         f"`{run['command']}` on {run['date_utc']} UTC; device {run['device']}, {run['threads']} torch thread(s), "
         f"torch {run['torch']}, compiler {run['cxx']}, git {run['git'][:10]}, load average before "
         f"{run['load_before']}. One PGD-L∞ step (eps 0.1) on notebook 04's CNN in threatlab's CPU row "
         "chunks; bound = one eager forward + input-gradient backward in the same rounds; medians over "
         "interleaved rounds. Adversarials after the timed steps compared with the eager step's. "
         "Script and variants: [compile_bench.py](compile_bench.py); reading: "
         "[PROFILING.md](PROFILING.md#pgd-step-torchcompile-channels-last-inference_mode).", ""]
    for res in doc["results"]:
        L += [f"n = {res['n']} ({res['chunks']} chunk(s)), {res['steps']} steps x {res['repeats']} rounds; "
              f"evaluation forward: no_grad {res['eval_forward_ms']['no_grad']:.1f} ms, inference_mode "
              f"{res['eval_forward_ms']['inference_mode']:.1f} ms; load after {res['load_after']}.", "",
              "| variant | ms / step, median (min) | x bound | first call s (compile) | max abs diff vs eager "
              "| pixels differing | robust acc |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in res["rows"]:
            extra = ("| – | – | – |" if r["variant"] == "bound" else
                     f"| {r['max_abs_diff']:.1e} | {100 * r['pixels_differ']:.2f} % | {r['robust_acc']:.3f} |")
            L.append(f"| {r['variant']} | {r['ms_per_step']:.1f} ({r['min_ms']:.1f}) | {r['x_bound']:.2f} "
                     f"| {r['first_call_s']:.1f} " + extra)
        L.append("")
    L.append(END)
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="100,500")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(HERE / "compile.json"))
    p.add_argument("--results-md", default=str(HERE / "results.md"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    x_train, y_train = data.load("mnist", "train", n=20000)
    x_test, y_test = data.load("mnist", "test")
    model, _ = models.cached("cnn", "mnist", x_train, y_train, train_params=dict(epochs=2, batch_size=128, lr=1e-3),
                             seed=0, in_shape=(1, 28, 28), num_classes=10, progress=False)
    model = model.to(device).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    ns = [int(s) for s in a.n.split(",") if s.strip()]
    x, y = evasion.correctly_classified(model, x_test.to(device), y_test.to(device), max(ns))
    results = []
    for n in ns:
        res = run_n(model, x, y, n, a.steps, a.repeats, device)
        for r in res["rows"]:
            print(f"n={n} {r['variant']:20s} {r['ms_per_step']:8.1f} ms/step  x bound {r['x_bound']:.2f}  "
                  f"first call {r['first_call_s']:.1f} s  diff {r.get('max_abs_diff', 0):.1e}", flush=True)
        print(f"n={n} eval forward {res['eval_forward_ms']}", flush=True)
        results.append(res)
    import shutil

    from ensemble_bench import update_results_md
    from threatlab.report.results import git_sha
    run = {"command": " ".join(["python benchmarks/compile_bench.py", *(argv if argv is not None else sys.argv[1:])]),
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "device": str(device),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "git": git_sha() or "unknown",
           "cxx": shutil.which("g++") or shutil.which("cc") or "none", "load_before": load_before}
    doc = {"run": run, "results": results}
    atomic_write(Path(a.out), json.dumps(doc, indent=1) + "\n")
    if a.results_md:
        update_results_md(Path(a.results_md), section(doc), START, END)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
