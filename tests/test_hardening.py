"""Issue #27 part 4: the outside fault-injection suite's FAILs, one test each (named by
the suite's case id): a run touches only what it wrote, the sweep store's integrity is
checked, input is bounded and strict."""
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from threatlab import run, sweep
from threatlab.errors import ConfigError


def write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return str(p)


# ------------------------------------------------------------------ S18 seeds

def test_s18_a_huge_seed_range_is_refused_before_it_is_built():
    with pytest.raises(ConfigError, match=r"names more than 10000 seeds; allowed: at most 10000"):
        sweep.parse_seeds("0-100000000")
    with pytest.raises(ConfigError, match="more than 10000"):
        sweep.parse_seeds("0-5000,6000-12000")
    assert len(sweep.parse_seeds("0-9999")) == sweep.MAX_SEEDS
    with pytest.raises(ConfigError, match="at most 10 digits"):
        sweep.parse_seeds("9" * 5000)


# ------------------------------------------------------- Y02-Y04 profile YAML

@pytest.mark.parametrize("text,line,key", [
    ("defaults:\n  seed: 1\n  seed: 2\n", 3, "seed"),                                     # Y02
    ("notebooks:\n  04_adversarial:\n    n_train: 1\n    n_train: 2\n", 4, "n_train"),     # Y03 nested
    ("description: a\ndefaults: {}\ndescription: b\n", 3, "description"),
])
def test_y02_y03_duplicate_keys_are_refused_naming_file_and_line(tmp_path, text, line, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: malformed YAML: duplicate key '{key}'"):
        run.load_profile(path)


def test_y04_an_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(8):  # 9**9 strings once expanded, from about 350 bytes
        lines.append(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}:1: YAML anchor &a is not allowed in a profile"):
        run.load_profile(path)
    path = write(tmp_path, "defaults:\n  seed: 1\nnotebooks:\n  04_adversarial: *x\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: YAML alias \*x is not allowed"):
        run.load_profile(path)


def test_profile_not_utf8_or_not_a_mapping_is_one_line(tmp_path, capsys):
    path = write(tmp_path, b"defaults:\n  seed: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"^{path}:1: the profile is not UTF-8 text"):
        run.load_profile(path)
    path = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    assert run.main(["run", "--profile", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a profile must be a mapping" in err


# ------------------------------------------------------------- S13 identity

@pytest.fixture
def toy(tmp_path, monkeypatch):
    from toy_notebooks import write_toy

    folder = tmp_path / "nbs"
    prof = write_toy(folder)
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    return prof


def test_s13_floats_below_six_decimals_are_distinct_points(toy):
    p = sweep.plan(str(toy), seeds=[0], datasets=["mnist"], grid={"value": [1e-7, 2e-7]}, only=["01"])
    assert [q.params["value"] for q in p.points] == [1e-7, 2e-7]
    assert len({q.digest for q in p.points}) == 2
    # The results' provenance keeps them exactly too (a point is complete only when its
    # results record its identity's parameters).
    from threatlab.report.results import provenance

    assert provenance(0, {"value": 2e-7})["parameters"]["value"] == 2e-7


def test_s13_ordinary_values_keep_their_published_digests():
    # Floats of up to six decimals encode as before: the published table's digests
    # recompute unchanged.
    rows = [json.loads(line) for line in (run.REPO / "figures" / "sweep" / "points.jsonl").read_text().splitlines()]
    assert rows
    for r in rows:
        ident = sweep._identity(r["notebook"], r["params"], seed=0, dataset="", grid={}, deps=[])
        assert sweep.digest_of(ident) == r["digest"]


# ------------------------------------------------------ M02/M03 store tampering

def fake_point(store: Path, value: float, seed: int = 0) -> Path:
    """A complete family point as execute_point leaves it (without running anything)."""
    params = {"seed": seed, "dataset": "mnist", "value": value, "sleep_s": 0.0, "profile": "toy"}
    ident = {"notebook": "01_toy", "params": params}
    digest = sweep.digest_of(ident)
    folder = store / "01_toy" / digest
    (folder / "results").mkdir(parents=True)
    (folder / "point.json").write_text(json.dumps({"identity": ident, "digest": digest}))
    (folder / "results" / "01_toy.json").write_text(json.dumps(
        {"provenance": {"parameters": params}, "metrics": {"score": value}}))
    return folder


def test_m02_m03_collect_refuses_a_tampered_point_naming_its_folder(toy, tmp_path, capsys):
    root = tmp_path / "sw"
    fake_point(root / "points", 1.0)
    b = fake_point(root / "points", 2.0, seed=1)
    assert len(sweep.collect_rows(root / "points")) == 2
    # M03: the results' parameters no longer match the identity.
    res = b / "results" / "01_toy.json"
    good_res = res.read_text()
    res.write_text(good_res.replace('"value": 2.0', '"value": 3.0'))
    with pytest.raises(ConfigError, match=rf"sweep point {b}: results/01_toy.json records value=3.0 but the "
                                          r"point's identity has value=2.0"):
        sweep.collect_rows(root / "points")
    res.write_text(good_res)
    # M02: point.json edited, so it no longer hashes to its folder's digest.
    rec = b / "point.json"
    rec.write_text(rec.read_text().replace('"value": 2.0', '"value": 3.0'))
    res.write_text(good_res.replace('"value": 2.0', '"value": 3.0'))
    with pytest.raises(ConfigError, match=rf"sweep point {b}: point.json hashes to [0-9a-f]{{16}} .*not to its "
                                          rf"folder's digest {b.name}"):
        sweep.collect_rows(root / "points")
    assert run.main(["sweep", "collect", "--profile", str(toy), "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(b) in err
    # A corrupt point.json is the same kind of damage: one line, not a silent skip.
    rec.write_text("{not json")
    with pytest.raises(ConfigError, match=rf"sweep point {b}: point.json does not read as JSON"):
        sweep.collect_rows(root / "points")


def test_collect_writes_only_into_a_folder_threatlab_owns(toy, tmp_path, capsys):
    # `sweep collect --out` writes <out>/figures/sweep/: a figures folder the user made is
    # refused in one line (as a sweep's --out is), --force adds the table beside the
    # user's files, and the marker then names "sweep" as the runner's.
    root = tmp_path / "sw"
    fake_point(root / "points", 1.0)
    mine = root / "figures" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my notes")
    assert run.main(["sweep", "collect", "--profile", str(toy), "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "threatlab did not write" in err and "--force" in err
    assert sorted(p.name for p in (root / "figures").iterdir()) == ["notes.txt"]
    assert run.main(["sweep", "collect", "--profile", str(toy), "--out", str(root), "--force"]) == 0
    assert mine.read_text() == "my notes"
    assert len((root / "figures" / "sweep" / sweep.POINTS_JSONL).read_text().splitlines()) == 1
    assert run.owned_names(root / "figures") == {"sweep"}
    # A folder the runner owns is written again without --force.
    assert run.main(["sweep", "collect", "--profile", str(toy), "--out", str(root)]) == 0


# ------------------------------------------------------- S16 silent scheduler

def test_s16_a_scheduler_that_accepts_and_never_answers_fails_in_one_line(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT_S", 1)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop, held = threading.Event(), []

    def accept_and_stay_silent():
        deadline = time.monotonic() + 60  # stops by itself even if the test does not
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=accept_and_stay_silent, daemon=True)
    th.start()
    addr = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    try:
        with pytest.raises(ConfigError, match=rf"^--scheduler {addr} is unreachable within 1 s \(TimeoutError"):
            sweep.sweep(str(toy), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o"), scheduler=addr)
        assert held, "the server never saw the connection"
    finally:
        stop.set()
        th.join()
        for c in held:
            c.close()
        srv.close()
    assert not (tmp_path / "o" / "points").exists()


def test_s16_probe_accepts_a_real_scheduler():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cl:
        sweep._probe(cl.scheduler_address, 5)


# ------------------------------------------------------ environment switches

@pytest.mark.parametrize("name", ["THREATLAB_APT", "THREATLAB_DOWNLOAD", "THREATLAB_NO_PROGRESS"])
def test_environment_switches_take_only_their_documented_values(name, monkeypatch, capsys):
    from threatlab import validate

    for value, want in (("1", True), (" Yes ", True), ("off", False), ("FALSE", False), ("", None)):
        monkeypatch.setenv(name, value)
        assert validate.env_switch(name, None) is want
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ConfigError, match=rf"^{name}='maybe' is not allowed; use one of 1, true, yes, on \(on\) "
                                          r"or 0, false, no, off \(off\)"):
        validate.env_switch(name, True)
    assert run.main(["run", "--profile", "smoke"]) == 2  # before anything is read or run
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{name}='maybe'" in err


def test_the_readers_of_the_switches_are_strict(monkeypatch):
    from threatlab import data, runtime

    monkeypatch.setenv("THREATLAB_APT", "maybe")
    with pytest.raises(ConfigError, match="THREATLAB_APT='maybe'"):
        data._apt_prefix(None)
    monkeypatch.setenv("THREATLAB_APT", "0")
    assert data._apt_prefix(None)[0] is None
    monkeypatch.setenv("THREATLAB_NO_PROGRESS", "2")
    with pytest.raises(ConfigError, match="THREATLAB_NO_PROGRESS='2'"):
        runtime.progress_disabled()
    monkeypatch.setenv("THREATLAB_DOWNLOAD", "y")
    with pytest.raises(ConfigError, match="THREATLAB_DOWNLOAD='y'"):
        data._download_allowed(False)


# ------------------------------------------------------ E01 counts beyond a set

def test_e01_a_count_beyond_its_split_is_refused_before_any_notebook_runs(tmp_path, capsys):
    path = write(tmp_path, "notebooks:\n  04_adversarial:\n    n_eot_accuracy: 20000\n")
    assert run.main(["run", "--profile", path, "--only", "04", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == ("threatlab: notebook 04_adversarial: n_eot_accuracy=20000 exceeds the 10000 images of the "
                   "mnist test split; allowed: at most 10000\n")
    assert not (tmp_path / "o").exists()
    # At sweep planning too, per point (here on the larger Fashion-MNIST training split).
    with pytest.raises(ConfigError, match=r"point seed=0 dataset=fashion_mnist n_train=70000: notebook "
                                          r"04_adversarial: n_train \+ n_eot_calibration = \d+ \(n_train=70000, "
                                          r"n_eot_calibration=\d+\) exceeds the 60000 images of the "
                                          r"fashion_mnist training split"):
        sweep.plan("smoke", seeds=[0], datasets=["fashion_mnist"], grid={"n_train": [70000]}, only=["04"])


def test_e01_the_notebooks_own_validation_call_checks_sums_of_disjoint_rows():
    from threatlab import validate

    nb = run.NOTEBOOKS / "03_poisoning.ipynb"
    values = {**run.notebook_parameters(nb), "n_train": 45000, "n_heldout": 2500, "n_defender": 500}
    with pytest.raises(ConfigError, match=r"^n_train \+ n_heldout \+ n_defender = 48000 \(n_train=45000, "
                                          r"n_heldout=2500, n_defender=500\) exceeds the 1500 images of the digits"):
        validate.check_notebook({**values, "dataset": "digits"}, {})
    validate.check_notebook({**values, "dataset": "mnist"}, run.notebook_constraints(nb))  # 48000 fits
    # Every shipped profile's counts fit both swept data sets.
    for name in ("smoke", "quick", "full"):
        prof = run.load_profile(name)
        for p in run.notebook_paths():
            for ds in ("mnist", "fashion_mnist"):
                run.preflight(p, run.resolve_parameters(p, prof, name, Path("/tmp"), {"dataset": ds}))


# ------------------------------------------------------- O08 a user's folder

def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_folder(path: Path) -> dict[str, bytes]:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / ".draft.md.0123456789ab.tmp").write_text("my editor's temp file")
    (path / "sub" / ".cache.tmp").write_text("mine too")
    return snapshot(path)


def test_o08_a_users_folder_is_refused_in_one_line_and_untouched(toy, tmp_path, capsys):
    out = tmp_path / "mine"
    before = user_folder(out)
    with pytest.raises(ConfigError, match=rf"^--out {out} is a non-empty folder that threatlab did not write "
                                          r"\(no \.threatlab-run\.json\); .* or pass --force"):
        run.run(str(toy), out=str(out), log=lambda m: None)
    assert run.main(["run", "--profile", str(toy), "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert snapshot(out) == before and not list(tmp_path.glob(".mine.*"))
    # A sweep refuses to publish into such a folder before any point runs.
    (tmp_path / "sw" / "figures").mkdir(parents=True)
    (tmp_path / "sw" / "figures" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^the published folder .*/sw/figures is a non-empty folder that "
                                          r"threatlab did not write"):
        sweep.sweep(str(toy), seeds=[0], datasets=["mnist"], workers=0, out=str(tmp_path / "sw"),
                    log=lambda m: None)
    assert not list((tmp_path / "sw" / "points").glob("*/*"))


@pytest.mark.notebooks
def test_o08_force_writes_beside_the_users_files_and_touches_only_its_own(toy, tmp_path):
    out = tmp_path / "mine"
    before = user_folder(out)
    run.run(str(toy), out=str(out), log=lambda m: None, force=True)
    marker = json.loads((out / run.MARKER).read_text())
    assert set(marker["names"]) == {"results", "tables", "executed", "findings.md"}
    assert {k: v for k, v in snapshot(out).items() if k in before} == before
    # The next run needs no --force (the marker says what is the runner's); an orphan
    # temp file of the runner's own results is cleaned, the user's .tmp files are not.
    (out / "results" / ".01_toy.json.0123456789ab.tmp").write_text("left by a killed write")
    Path(toy).write_text(Path(toy).read_text().replace("  01_toy: {}", "  01_toy:\n    value: 3.0"))
    run.run(str(toy), out=str(out), log=lambda m: None)
    assert json.loads((out / "results" / "01_toy.json").read_text())["metrics"]["score"] == 3.0
    assert not list((out / "results").glob(".*.tmp"))
    assert {k: v for k, v in snapshot(out).items() if k in before} == before
    assert not list(tmp_path.glob(".mine.staging-*"))


@pytest.mark.notebooks
def test_o08_a_folder_written_before_the_marker_is_still_a_run_folder(toy, tmp_path):
    # The layout of the repository's figures/ before markers existed.
    out = tmp_path / "figs"
    (out / "results").mkdir(parents=True)
    (out / "results" / "04_adversarial.json").write_text('{"metrics": {"score": 1.0}}')
    (out / "results" / "04_adversarial.run.json").write_text("{}")
    (out / "04_old.png").write_bytes(b"png")
    (out / "findings.md").write_text("old")
    (out / "README.txt").write_text("someone's note")
    assert run.owned_names(out) == {"results", "04_old.png", "findings.md"}
    assert run.owned_names(run.REPO / "figures") is not None  # the committed figures/
    run.run(str(toy), out=str(out), log=lambda m: None)
    assert (out / "README.txt").read_text() == "someone's note"  # not a name the runner writes
    assert (out / "results" / "04_adversarial.json").exists() and (out / "results" / "01_toy.json").exists()
    assert "README.txt" not in json.loads((out / run.MARKER).read_text())["names"]


def test_o08_recover_cleans_only_the_runners_names(tmp_path):
    out = tmp_path / "o"
    (out / "results").mkdir(parents=True)
    (out / "results" / ".01_x.json.0123456789ab.tmp").write_text("orphan")
    (out / ".findings.md.0123456789ab.tmp").write_text("orphan")
    (out / ".mine.0123456789ab.tmp").write_text("the user's")
    (out / "u").mkdir()
    (out / "u" / ".x.tmp").write_text("the user's")
    run.recover(out, {"results", "findings.md"})
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.tmp")) == [".mine.0123456789ab.tmp", "u/.x.tmp"]


# Published pages are safe: tests/test_site.py (notebook outputs sanitized with nh3).

# ------------------------------------------------------------------- WEAKs

def test_weak_non_finite_grid_values_and_absurd_workers_are_one_line(toy, tmp_path, capsys):
    for bad in ("value=.nan", "value=1.0,.inf", "value=[1.0,-.inf]"):
        with pytest.raises(ConfigError, match=r"^--grid value(\[\d\])?=.* must be a finite number"):
            sweep.parse_grid([bad])
    assert run.main(["sweep", "--profile", "smoke", "--seeds", "0", "--grid", "lr=.nan"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    most = sweep.MAX_WORKERS_PER_CORE * (os.cpu_count() or 1)
    for bad in (-1, most + 1, 10**9):
        with pytest.raises(ConfigError, match=rf"^--workers {bad} must be an integer in 0\.\.{most}"):
            sweep.sweep(str(toy), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o"), workers=bad)


def test_weak_damaged_manifest_hints_are_ignored_with_a_warning(toy, tmp_path):
    p = sweep.plan(str(toy), seeds=[0], datasets=["mnist"], out=str(tmp_path / "o"))
    p.root.mkdir(parents=True)
    said = []
    for text in ("{not json", "[1, 2]", '{"points": 7}', b"\xff\xfe"):
        (p.root / sweep.MANIFEST).write_bytes(text if isinstance(text, bytes) else text.encode())
        assert sweep.cost_hints(p, said.append) == {}
    assert len(said) == 4 and all("warning" in m and "ignoring its timing hints" in m for m in said)
    rows = [{"notebook": "01_toy", "status": "done", "seconds": s} for s in (float("nan"), 1e400, -3, "9", 10)]
    (p.root / sweep.MANIFEST).write_text(json.dumps({"points": rows}))
    said.clear()
    assert sweep.cost_hints(p, said.append) == {"01_toy": 10}
    assert said == [f"[threatlab] sweep: warning: {p.root / sweep.MANIFEST}: 4 point(s) with no usable seconds; "
                    "ignored as hints"]


def test_weak_a_point_json_of_another_shape_is_not_complete(tmp_path):
    folder = tmp_path / "pt"
    (folder / "results").mkdir(parents=True)
    ident = {"notebook": "01_toy", "params": {"value": 1.0}}
    for rec, res in (("[1]", "{}"), (json.dumps({"identity": ident}), "[1]"),
                     (json.dumps({"identity": ident}), '{"provenance": 3}')):
        (folder / "point.json").write_text(rec)
        (folder / "results" / "01_toy.json").write_text(res)
        assert sweep.is_complete(folder, ident) is False
