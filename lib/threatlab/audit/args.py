"""`threatlab audit`'s command line: the parser and the checks of every value.

Each bad value is a `ConfigError` naming the flag, the value and what is allowed,
raised before the model or data are touched (NaN, inf, negative or unordered eps,
unknown sections, a reversed input range...). Defaults: the L-inf grid is a third, two
thirds and all of the data set's budget (`threatlab.budgets`: 0.3 on MNIST, 0.1 on
Fashion-MNIST); the L2 grid ends at `EPS_L2` (a folder data set has no table entry and
needs both grids on the command line).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import budgets, validate
from ..errors import ConfigError

__all__ = ["EPS_L2", "SECTIONS", "OneLineParser", "Options", "add_parser", "options_from"]

SECTIONS = ("evasion", "membership", "extraction", "backdoor")
#: Top of the default L2 grid per data set, in [0, 1] pixel units: 2.0 on MNIST, a common
#: MNIST L2 budget (e.g. Croce & Hein's FAB evaluation, arXiv 1907.02044); 1.0 on
#: Fashion-MNIST is this tool's convention (MNIST's, scaled by about the ratio of the two
#: L-inf budgets and rounded up), not a literature value: pass --eps-l2 to choose.
EPS_L2: dict[str, float] = {"mnist": 2.0, "fashion_mnist": 1.0}
#: F02/F03's query budgets (notebook 01's default grid).
DEFAULT_BUDGETS = (25, 50, 100, 200, 400, 800, 1600, 3200)


@dataclass
class Options:
    """Checked values of one `threatlab audit` call (units: eps in [0, 1] input units)."""

    model: str
    weights: str | None
    data: str
    members: str
    input_range: tuple[float, float]
    out: Path
    force: bool
    sections: tuple[str, ...]
    n: int
    eps: dict[str, list[float]]
    apgd_steps: int
    square_queries: int
    n_membership: int
    reference_models: int
    reference_epochs: int
    reference_rows: int
    budgets: list[int]
    n_eval: int
    substitute_max_epochs: int
    substitute_min_steps: int
    nc_images: int
    nc_steps: int
    seed: int
    device: str | None
    argv: list[str] = field(default_factory=list)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other
    bad input of the audit, instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"threatlab audit: {message} (see threatlab audit --help)\n")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` subcommand to an argparse subparsers object."""
    a = sub.add_parser("audit", help="audit your own model across the four threat families",
                       description="Audit a PyTorch classifier for evasion, membership inference, extraction "
                                   "and backdoors; writes report.html and report.json. Exit 2 on bad input.")
    a.add_argument("--model", required=True, help="module:factory or path/to/file.py:factory returning an nn.Module")
    a.add_argument("--weights", help="state dict: .safetensors, or .pt/.pth (read with weights_only=True)")
    a.add_argument("--data", required=True, help="mnist | fashion_mnist | a folder (IDX files, or one .npz with "
                                                 "x_train, y_train, x_test, y_test)")
    a.add_argument("--members", default="train", help="the split the model was trained on (train)")
    a.add_argument("--input-range", default="0,1", help="LO,HI of the model's inputs (default 0,1)")
    a.add_argument("--out", required=True, help="output folder for report.html and report.json")
    a.add_argument("--force", action="store_true", help="write into a non-empty folder threatlab did not write")
    a.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    a.add_argument("--n", default="500", help="test examples attacked in the evasion section (default 500)")
    a.add_argument("--eps-linf", help="L-inf eps grid, comma list in [0, 1] input units "
                                      "(default: 1/3, 2/3 and all of the data set's budget)")
    a.add_argument("--eps-l2", help="L2 eps grid, comma list (default: 1/3, 2/3 and all of 2.0 on MNIST, "
                                    "1.0 on Fashion-MNIST)")
    a.add_argument("--apgd-steps", default="100", help="APGD-CE / APGD-DLR iterations (default 100)")
    a.add_argument("--square-queries", default="1000", help="Square attack queries per example (default 1000)")
    a.add_argument("--n-membership", default="1000", help="members and as many non-members (default 1000)")
    a.add_argument("--reference-models", default="0", help="K > 0 trains K LiRA-offline reference models "
                                                             "from your factory (default 0: no LiRA)")
    a.add_argument("--reference-epochs", default="3", help="epochs per reference model (default 3)")
    a.add_argument("--reference-rows", default="10000", help="training records the references draw halves "
                                                              "from (default 10000)")
    a.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)),
                   help="extraction query budgets, increasing (default F02/F03's 25..3200)")
    a.add_argument("--n-eval", default="1000", help="test records agreement is measured on (default 1000)")
    a.add_argument("--substitute-max-epochs", default="100", help="epoch cap per substitute fit (default 100)")
    a.add_argument("--substitute-min-steps", default="300", help="optimiser steps before early stopping "
                                                                 "(default 300)")
    a.add_argument("--nc-images", default="500", help="clean images Neural Cleanse uses (default 500)")
    a.add_argument("--nc-steps", default="300", help="Neural Cleanse optimisation steps (default 300)")
    a.add_argument("--seed", default="0", help="seed of every draw (default 0)")
    a.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    return a


