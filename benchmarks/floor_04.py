"""The least time notebook 04's fixed budgets can take on this CPU: a floor, not a profile.

Issue #31 asked a warm-cache notebook 04 (models loaded, not trained) to run in under
170-240 s. Register v3 fixed the budgets of its gradient attacks (F14: an eps grid with
FGSM and PGD-40 on 300 images, C&W-L2 at 1,000 Adam steps x 9 binary-search rounds on
60 images, the paper's budget; F13: a bisection of PGD on two models; F16-F18: PGD on
several models). Those kernels run a fixed number of forward + backward passes whatever
the model does, so their row count times the cheapest measured cost of one row is a
lower bound of the section's time that no implementation on this CPU can beat.

Adaptive kernels (the black-box attacks of F13 and F15, JSMA, DeepFool, APGD and Square
in F18's worst case) stop early and are left out: the floor counts fixed work only.

    PYTHONPATH=lib python benchmarks/floor_04.py [--profile quick] [--datasets mnist,fashion_mnist]

Prints a markdown table (used in benchmarks/PROFILING.md). One torch thread; the cost
per row is the *minimum* over repeats (the least-contended measurement) of the cheaper
of the model as it is and its channels-last view (`threatlab.attacks.layout`, what the
white-box kernels run on when the model allows it). A floor measured on a core another
job shares is too high, not too low: time it on a quiet core.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from threatlab import budgets, data, models, run
from threatlab.attacks import layout

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_adversarial.ipynb"


def parameters(profile: str, dataset: str) -> dict:
    """Notebook 04's parameters as `profile` runs them on `dataset` (defaults, then the
    profile's overrides), with the data set's budgets resolved (rule G2)."""
    p = run.notebook_parameters(NOTEBOOK)
    prof = run.load_profile(profile)
    p.update(prof.get("defaults") or {})
    p.update((prof.get("notebooks") or {}).get("04_adversarial") or {})
    p["dataset"] = dataset
    budgets.resolve_evasion(p)
    return p


def fixed_rows(p: dict) -> list[tuple[str, str, int]]:
    """[(section, what, forward + backward rows)] of the fixed-iteration kernels."""
    grid, transfer = p["budget"]["eps_grid"], p["budget"]["transfer_eps"]
    return [
        ("F13", f"min_linf: 2 models x {p['n_norms']} images x {p['minlinf_bisection']} bisection steps "
                f"x {p['minlinf_steps']} PGD steps",
         2 * p["n_norms"] * p["minlinf_bisection"] * p["minlinf_steps"]),
        ("F14", f"eps grid: {p['n_attack']} images x {len(grid)} budgets x (FGSM 1 + PGD {p['pgd_steps']})",
         p["n_attack"] * len(grid) * (1 + p["pgd_steps"])),
        ("F14", f"C&W-L2: {p['n_norms']} images x {p['cw_binary_steps']} rounds x {p['cw_steps']} steps",
         p["n_norms"] * p["cw_binary_steps"] * p["cw_steps"]),
        ("F16", f"transfer: 3 sources x {len(transfer)} budgets x (untargeted + targeted) x {p['n_transfer']} "
                f"images x {p['transfer_steps']} PGD steps",
         3 * len(transfer) * 2 * p["n_transfer"] * p["transfer_steps"]),
        ("F17", f"EOT {p['eot_steps']} steps x {p['eot_samples']} samples + plain PGD {p['eot_steps']} steps, "
                f"{p['n_eot']} images",
         p["n_eot"] * p["eot_steps"] * (p["eot_samples"] + 1)),
        ("F18", f"PGD-{p['pgd_steps']} on 3 models + BPDA-PGD on the quantized one, {p['n_defense']} images",
         4 * p["n_defense"] * p["pgd_steps"]),
    ]


def cost_per_row(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 7,
                 inner: int = 30) -> float:
    """Seconds of one forward + input-gradient backward per row, the minimum over
    `repeats` timings of `inner` passes (after a warm-up)."""
    def once() -> None:
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xx), y, reduction="sum"), xx)
        g.sum().item()  # the attacks read their gradient: keep it from being skipped

    for _ in range(10):
        once()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            once()
        best = min(best, (time.perf_counter() - t) / inner / x.shape[0])
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--datasets", default="mnist,fashion_mnist")
    ap.add_argument("--batch", type=int, default=64, help="rows per pass (the kernels chunk at most 128 on a CPU)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    print(f"profile {a.profile}; one torch thread; LeNet-5 (rule G1's target), {a.batch} rows per pass\n")
    print("| data set | section | fixed-iteration work | fwd+bwd rows | ms / row (min) | floor s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ds in a.datasets.split(","):
        p = parameters(a.profile, ds)
        x, y = data.load(ds, "test", n=a.batch)
        model = models.build(p["target_arch"], in_shape=tuple(x.shape[1:]), num_classes=10, seed=0).eval()
        for q in model.parameters():
            q.requires_grad_(False)
        # The iterates are perturbed images, not clean ones (PROFILING.md: blank
        # backgrounds make clean passes cheaper): time a point inside the budget.
        xp = (x + p["budget"]["eps_linf"] * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
              ).clamp(0, 1)
        nchw, cl = cost_per_row(model, xp, y), cost_per_row(layout.channels_last(model), xp, y)
        print(f"| {ds} | one row | forward + input gradient, {a.batch} rows per pass | | NCHW {nchw * 1e3:.3f}, "
              f"channels-last {cl * 1e3:.3f} | |")
        per_row = min(nchw, cl)
        total = 0.0
        for section, what, rows in fixed_rows(p):
            s = rows * per_row
            total += s
            print(f"| {ds} | {section} | {what} | {rows:,} | {per_row * 1e3:.3f} | {s:.0f} |")
        print(f"| {ds} | **all** | fixed-iteration kernels only (no black-box, JSMA, DeepFool, APGD, Square) | "
              f"| | **{total:.0f}** |")
    print(f"\nload average (1 min) {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
