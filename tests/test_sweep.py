"""Sweeps: bad input refused before anything runs, sequential and distributed points
give the same bytes (all on this machine: no bytes computed elsewhere are compared), a
killed sweep resumes, a failing point is recorded while the others complete, and the
checkpoint cache takes concurrent writers of one key."""
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from threatlab import run, sweep
from threatlab.errors import ConfigError
from toy_notebooks import write_toy

LIB = str(Path(run.__file__).resolve().parents[1])
TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Toy notebooks in place of notebooks/ (01_toy + 05_findings) and their profile."""
    folder = tmp_path / "nbs"
    prof = write_toy(folder)
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    return prof


def results_bytes(store: Path) -> dict[str, bytes]:
    """Each point's own results file (05's folders also hold copies of what it read)."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.glob("*/*/results/*.json"))
            if p.stem == p.parents[2].name}


# ------------------------------------------------------------------ bad input

def test_seed_ranges_and_lists():
    assert sweep.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweep.parse_seeds("0,3,7") == [0, 3, 7] and sweep.parse_seeds("2") == [2]
    for bad, msg in (("", "is empty"), ("4-0", "reversed"), ("-1", "not a non-negative integer"),
                     ("a-b", "not a non-negative integer"), ("1,1", "repeats")):
        with pytest.raises(ConfigError, match=msg):
            sweep.parse_seeds(bad)


def test_datasets_and_grid_parsing():
    assert sweep.parse_datasets("mnist,fashion_mnist") == ["mnist", "fashion_mnist"]
    with pytest.raises(ConfigError, match="unknown data set 'cifar10'"):
        sweep.parse_datasets("mnist,cifar10")
    with pytest.raises(ConfigError, match="is empty"):
        sweep.parse_datasets(",")
    assert sweep.parse_grid(["eps_grid=[0.1,0.2],[0.3]", "n=1,2", "flag=true"]) == {
        "eps_grid": [[0.1, 0.2], [0.3]], "n": [1, 2], "flag": [True]}
    for bad, msg in (("novalue", "key=v1,v2"), ("seed=1,2", "use --seeds"), ("out_dir=/x", "set by the runner"),
                     ("k=1,", "empty value")):
        with pytest.raises(ConfigError, match=msg):
            sweep.parse_grid([bad])


def test_plan_refuses_unknown_grid_key_wrong_type_and_constraint_violations(toy):
    with pytest.raises(ConfigError, match="--grid n_trian: no selected notebook has a parameter 'n_trian'"):
        sweep.plan(str(toy), seeds=[0], datasets=["mnist"], grid={"n_trian": [1]})
    with pytest.raises(ConfigError, match="value='big' has type str"):
        sweep.plan(str(toy), seeds=[0], datasets=["mnist"], grid={"value": [1.0, "big"]})
    # A value the notebook's CONSTRAINTS reject is found at planning, not after a run.
    with pytest.raises(ConfigError, match=r"point seed=0 dataset=mnist value=500.0: notebook 01_toy: "
                                          r"value=500.0: value <= 100 does not hold"):
        sweep.plan(str(toy), seeds=[0], datasets=["mnist"], grid={"value": [1.0, 500.0]})
    with pytest.raises(ConfigError, match="selects nothing"):
        sweep.plan(str(toy), seeds=[0], datasets=["mnist"], only=[""])


def test_notebook_without_dataset_cannot_be_swept_over_data_sets(tmp_path, monkeypatch):
    # A notebook without a `dataset` parameter reads MNIST: sweeping it over another data
    # set is an error, not a fashion_mnist label on MNIST numbers.
    folder = tmp_path / "nbs"
    prof = write_toy(folder, families=("01_toy", "02_nods"), no_dataset=("02_nods",))
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    with pytest.raises(ConfigError, match="notebook 02_nods has no 'dataset' parameter"):
        sweep.plan(str(prof), seeds=[0], datasets=["mnist", "fashion_mnist"])
    assert len(sweep.plan(str(prof), seeds=[0], datasets=["mnist"]).points) == 3
    monkeypatch.undo()
    p = sweep.plan("smoke", seeds=[0, 1], datasets=["mnist", "fashion_mnist"])
    assert len(p.points) == 2 * 2 * 6
    # 05 depends on the three family points of its own (seed, data set).
    for pt in p.points:
        if pt.notebook == "05_findings":
            deps = [q for q in p.points if q.digest in pt.deps]
            assert {(q.seed, q.dataset) for q in deps} == {(pt.seed, pt.dataset)} and len(deps) == 4


def test_unreachable_scheduler_fails_fast_naming_it(toy, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=f"--scheduler {addr} is unreachable"):
        sweep.sweep(str(toy), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o"), scheduler=addr)
    assert time.perf_counter() - t0 < sweep.CONNECT_TIMEOUT_S + 10
    assert not list((tmp_path / "o" / "points").glob("*/*"))
    with pytest.raises(ConfigError, match="not an address"):
        sweep.sweep(str(toy), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o"), scheduler="localhost")


def test_gpu_points_ask_for_a_gpu_worker(tmp_path, monkeypatch):
    folder = tmp_path / "nbs"
    prof = write_toy(folder, families=("01_toy", "02_toy"), profile_extra="gpu: [02_toy]\n")
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    p = sweep.plan(str(prof), seeds=[0], datasets=["mnist"])
    assert {q.notebook: q.gpu for q in p.points} == {"01_toy": False, "02_toy": True, "05_findings": False}
    import torch

    if not torch.cuda.is_available():  # a local cluster cannot serve GPU points here
        with pytest.raises(ConfigError, match="no CUDA device"):
            sweep.sweep(str(prof), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o"), workers=1)


def test_cli_bad_input_exit_code_2(capsys):
    assert run.main(["sweep", "--profile", "smoke", "--seeds", "4-0"]) == 2
    assert "reversed" in capsys.readouterr().err
    assert run.main(["sweep", "--profile", "smoke", "--datasets", "svhn"]) == 2
    assert "unknown data set 'svhn'" in capsys.readouterr().err


# ---------------------------------------------------------------- execution

@pytest.mark.notebooks
def test_sequential_and_distributed_sweeps_agree_and_resume(toy, tmp_path):
    seq = sweep.sweep(str(toy), seeds=[0, 1], datasets=["mnist"], out=str(tmp_path / "a"), workers=0,
                      log=lambda m: None)
    dist = sweep.sweep(str(toy), seeds=[0, 1], datasets=["mnist"], out=str(tmp_path / "b"), workers=2,
                       log=lambda m: None)
    for res in (seq, dist):
        assert sorted(o["status"] for o in res.outcomes.values()) == ["done"] * 4
    a, b = results_bytes(tmp_path / "a" / "points"), results_bytes(tmp_path / "b" / "points")
    assert len(a) == 2 and a == b
    # 05 ran after its family point and read exactly that point's results.
    for pt in seq.plan.points:
        if pt.notebook == "05_findings":
            assert (pt.folder / "findings.md").read_text() == f"01_toy score={float(pt.seed + 1)}\n"
    # The gathered table: one line per family point, sorted, with its results document.
    lines = (tmp_path / "a" / "figures" / "sweep" / "points.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["notebook"], r["dataset"], r["seed"]) for r in rows] == [("01_toy", "mnist", 0), ("01_toy", "mnist", 1)]
    assert set(rows[0]) == {"notebook", "dataset", "seed", "digest", "params", "results"}
    assert rows[1]["results"]["metrics"]["score"] == 2.0
    assert (tmp_path / "a" / "figures" / "sweep" / "points.csv").read_text().startswith("notebook,dataset,seed")
    assert (tmp_path / "b" / "figures" / "sweep" / "points.jsonl").read_text() == "\n".join(lines) + "\n"
    # `sweep collect` gathers the same table from the points alone.
    (tmp_path / "b" / "figures" / "sweep" / "points.jsonl").unlink()
    assert run.main(["sweep", "collect", "--profile", str(toy), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "figures" / "sweep" / "points.jsonl").read_text() == "\n".join(lines) + "\n"
    # Published: seed 0's files, exactly as a single run writes them.
    pub = tmp_path / "a" / "figures"
    assert json.loads((pub / "results" / "01_toy.json").read_text())["metrics"]["score"] == 1.0
    # ... and 05 ran once more there, over the gathered table.
    assert (pub / "findings.md").read_text() == "01_toy score=1.0\nsweep points=2\n"
    assert (pub / "executed" / "01_toy.ipynb").exists() and (pub / "tables" / "01_toy.csv").exists()
    # Resume: everything is complete, nothing re-executes, no byte changes.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "points").rglob("*") if p.is_file()}
    again = sweep.sweep(str(toy), seeds=[0, 1], datasets=["mnist"], out=str(tmp_path / "a"), workers=0,
                        log=lambda m: None)
    assert sorted(o["status"] for o in again.outcomes.values()) == ["skipped"] * 4
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


@pytest.mark.notebooks
def test_failing_point_is_recorded_and_the_others_complete(toy, tmp_path, capsys):
    out = tmp_path / "o"
    rc = run.main(["sweep", "--profile", str(toy), "--seeds", "0", "--datasets", "mnist",
                   "--grid", "value=1.0,-1.0", "--out", str(out), "--workers", "0"])
    assert rc == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("threatlab: FAILED")]
    assert len(err) == 2  # the failing point and the 05 point that reads it
    assert "01_toy seed=0 dataset=mnist value=-1.0" in err[0] and "ValueError: value=-1.0 made this point fail" in err[0]
    assert "full traceback:" in err[0] and ".failed/executed/01_toy.ipynb" in err[0]
    manifest = json.loads((out / "manifest.json").read_text())
    status = {(p["notebook"], p["grid"]["value"]): p for p in manifest["points"]}
    assert status[("01_toy", -1.0)]["status"] == "failed" and status[("01_toy", -1.0)]["attempts"] == 2
    assert status[("01_toy", -1.0)]["params"]["value"] == -1.0
    assert Path(status[("01_toy", -1.0)]["executed"]).exists()
    assert status[("05_findings", -1.0)]["status"] == "blocked"
    assert status[("01_toy", 1.0)]["status"] == "done" and status[("05_findings", 1.0)]["status"] == "done"
    assert len(manifest["failures"]) == 2
    good = Path(status[("01_toy", 1.0)]["folder"])
    assert json.loads((good / "results" / "01_toy.json").read_text())["metrics"]["score"] == 1.0


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.notebooks
def test_killed_sweep_resumes_without_reexecuting_or_truncating(toy, tmp_path):
    out = tmp_path / "o"
    prof = Path(toy)
    prof.write_text(prof.read_text().replace("notebooks:\n", "notebooks:\n  01_toy:\n    sleep_s: 2.0\n", 1)
                    .replace("  01_toy: {}\n", ""))
    code = ("import sys; from pathlib import Path; from threatlab import run; "
            f"run.NOTEBOOKS = Path({str(run.NOTEBOOKS)!r}); "
            f"sys.exit(run.main(['sweep', '--profile', {str(prof)!r}, '--seeds', '0-3', '--datasets', 'mnist', "
            f"'--only', '01', '--out', {str(out)!r}, '--workers', '1']))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([LIB, TESTS])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    store = out / "points" / "01_toy"
    deadline = time.time() + 240
    while time.time() < deadline and not list(store.glob("*/point.json")):
        time.sleep(0.2)
    children = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the driver, which hosts the scheduler
    proc.wait()
    for pid in children:  # the local cluster's processes we started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done_before = sorted(p.parent for p in store.glob("*/point.json"))
    assert 1 <= len(done_before) < 4, "the kill did not land mid-way"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for d in done_before for p in d.rglob("*") if p.is_file()}
    for p in before:  # complete, parseable files only
        if p.suffix == ".json" or p.suffix == ".ipynb":
            json.loads(p.read_bytes())
    res = sweep.sweep(str(prof), seeds=[0, 1, 2, 3], datasets=["mnist"], only=["01"], out=str(out), workers=0,
                      log=lambda m: None)
    by_folder = {str(pt.folder): res.outcomes[pt.digest]["status"] for pt in res.plan.points}
    for d in done_before:
        assert by_folder[str(d)] == "skipped"
    assert sorted(by_folder.values()).count("done") == 4 - len(done_before)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before
    assert not list(store.glob(".*.staging-*"))


@pytest.mark.notebooks
def test_smoke_sweep_on_two_workers_gives_the_bytes_of_a_sequential_one(tmp_path):
    """A real family notebook (03, tiny, on scikit-learn digits) over two seeds."""
    prof = tmp_path / "p.yaml"
    prof.write_text("timeout_s: 600\ndefaults:\n  seed: 0\nnotebooks:\n  03_poisoning:\n    trigger_size: 2\n"
                    "    n_train: 600\n    holdout: 100\n    n_heldout: 300\n    flip_rates: [0.2]\n    label_budgets: [0.05]\n"
                    "    badnets_rates: [0.1]\n    n_clean_per_class: 20\n"
                    "    removal_multiples: [1.5]\n    n_targets: 2\n    n_poisons: 1\n    fc_steps: 5\n"
                    "    finetune_epochs: 1\n    n_defender: 50\n    nc_steps: 3\n")
    kw = dict(seeds=[0, 1], datasets=["digits"], only=["03"], log=lambda m: None)
    seq = sweep.sweep(str(prof), out=str(tmp_path / "seq"), workers=0, **kw)
    dist = sweep.sweep(str(prof), out=str(tmp_path / "dist"), workers=2, **kw)
    assert not seq.failures and not dist.failures
    a, b = results_bytes(tmp_path / "seq" / "points"), results_bytes(tmp_path / "dist" / "points")
    assert len(a) == 2 and a == b


# ------------------------------------------------------------ shared cache

def _writer(path: str, start, rounds: int) -> None:
    import torch

    from threatlab import models

    torch.set_num_threads(1)
    net = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=(16,))
    start.wait()
    for _ in range(rounds):
        models.save_checkpoint(net, path, key="k" * 64, arch="mlp")


def test_two_processes_writing_one_checkpoint_key_at_once(tmp_path):
    import torch

    from threatlab import models

    path = tmp_path / "models" / "mlp-digits-k.safetensors"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), start, 40)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    reference = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=(16,))
    reads = 0
    while any(p.is_alive() for p in procs):
        if path.exists():  # every read sees one whole file, never a mix
            net = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=1, hidden=(16,))
            models.load_checkpoint(net, path, key="k" * 64)
            assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reads > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    single = tmp_path / "single.safetensors"
    models.save_checkpoint(reference, single, key="k" * 64, arch="mlp")
    assert path.read_bytes() == single.read_bytes()