def _int(flag: str, text: str, *, low: int) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"{flag}={text!r} must be an integer >= {low}") from None
    return int(validate.number(flag, v, low=low, integer=True))


def _floats(flag: str, text: str) -> list[float]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{flag}={text!r} must be a comma list of numbers") from None
    for i, v in enumerate(vals):
        if not math.isfinite(v):
            raise ConfigError(f"{flag}={text!r}: value {i + 1} is {v}; NaN and inf are not allowed")
    return vals


def _grid(flag: str, text: str | None, default_top: float | None, data: str, high: float | None) -> list[float]:
    if text is None:
        if default_top is None:
            raise ConfigError(f"{flag} is required for --data {data!r} (a folder has no default budget; "
                              f"give e.g. {flag} 0.1,0.2,0.3 in [0, 1] input units)")
        return budgets.fractions_of(default_top) if default_top <= 1 else \
            [round(default_top * f, 6) for f in (1 / 3, 2 / 3)] + [default_top]
    vals = _floats(flag, text)
    for v in vals:
        validate.number(flag, v, low=0, high=high, low_open=True)
    if any(b <= a for a, b in zip(vals, vals[1:])):
        raise ConfigError(f"{flag}={text!r} must be strictly increasing")
    return vals


def options_from(ns: argparse.Namespace, argv: list[str] | None = None) -> Options:
    """Check every value of the parsed command line; ConfigError on the first bad one."""
    lohi = _floats("--input-range", ns.input_range)
    if len(lohi) != 2 or not lohi[0] < lohi[1]:
        raise ConfigError(f"--input-range={ns.input_range!r} must be LO,HI with LO < HI (e.g. 0,1 or -1,1 or 0,255)")
    sections = tuple(s.strip() for s in str(ns.sections).split(",") if s.strip())
    if not sections:
        raise ConfigError(f"--sections={ns.sections!r} names no section; choose from {list(SECTIONS)}")
    for s in sections:
        validate.choice("--sections", s, SECTIONS)
    sections = tuple(s for s in SECTIONS if s in sections)  # report order
    validate.choice("--members", ns.members, ("train",))
    data = ns.data
    builtin = data in budgets.EPS_LINF
    eps: dict[str, list[float]] = {}
    if "evasion" in sections:
        eps["linf"] = _grid("--eps-linf", ns.eps_linf, budgets.EPS_LINF.get(data) if builtin else None, data, 1)
        eps["l2"] = _grid("--eps-l2", ns.eps_l2, EPS_L2.get(data) if builtin else None, data, None)
    budgets_ = [_int("--budgets", b, low=1) for b in str(ns.budgets).split(",")]
    if any(b <= a for a, b in zip(budgets_, budgets_[1:])):
        raise ConfigError(f"--budgets={ns.budgets!r} must be strictly increasing")
    if ns.device is not None:
        import torch

        try:
            dev = torch.device(ns.device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"--device={ns.device!r} is not a device (cpu, cuda, cuda:0 ...)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device={ns.device!r}: no CUDA device on this machine; use --device cpu")
    if ns.weights is not None and not Path(ns.weights).is_file():
        raise ConfigError(f"--weights {ns.weights!r} is not a file")
    return Options(
        model=ns.model, weights=ns.weights, data=data, members=ns.members, input_range=(lohi[0], lohi[1]),
        out=Path(ns.out).resolve(), force=bool(ns.force), sections=sections, n=_int("--n", ns.n, low=1), eps=eps,
        apgd_steps=_int("--apgd-steps", ns.apgd_steps, low=1),
        square_queries=_int("--square-queries", ns.square_queries, low=1),
        n_membership=_int("--n-membership", ns.n_membership, low=10),
        reference_models=_int("--reference-models", ns.reference_models, low=0),
        reference_epochs=_int("--reference-epochs", ns.reference_epochs, low=1),
        reference_rows=_int("--reference-rows", ns.reference_rows, low=2), budgets=budgets_,
        n_eval=_int("--n-eval", ns.n_eval, low=10),
        substitute_max_epochs=_int("--substitute-max-epochs", ns.substitute_max_epochs, low=1),
        substitute_min_steps=_int("--substitute-min-steps", ns.substitute_min_steps, low=0),
        nc_images=_int("--nc-images", ns.nc_images, low=1), nc_steps=_int("--nc-steps", ns.nc_steps, low=1),
        seed=_int("--seed", ns.seed, low=0), device=ns.device, argv=list(argv or []))
