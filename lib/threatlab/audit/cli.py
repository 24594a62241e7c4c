"""`threatlab audit` / `python -m threatlab audit`: one command, four threat families.

Order of work: every flag is checked (`args`), the output folder is claimed (a
non-empty folder threatlab did not write is refused unless ``--force``, as for
``threatlab run``), the user's model and data are loaded and checked (`loading`), and
only then does any attack run. Bad input is one line on stderr and exit code 2. The
report is written into a staging folder and swapped into place (`threatlab.run`'s
commit), so an interrupted audit leaves the previous report, never half of one.
"""
from __future__ import annotations

import shlex
import sys
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import run as tl_run
from ..errors import ConfigError
from ..io import atomic_write, sha256_file
from ..models import tensor_digest
from ..protocols.evasion import PassCounter
from ..report.results import provenance
from ..runtime import default_device, progress_disabled, randperm, seed_everything
from . import args as audit_args
from . import loading
from .accounting import add_queries, measure

__all__ = ["audit", "main"]


def _plan(opts: audit_args.Options, d: loading.AuditData) -> dict[str, Any]:
    """Which rows each section uses (a seeded permutation of each split); ConfigError
    when a split is too small for what was asked."""
    g = torch.Generator().manual_seed(opts.seed)
    perm_te = randperm(d.x_test.shape[0], g)
    perm_tr = randperm(d.x_train.shape[0], g)
    n_te, n_tr = d.x_test.shape[0], d.x_train.shape[0]
    plan: dict[str, Any] = {}
    if "evasion" in opts.sections:
        plan["evasion"] = perm_te[: min(opts.n, n_te)]
    if "membership" in opts.sections:
        m = min(opts.n_membership, n_te // 2, n_tr)
        if m < 10:
            raise ConfigError(f"--data {opts.data}: membership needs at least 20 test and 10 training records; "
                              f"the data have {n_te} and {n_tr}")
        plan["members"], plan["non_members"], plan["population"] = perm_tr[:m], perm_te[:m], perm_te[m:2 * m]
        plan["reference_pool"] = perm_tr[m:m + opts.reference_rows]
        if opts.reference_models and plan["reference_pool"].numel() < 20:
            raise ConfigError(f"--reference-models {opts.reference_models}: only {plan['reference_pool'].numel()} "
                              "training records are left after the candidates; references need at least 20")
    if "extraction" in opts.sections:
        need = opts.n_eval + opts.budgets[-1]
        if need > n_te:
            raise ConfigError(f"--budgets up to {opts.budgets[-1]} plus --n-eval {opts.n_eval} need {need} test "
                              f"records; the data have {n_te}: lower them")
        plan["eval"], plan["pool"] = perm_te[: opts.n_eval], perm_te[opts.n_eval:need]
    if "backdoor" in opts.sections:
        plan["clean"] = perm_te[: min(opts.nc_images, n_te)]
    return plan


def audit(opts: audit_args.Options, log=print) -> dict[str, Any]:
    """Run the selected sections and write report.json and report.html into opts.out.
    Returns the report document (as written to report.json)."""
    t_start = time.perf_counter()
    tl_run.check_writable(opts.out.parent)
    tl_run.claim(opts.out, force=opts.force)  # a user's folder is refused before anything runs
    lo, hi = opts.input_range
    raw = loading.load_model(opts.model, opts.weights)
    d = loading.load_data(opts.data, lo, hi)
    wrap = (lambda m: loading.InputRange(m, lo, hi)) if (lo, hi) != (0.0, 1.0) else (lambda m: m)
    y_max = int(max(d.y_train.max(), d.y_test.max()))
    num_classes = loading.probe_model(wrap(raw), d.x_test, y_max, opts.model)
    plan = _plan(opts, d)

    device = torch.device(opts.device) if opts.device else default_device()
    seed_everything(opts.seed)
    counter = PassCounter(wrap(raw).to(device)).eval()
    x_te, y_te = d.x_test.to(device), d.y_test.to(device)
    sections: dict[str, Any] = {}
    costs: dict[str, Any] = {}
    outer = tqdm(opts.sections, desc="threatlab audit", disable=progress_disabled())
    for name in outer:
        outer.set_postfix_str(name)
        with measure(counter) as cost:
            if name == "evasion":
                from .evasion import run_evasion

                rows = plan["evasion"].to(device)
                sections[name] = run_evasion(counter, x_te[rows], y_te[rows], grids=opts.eps,
                                             apgd_steps=opts.apgd_steps, square_queries=opts.square_queries,
                                             seed=opts.seed)
            elif name == "membership":
                from .membership import run_membership, train_references

                xtr, ytr = d.x_train, d.y_train
                refs = None
                if opts.reference_models:
                    pool = plan["reference_pool"]

                    def refs():
                        return train_references(lambda: loading.load_model(opts.model, None), wrap, xtr[pool],
                                                ytr[pool], k=opts.reference_models, epochs=opts.reference_epochs,
                                                seed=opts.seed, device=device)
                mem, non, pop = plan["members"], plan["non_members"], plan["population"]
                sections[name] = run_membership(counter, xtr[mem].to(device), ytr[mem].to(device), x_te[non.to(device)],
                                                y_te[non.to(device)], x_te[pop.to(device)], y_te[pop.to(device)],
                                                seed=opts.seed, references=refs)
                add_queries(cost, **sections[name]["oracle_queries"])
            elif name == "extraction":
                from .extraction import run_extraction

                sections[name] = run_extraction(counter, x_te[plan["pool"].to(device)], x_te[plan["eval"].to(device)],
                                                budgets=opts.budgets, num_classes=num_classes, seed=opts.seed,
                                                substitute_hidden=128, max_epochs=opts.substitute_max_epochs,
                                                patience=10, min_steps=opts.substitute_min_steps)
                add_queries(cost, **sections[name]["oracle_queries"])
            elif name == "backdoor":
                from .backdoor import run_backdoor

                sections[name] = run_backdoor(counter, x_te[plan["clean"].to(device)], num_classes=num_classes,
                                              steps=opts.nc_steps)
        costs[name] = dict(cost)
        sections[name]["seconds"] = cost["seconds"]
        log(f"[threatlab] audit: {name} done in {cost['seconds']:.1f} s")
    outer.close()

    doc = {
        "command": "threatlab audit " + shlex.join(opts.argv),
        "model": {"factory": opts.model, "weights": opts.weights,
                  "weights_sha256": sha256_file(opts.weights) if opts.weights else None,
                  "parameters": sum(p.numel() for p in raw.parameters()), "num_classes": num_classes,
                  "input_range": list(opts.input_range)},
        "data": {"name": d.name, "source": d.source, "n_train": int(d.x_train.shape[0]),
                 "n_test": int(d.x_test.shape[0]), "members_split": opts.members,
                 "sha256": tensor_digest(d.x_train, d.y_train, d.x_test, d.y_test)},
        "seed": opts.seed, "device": str(device), "sections_run": list(opts.sections),
        "sections": sections, "costs": costs, "total_seconds": round(time.perf_counter() - t_start, 2),
        "provenance": provenance(opts.seed, {k: str(v) if not isinstance(v, (int, float, list, dict, tuple, type(None)))
                                             else v for k, v in vars(opts).items() if k != "argv"}),
    }
    _write(opts, doc)
    return doc


def _write(opts: audit_args.Options, doc: dict[str, Any]) -> None:
    from .report import render_html, to_json

    page = render_html(doc)
    for name, s in doc["sections"].items():  # the masks are in the page; the JSON keeps the numbers
        s.pop("masks", None)
    text = to_json(doc)
    final = opts.out
    with tl_run.folder_lock(final):
        tl_run.recover(final)
        owned = tl_run.claim(final, force=opts.force)  # again under the lock
        staging = tl_run.stage(final, owned)
        try:
            atomic_write(staging / "report.json", text)
            atomic_write(staging / "report.html", page)
            tl_run.commit(staging, final, owned)
        finally:
            if staging.exists():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`threatlab audit ...` (argv without the word "audit"); 0 ok, 2 bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = audit_args.OneLineParser(prog="threatlab")
    audit_args.add_parser(ap.add_subparsers(dest="cmd", required=True))
    try:
        ns = ap.parse_args(["audit", *argv])
    except SystemExit as e:  # --help (0) or a usage error, already printed in one line (2)
        return int(e.code or 0)
    try:
        opts = audit_args.options_from(ns, argv)
        doc = audit(opts)
    except ConfigError as e:
        print(f"threatlab audit: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(f"[threatlab] audit written to {opts.out / 'report.html'} and report.json in {doc['total_seconds']:.1f} s")
    return 0