@pytest.mark.notebooks
def test_profile_naming_docs_gets_the_published_notebooks_as_chapters(tmp_path, monkeypatch):
    folder = tmp_path / "nbs"
    prof = write_toy(folder, profile_extra="docs: docs\n")
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    res = sweep.sweep(str(prof), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o"), workers=0,
                      log=lambda m: None)
    assert not res.failures
    # Contained in --out: <out>/docs, one sanitized executed notebook per published one.
    chapters = sorted((tmp_path / "o" / "docs").glob("*.ipynb"))
    assert [p.name for p in chapters] == ["01_toy.ipynb", "05_findings.ipynb"]
    nb = json.loads(chapters[0].read_text())
    assert "papermill" not in nb["metadata"] and any(c.get("outputs") for c in nb["cells"])
    # A docs folder holding someone else's files is refused before any point runs.
    (tmp_path / "o2" / "docs").mkdir(parents=True)
    (tmp_path / "o2" / "docs" / "draft.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"docs folder .* holds files threatlab did not write"):
        sweep.sweep(str(prof), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o2"), workers=0,
                    log=lambda m: None)
    assert not list((tmp_path / "o2").rglob("point.json"))
    assert [p.name for p in (tmp_path / "o2" / "docs").iterdir()] == ["draft.md"]


def test_cost_hints_put_the_previous_sweeps_longest_notebook_first(toy, tmp_path):
    """Dask priorities come from the last manifest's finished points (median seconds per
    notebook); skipped or failed rows, a missing or unreadable manifest give none."""
    p = sweep.plan(str(toy), seeds=[0, 1], datasets=["mnist"], out=str(tmp_path / "a"))
    assert sweep.cost_hints(p) == {}
    p.root.mkdir(parents=True, exist_ok=True)
    (p.root / sweep.MANIFEST).write_text("{not json")
    assert sweep.cost_hints(p) == {}
    rows = [{"notebook": "04_x", "status": "done", "seconds": s} for s in (250.0, 230.4, 262.0)]
    rows += [{"notebook": "01_toy", "status": "done", "seconds": 80.2},
             {"notebook": "01_toy", "status": "skipped", "seconds": 0.1},
             {"notebook": "03_y", "status": "failed", "seconds": 500.0},
             {"notebook": "05_findings", "status": "done", "seconds": None}]
    (p.root / sweep.MANIFEST).write_text(json.dumps({"points": rows}))
    assert sweep.cost_hints(p) == {"04_x": 250, "01_toy": 80}


def test_the_cluster_never_holds_more_points_than_it_has_threads(tmp_path, monkeypatch):
    """Dask gives a submitted task to a worker at once and did not steal it back: with
    all points submitted up front, one of two workers ran five points in a row while the
    other idled (make figures SEEDS=5). Points now go out only when a thread is free,
    longest first, aggregators once their dependencies finished (with their outcomes)."""
    from distributed import Client, LocalCluster

    folder = tmp_path / "nbs"
    prof = write_toy(folder, families=("01_toy", "02_toy"))
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    p = sweep.plan(str(prof), seeds=[0, 1, 2], datasets=["mnist"], out=str(tmp_path / "o"))
    started: list[tuple[str, int]] = []

    def fake_point(spec, *deps):
        time.sleep(0.05)
        return sweep._outcome(spec, "done", deps=[d["digest"] for d in deps])

    monkeypatch.setattr(sweep, "execute_point", fake_point)

    class Watched:
        """The client, counting the points it holds that have not finished at each submit."""

        def __init__(self, client):
            self.client, self.futures = client, []

        def submit(self, fn, spec, *deps, **kw):
            started.append((spec["stem"], sum(not f.done() for f in self.futures)))
            fut = self.client.submit(fn, spec, *deps, **kw)
            self.futures.append(fut)
            return fut

        def __getattr__(self, name):
            return getattr(self.client, name)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cl, \
            Client(cl) as client:
        outcomes = sweep._run_dask(p, sweep._Progress(len(p.points), lambda m: None), Watched(client),
                                   lambda m: None)
    assert len(started) == len(p.points) == 9 and all(o["status"] == "done" for o in outcomes.values())
    assert max(busy for _, busy in started) <= 1          # at most 2 in flight: 1 running + the new one
    # Each 05 ran after its seed's family points and was handed exactly their outcomes.
    for q in p.points:
        if q.aggregator:
            assert sorted(outcomes[q.digest]["deps"]) == sorted(q.deps)


def test_submission_order_is_longest_first_and_keeps_aggregators_last(toy, tmp_path):
    p = sweep.plan(str(toy), seeds=[0, 1], datasets=["mnist"], out=str(tmp_path / "a"))
    names = lambda pts: [(q.notebook, q.seed) for q in pts]  # noqa: E731
    assert names(sweep.submission_order(p.points, {})) == names(p.points)   # no history: the plan's order
    order = sweep.submission_order(p.points, {"05_findings": 10_000, "01_toy": 5})
    assert [q.aggregator for q in order] == [False, False, True, True]
    assert names(order) == [("01_toy", 0), ("01_toy", 1), ("05_findings", 0), ("05_findings", 1)]


# ------------------------------------------------------- the published results

def test_only_the_published_design_resolves_to_figures_and_docs():
    """figures/, docs/ and README's table are the 5 seeds x 2 data sets sweep's; a smaller
    sweep of the quick profile resolves under build/, before anything runs."""
    both = ["mnist", "fashion_mnist"]
    full = sweep.plan("quick", seeds=[0, 1, 2, 3, 4], datasets=both)
    assert full.publish_dir == run.REPO_FIGURES.resolve() and full.docs_dir == (run.REPO_DOCS / "chapters").resolve()
    assert full.short_of_design is None
    assert run.readme_allowed("quick", full.publish_dir, design_met=True)
    build = (run.REPO / "build").resolve()
    for seeds, datasets, only in (([0], ["mnist"], None), ([0, 1, 2, 3], both, None),
                                  ([0, 1, 2, 3, 4], ["mnist"], None), ([0, 1, 2, 3, 4], both, ["04", "05"])):
        p = sweep.plan("quick", seeds=seeds, datasets=datasets, only=only)
        assert p.short_of_design and build in p.publish_dir.parents and build in p.docs_dir.parents
        assert not run.is_published(p.publish_dir) and not run.is_published(p.docs_dir)
    one = sweep.plan("quick", seeds=[0], datasets=["mnist"])
    assert one.publish_dir == build / "figures-quick-s0-mnist" and one.docs_dir == build / "docs-quick-s0-mnist"
    assert "figures-quick-s0-4-mnist_fashion_mnist" in str(sweep.plan("quick", seeds=[0, 1, 2, 3, 4],
                                                                      datasets=both, only=["01"]).publish_dir)
    # Asked for by name, the published folder is refused with one line.
    with pytest.raises(ConfigError, match="published results.*1 seed < 5"):
        sweep.plan("quick", seeds=[0], datasets=["mnist"], out=str(run.REPO))
    assert not run.readme_allowed("quick", run.REPO_FIGURES) and not run.readme_allowed("smoke", run.REPO_FIGURES,
                                                                                          design_met=True)


@pytest.mark.notebooks
def test_one_seed_sweep_of_a_profile_naming_figures_leaves_them_and_says_where(tmp_path, monkeypatch):
    """A profile whose out is figures/ and docs docs/ (as quick's), swept over one seed:
    git status stays clean in figures/, docs/ and README.md; the last line names build/."""
    folder = tmp_path / "nbs"
    prof = write_toy(folder, profile_extra="out: figures\ndocs: docs\n")
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    name = f"gate{os.getpid()}"
    prof = prof.rename(prof.with_name(f"{name}.yaml"))
    scratch = run.REPO / "build" / f"figures-{name}-s0-mnist"
    made = [scratch, scratch.with_name(f"docs-{name}-s0-mnist"), run.REPO / "build" / "sweep" / name]

    def status() -> str:
        return subprocess.run(["git", "status", "--porcelain", "--", "figures", "docs", "README.md"],
                              cwd=run.REPO, capture_output=True, text=True, check=True).stdout

    before = status()
    lines: list[str] = []
    try:
        res = sweep.sweep(str(prof), seeds=[0], datasets=["mnist"], workers=0, log=lines.append)
        assert not res.failures
        assert status() == before
        # the docs folder gets the executed notebooks as the site's chapters (report.site)
        assert (scratch / "findings.md").exists() and any(made[1].glob("*.ipynb"))
        where = f"[threatlab] sweep: figures, tables and findings in build/figures-{name}-s0-mnist/"
        assert lines[-1].startswith(where)
        assert "figures/, docs/ and README.md keep the published results" in lines[-1]
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


def test_no_dashboard_link_without_bokeh(monkeypatch):
    """Without bokeh, Dask's dashboard page only asks to install it: the sweep prints no
    link (it did, to a page saying "Dask needs bokeh"); with bokeh it prints the address."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cl, Client(cl) as client:
        monkeypatch.setattr(sweep, "_has_bokeh", lambda: False)
        assert sweep._dashboard(client) is None
        monkeypatch.setattr(sweep, "_has_bokeh", lambda: True)
        assert sweep._dashboard(client) == client.dashboard_link
