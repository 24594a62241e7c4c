"""Cross-check of notebook 04's worst-case robust accuracy (F18) against torchattacks.

F18 judges an adversarially trained model on the AutoAttack-style worst case
(`protocols.evasion.worst_case_robust`: APGD-CE, APGD-DLR, Square-L-inf; Croce & Hein
2020, arXiv 2003.01690): an image is robust only if every attack fails on it. This runs
the same three attacks of torchattacks 3.5.1 (`APGD(loss="ce")`, `APGD(loss="dlr")`,
`Square`) at the same budget (eps, APGD steps, Square queries and p_init, one restart) on
the same images and the same model, combines them per image the same way, and reports
both robust accuracies with Clopper-Pearson intervals, each attack's own robust accuracy,
and how often the two agree per image. The model is one nobody here trained: advertorch
0.2.3's adversarially trained MNIST LeNet-5 (its sdist's .pt, read weights-only;
benchmarks/third_party.py). Not a test: run by hand, peers installed as `make bench` does.

    PYTHONPATH=lib:<peers> python benchmarks/worst_case_peer.py \\
        --weights .../mnist_lenet5_advtrained.pt --n 200 --steps 100 --queries 1000

Writes benchmarks/worst_case_peer.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from third_party import load_advertorch  # noqa: E402  (benchmarks/ is not a package)

from threatlab import data  # noqa: E402
from threatlab.protocols.robustness import worst_case  # noqa: E402

HERE = Path(__file__).resolve().parent


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


@torch.no_grad()
def fooled(model, x_adv, y) -> torch.Tensor:
    return model(x_adv).argmax(1) != y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="advertorch's mnist_lenet5_advtrained.pt")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--p-init", type=float, default=0.05, help="Square's p_init (notebook 04's kernel default)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.n < 1 or a.steps < 1 or a.queries < 1 or not 0 < a.eps <= 1 or not 0 < a.p_init <= 1:
        ap.error("--n, --steps, --queries >= 1; --eps and --p-init in (0, 1]")
    import torchattacks  # the peer; imported here so --help works without it

    torch.set_num_threads(a.threads)
    model = load_advertorch(a.weights).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = data.load("mnist", "test", n=a.n)
    with torch.no_grad():
        correct = model(x).argmax(1) == y

    t0 = time.perf_counter()
    ours = worst_case(model, x, y, {"apgd_ce": ("apgd_ce", {"steps": a.steps}),
                                    "apgd_dlr": ("apgd_dlr", {"steps": a.steps}),
                                    "square_linf": ("square_linf", {"max_queries": a.queries, "p_init": a.p_init})},
                      eps=a.eps, norm="linf", seed=0, cascade=False)
    t_ours = time.perf_counter() - t0

    peer_attacks = {
        "apgd_ce": torchattacks.APGD(model, norm="Linf", eps=a.eps, steps=a.steps, n_restarts=1, loss="ce", seed=0),
        "apgd_dlr": torchattacks.APGD(model, norm="Linf", eps=a.eps, steps=a.steps, n_restarts=1, loss="dlr", seed=0),
        "square_linf": torchattacks.Square(model, norm="Linf", eps=a.eps, n_queries=a.queries, n_restarts=1,
                                           p_init=a.p_init, seed=0),
    }
    t0 = time.perf_counter()
    robust_peer = correct.clone()
    per_peer = {}
    for name, atk in peer_attacks.items():
        x_adv = atk(x, y)
        inside = ((x_adv - x).abs().amax(dim=(1, 2, 3)) <= a.eps * (1 + 1e-4)) & (x_adv >= 0).all(1).all(1).all(1) \
            & (x_adv <= 1).all(1).all(1).all(1)
        f = fooled(model, x_adv, y) & inside
        per_peer[name] = float((correct & ~f).float().mean())
        robust_peer &= ~f
    t_peer = time.perf_counter() - t0

    r_ours = ours["robust"]
    k_o, k_p = int(r_ours.sum()), int(robust_peer.sum())
    row = {"model": "advertorch LeNet-5, adversarially trained", "n": a.n, "eps": a.eps, "steps": a.steps,
           "square_queries": a.queries, "p_init": a.p_init, "clean_accuracy": float(correct.float().mean()),
           "threatlab": {"robust_accuracy": k_o / a.n, "ci": clopper_pearson(k_o, a.n), "per_attack": ours["per_attack"],
                         "seconds": t_ours},
           "torchattacks": {"robust_accuracy": k_p / a.n, "ci": clopper_pearson(k_p, a.n), "per_attack": per_peer,
                            "seconds": t_peer},
           "per_image_agreement": float((r_ours == robust_peer).float().mean()),
           "threatlab_robust_peer_not": int((r_ours & ~robust_peer).sum()),
           "peer_robust_threatlab_not": int((~r_ours & robust_peer).sum()),
           "load_1min_end": os.getloadavg()[0], "threads": a.threads, "torch": torch.__version__,
           "torchattacks_version": getattr(torchattacks, "__version__", "?"),
           "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    (HERE / "worst_case_peer.json").write_text(json.dumps(row, indent=1) + "\n")
    o, p = row["threatlab"], row["torchattacks"]
    lines = ["# Worst-case robust accuracy: threatlab against torchattacks (F18's evaluation)", "",
             f"`benchmarks/worst_case_peer.py`, {row['date_utc']} UTC; {row['model']} (advertorch 0.2.3's weights), "
             f"the first {a.n} MNIST test images, L-inf eps {a.eps}; APGD-CE and APGD-DLR {a.steps} steps, Square "
             f"{a.queries} queries with p_init {a.p_init}, one restart each, seed 0; an image is robust when it is "
             f"classified correctly and all three fail (adversarials outside the ball do not count). "
             f"Clean accuracy {row['clean_accuracy']:.3f}. {a.threads} thread(s), load {row['load_1min_end']:.1f} at the end.",
             "", "| | robust accuracy [95 % CP] | APGD-CE alone | APGD-DLR alone | Square alone | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in (("threatlab", o), (f"torchattacks {row['torchattacks_version']}", p)):
        pa = r["per_attack"]
        lines.append(f"| {name} | {r['robust_accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | "
                     f"{pa['apgd_ce']:.3f} | {pa['apgd_dlr']:.3f} | {pa['square_linf']:.3f} | {r['seconds']:.0f} |")
    lines += ["", f"Per image the two worst cases agree on {row['per_image_agreement']:.1%} of the {a.n} images "
                  f"(robust for threatlab only: {row['threatlab_robust_peer_not']}; for torchattacks only: "
                  f"{row['peer_robust_threatlab_not']})."]
    (HERE / "worst_case_peer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
