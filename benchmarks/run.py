"""threatlab vs torchattacks, ART and foolbox: agreement and speed, side by side.

    python benchmarks/run.py            # the full table -> benchmarks/results.md
    python benchmarks/run.py --quick    # small n, 3 repeats: minutes, for checking
    python benchmarks/run.py --only PGD-Linf,FGSM --n 200 --repeats 5
    python benchmarks/run.py --only Square-Linf --libs threatlab,torchattacks --repeats 10 \
        --out benchmarks/square_seeds.md   # robust accuracy over seeds 0..9
    python benchmarks/run.py --model advertorch-lenet5 --quick --out /tmp/third_party.md
        # every case on a third-party model (benchmarks/third_party.py); add
        # --weights .../mnist_lenet5_clntrained.pt for advertorch's own weights

Same small MNIST CNN as notebooks/04_adversarial.ipynb (threatlab.models.cached, seed 0,
epochs=2, batch_size=128, lr=1e-3 on the first 20,000 training images), the same
correctly classified test examples for every library, identical hyper-parameters
(benchmarks/cases.py writes them out per library). ``--model advertorch-lenet5`` swaps
in advertorch's MNIST LeNet-5 as its authors wrote it (``.view`` flatten: threatlab's
kernels run it without their channels-last view), trained here with the same recipe
or loaded from advertorch's weights file (`third_party.py`). Benchmarks are not tests: nothing
here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if (HERE.parent / "lib").is_dir():  # run from a checkout without `pip install -e .`
    sys.path.insert(1, str(HERE.parent / "lib"))

import torch  # noqa: E402

import cases as case_table  # noqa: E402
import report  # noqa: E402
import third_party  # noqa: E402
from harness import run_case  # noqa: E402

from threatlab import data, models, runtime  # noqa: E402
from threatlab.protocols import evasion
from threatlab.io import atomic_write, sha256_file  # noqa: E402


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="n=50, 3 repeats (a check run)")
    p.add_argument("--n", type=int, default=None, help="examples attacked (default 500; --quick 50; C&W at most 50)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per library (default 5; --quick 3)")
    p.add_argument("--only", default="", help="comma-separated case names (default: all)")
    p.add_argument("--libs", default="", help="comma-separated libraries to run (default: all; threatlab, "
                   "torchattacks, ART, foolbox)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="cnn", choices=["cnn", third_party.NAME],
                   help="the attacked model: threatlab's SmallCNN (default) or advertorch's LeNet-5 "
                        "as its authors wrote it (benchmarks/third_party.py)")
    p.add_argument("--weights", default=None, help=f"with --model {third_party.NAME}: advertorch's "
                   "mnist_lenet5_*.pt to load (default: the architecture trained here, cached)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default=str(HERE / "results.md"), help="markdown report (a .json goes beside it)")
    a = p.parse_args(argv)
    a.n = a.n or (50 if a.quick else 500)
    a.repeats = a.repeats or (3 if a.quick else 5)
    if a.n < 1 or a.repeats < 1:
        p.error("--n and --repeats must be positive")
    if a.weights is not None and a.model != third_party.NAME:
        p.error(f"--weights goes with --model {third_party.NAME}")
    return a


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    os.environ.setdefault("THREATLAB_NO_PROGRESS", "1")

    # The model of notebook 04, from the shared checkpoint cache (trained once if absent).
    x_train, y_train = data.load("mnist", "train", n=20000)
    x_test, y_test = data.load("mnist", "test")
    train_params = dict(epochs=2, batch_size=128, lr=1e-3)
    if args.model == "cnn":
        model, info = models.cached("cnn", "mnist", x_train, y_train, train_params=train_params, seed=args.seed,
                                    in_shape=tuple(x_train.shape[1:]), num_classes=10, progress=False)
        model_record = {"arch": "cnn", "dataset": "mnist", "n_train": 20000, **train_params,
                        "checkpoint_key": info["key"][:20]}
    elif args.weights is None:  # the third-party architecture, trained here with the same recipe
        model, info = third_party.trained_here(x_train, y_train, train_params=train_params, seed=args.seed)
        model_record = {"arch": args.model, "weights": "trained here", "dataset": "mnist", "n_train": 20000,
                        **train_params, "checkpoint_key": info["key"][:20]}
    else:
        model = third_party.load_advertorch(args.weights)
        model_record = {"arch": args.model, "weights": Path(args.weights).name,
                        "weights_sha256": sha256_file(args.weights)[:20]}
    model = model.to(device).eval()
    for p in model.parameters():  # attacks need input gradients only
        p.requires_grad_(False)
    clean_acc = models.accuracy(model, x_test.to(device), y_test.to(device))
    x, y = evasion.correctly_classified(model, x_test.to(device), y_test.to(device), args.n)
    ctx = {"model": model, "x": x, "y": y, "device": device, "seed": args.seed, "row_chunk": runtime.row_chunk(device),
           "input_shape": tuple(x.shape[1:]), "num_classes": 10}

    table = case_table.cases(n=len(x), seed=args.seed, row_chunk=runtime.row_chunk(device))
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in {c.name for c in table}]
        if unknown:
            sys.exit(f"--only: unknown case(s) {unknown}; choose from {[c.name for c in table]}")
        table = [c for c in table if c.name in wanted]
    if args.libs:
        libs = {s.strip() for s in args.libs.split(",") if s.strip()}
        known = {lib for c in table for lib in c.impls}
        if libs - known:
            sys.exit(f"--libs: unknown {sorted(libs - known)}; choose from {sorted(known)}")
        for c in table:
            c.impls = {lib: impl for lib, impl in c.impls.items() if lib in libs}

    print(f"{len(x)} examples on {device}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    t0 = time.perf_counter()
    results = [run_case(c, ctx, repeats=args.repeats, seed=args.seed) for c in table]
    run = {"command": " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
           "n": len(x), "repeats": args.repeats, "seed": args.seed, "device": str(device),
           "threads": torch.get_num_threads(), "quick": args.quick, "row_chunk": runtime.row_chunk(device), "clean_test_accuracy": clean_acc,
           "model": model_record,
           "wall_s": time.perf_counter() - t0, "environment": report.environment(device)}
    out = Path(args.out)
    atomic_write(out.with_suffix(".json"), json.dumps({"run": run, "cases": results}, indent=1,
                                                      default=str) + "\n")
    atomic_write(out, report.markdown(run, results))
    print(f"wrote {out} and {out.with_suffix('.json')} ({run['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
