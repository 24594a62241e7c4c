"""The runner: profiles are checked against notebooks before anything executes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from threatlab import run
from threatlab.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return str(p)


def test_shipped_profiles_resolve_for_every_notebook(tmp_path):
    for name in ("smoke", "quick", "full"):
        prof = run.load_profile(name)
        for nb in run.notebook_paths():
            params = run.resolve_parameters(nb, prof, name, tmp_path)
            assert params["out_dir"] == str(tmp_path) and params["profile"] == name


def test_unknown_profile():
    with pytest.raises(ConfigError, match="profile='fast' is not a profile; choose one of"):
        run.load_profile("fast")


def test_unknown_profile_key_is_an_error(tmp_path):
    prof = run.load_profile(write(tmp_path, "notebooks:\n  04_adversarial:\n    n_trian: 10\n"))
    nb = run.NOTEBOOKS / "04_adversarial.ipynb"
    with pytest.raises(ConfigError, match="unknown parameter 'n_trian'"):
        run.resolve_parameters(nb, prof, "p", tmp_path)


def test_wrong_type_is_an_error(tmp_path):
    prof = run.load_profile(write(tmp_path, "notebooks:\n  04_adversarial:\n    n_train: many\n"))
    nb = run.NOTEBOOKS / "04_adversarial.ipynb"
    with pytest.raises(ConfigError, match="n_train='many' has type str"):
        run.resolve_parameters(nb, prof, "p", tmp_path)


def test_runner_params_and_unknown_notebook(tmp_path):
    prof = run.load_profile(write(tmp_path, "notebooks:\n  04_adversarial:\n    out_dir: /tmp\n"))
    with pytest.raises(ConfigError, match="set by the runner"):
        run.resolve_parameters(run.NOTEBOOKS / "04_adversarial.ipynb", prof, "p", tmp_path)
    with pytest.raises(ConfigError, match="notebook '99_nope' does not exist"):
        run.load_profile(write(tmp_path, "notebooks:\n  99_nope: {}\n"))
    with pytest.raises(ConfigError, match="unknown top-level key"):
        run.load_profile(write(tmp_path, "notebook: {}\n"))


def test_only_matches_nothing(tmp_path):
    with pytest.raises(ConfigError, match="matches no notebook"):
        run.run("smoke", only=["42"], out=str(tmp_path))


def test_cli_reports_config_errors(capsys):
    assert run.main(["run", "--profile", "fast"]) == 2
    assert "profile='fast'" in capsys.readouterr().err


def test_parameters_parsed_even_with_awkward_comments(tmp_path):
    import nbformat

    cell = nbformat.v4.new_code_cell("a: int = 1  # 0 = off (as in the paper's code)\nb: list = [1, 2]  # 'quoted'")
    cell.metadata["tags"] = ["parameters"]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    assert run.notebook_parameters(path) == {"a": 1, "b": [1, 2]}


# ------------------------------------------------------------- profile schema

@pytest.mark.parametrize("text, msg", [
    ("defaults: [1, 2]\n", r"p.yaml:1: 'defaults' must be a mapping"),
    ("notebooks:\n  04_adversarial: 3\n", r"p.yaml:2: notebooks.04_adversarial must be a mapping"),
    ("out: 3\n", r"p.yaml:1: 'out' must be a path"),
    ("description: x\ntimeout_s: -5\n", r"p.yaml:2: timeout_s=-5 must be a positive integer"),
    ("timeout_s: true\n", r"timeout_s=True must be a positive integer"),
    ("timeout_s: 1.5\n", r"timeout_s=1.5 must be a positive integer"),
    ("- a\n- b\n", r"p.yaml:1: a profile must be a mapping"),
    ("defaults:\n  seed: 0\n notebooks: {}\n", r"p.yaml:3: malformed YAML"),
    ("defaults:\n  out_dir: /x\n", r"p.yaml:2: 'out_dir' is set by the runner"),
    ("gpu: maybe\n", r"p.yaml:1: gpu='maybe' must be"),
])
def test_profile_schema_errors_name_file_and_line(tmp_path, text, msg):
    with pytest.raises(ConfigError, match=msg):
        run.load_profile(write(tmp_path, text))


def test_malformed_yaml_is_one_line_and_exit_code_2(tmp_path, capsys):
    path = write(tmp_path, "defaults:\n  seed: [0\n")
    assert run.main(["run", "--profile", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "p.yaml:" in err and "malformed YAML" in err


def test_defaults_key_must_belong_to_a_selected_notebook(tmp_path):
    path = write(tmp_path, "defaults:\n  seed: 0\n  sede: 1\n")
    with pytest.raises(ConfigError, match=r"p.yaml:3: defaults key 'sede' is not a parameter of any selected"):
        run.run(path, out=str(tmp_path / "o"))
    # 'update_readme' belongs to 05 only: an error when neither --only nor the profile has 05.
    path = write(tmp_path, "defaults:\n  update_readme: false\nnotebooks:\n  04_adversarial: {}\n")
    with pytest.raises(ConfigError, match="defaults key 'update_readme'"):
        run.run(path, only=["04"], out=str(tmp_path / "o"))


def test_only_empty_is_rejected(capsys):
    assert run.main(["run", "--profile", "smoke", "--only", ""]) == 2
    assert "selects nothing" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="selects nothing"):
        run.select(run.notebook_paths(), [])


def test_preflight_catches_the_last_notebook_before_the_first_runs(tmp_path, capsys):
    # 02 runs first, 03 last: 03's declared cross-bound fails before 02 starts.
    path = write(tmp_path, "notebooks:\n  03_poisoning:\n    flip_rates: [0.1, 0.4]\n")
    out = tmp_path / "o"
    t0 = __import__("time").perf_counter()
    assert run.main(["run", "--profile", path, "--only", "02", "03", "--out", str(out)]) == 2
    assert __import__("time").perf_counter() - t0 < 30  # no notebook executed
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "notebook 03_poisoning: flip_rates=[0.1, 0.4]: 0.2 in flip_rates does not hold" in err
    assert not out.exists()
    # Ranges declared in CONSTRAINTS too, e.g. 04's jsma_cap, and cross-bounds n_at_train <= n_train.
    path = write(tmp_path, "notebooks:\n  04_adversarial:\n    n_at_train: 30000\n")
    with pytest.raises(ConfigError, match=r"n_at_train=30000, n_train=20000: n_at_train <= n_train does not hold"):
        run.run(path, only=["04"], out=str(out))
    path = write(tmp_path, "notebooks:\n  04_adversarial:\n    jsma_cap: 1.5\n")
    with pytest.raises(ConfigError, match=r"jsma_cap=1.5 is outside the allowed range"):
        run.run(path, only=["04"], out=str(out))


def test_constraints_are_read_from_the_validation_cell():
    c = run.notebook_constraints(run.NOTEBOOKS / "03_poisoning.ipynb")
    from threatlab import data, models

    # The literal choices stay in step with the library's registries.
    assert c["dataset"]["choices"] == data.names() and c["arch"]["choices"] == sorted(models.ARCHITECTURES)
    assert run.notebook_constraints(run.NOTEBOOKS / "00_literature.ipynb") == {}


def test_check_notebook_rules_and_cross_bounds():
    from threatlab import validate as v

    cons = {"eps": {"low": 0, "high": 1, "low_open": True}, "xs": {"type": "list", "nonempty": True,
            "items": {"low": 1, "integer": True}}, "mode": {"choices": ["a", "b"]},
            "__cross__": ["n <= m", ["len(xs) <= m", "one item per m"]]}
    ok = {"eps": 0.5, "xs": [1, 2], "mode": "a", "n": 1, "m": 2}
    assert v.check_notebook(ok, cons) is ok
    for bad, msg in (({"eps": 0.0}, r"eps=0.0 is outside"), ({"xs": []}, "non-empty"),
                     ({"xs": [1, 0]}, r"xs\[1\]=0 is outside"), ({"mode": "c"}, "choose one of"),
                     ({"n": 3}, r"n=3, m=2: n <= m does not hold"),
                     ({"xs": [1, 2, 3]}, r"len\(xs\) <= m does not hold \(one item per m\)")):
        with pytest.raises(ConfigError, match=msg):
            v.check_notebook({**ok, **bad}, cons)
    with pytest.raises(ConfigError, match="reads 'q', which is not a parameter"):
        v.check_notebook(ok, {"__cross__": ["q < 1"]})
    with pytest.raises(ConfigError, match="cannot be evaluated"):
        v.check_notebook(ok, {"__cross__": ["__import__('os')"]})


# ------------------------------------------------------- runs contained in --out

@pytest.fixture
def toy(tmp_path, monkeypatch):
    from toy_notebooks import write_toy

    folder = tmp_path / "nbs"
    prof = write_toy(folder)
    monkeypatch.setattr(run, "NOTEBOOKS", folder)
    return prof


@pytest.mark.notebooks
def test_readme_untouched_by_a_quick_run_into_another_out(tmp_path):
    readme = run.REPO / "README.md"
    before = readme.read_bytes()
    out = tmp_path / "o"
    run.run("quick", only=["05"], out=str(out), log=lambda m: None)
    assert readme.read_bytes() == before
    assert (out / "findings.md").exists() and (out / "executed" / "05_findings.ipynb").exists()
    assert not run.readme_allowed("quick", out, design_met=True)
    assert run.readme_allowed("quick", run.REPO / "figures", design_met=True)
    assert not run.readme_allowed("quick", run.REPO / "figures")  # a single run never meets the design
    assert not run.readme_allowed("smoke", run.REPO / "figures", design_met=True)


def test_a_run_never_writes_the_published_figures(tmp_path):
    """`python -m threatlab run --profile quick` is one seed: it resolves under build/, and
    --out figures/ is refused before anything runs."""
    with pytest.raises(ConfigError, match="published results"):
        run.run("quick", only=["00"], out=str(run.REPO / "figures"), log=lambda m: None)
    with pytest.raises(ConfigError, match="published results"):
        run.run("quick", only=["00"], out=str(run.REPO / "docs" / "x"), log=lambda m: None)
    assert run.scratch_out("quick", [0], ["mnist"]) == (run.REPO / "build" / "figures-quick-s0-mnist").resolve()


@pytest.mark.notebooks
def test_failed_notebook_one_line_previous_folder_kept(toy, tmp_path, capfd):
    out = tmp_path / "o"
    run.run(str(toy), out=str(out), log=lambda m: None)
    first = (out / "results" / "01_toy.json").read_bytes()
    # A killed atomic write inside the runner's own results/ (only names the runner
    # created are cleaned: see test_hardening's O08 tests for a user's .tmp files).
    (out / "results" / ".orphan.json.abc123.tmp").write_text("left by a killed write")
    Path(toy).write_text(Path(toy).read_text().replace("  01_toy: {}", "  01_toy:\n    value: -2.0"))
    with pytest.raises(run.RunFailed) as err:
        run.run(str(toy), out=str(out), log=lambda m: None)
    (line,) = [f.line() for f in err.value.failures]
    assert line.startswith("01_toy: cell ") and "ValueError: value=-2.0 made this point fail" in line
    assert f"(full traceback: {out / 'executed' / 'failed' / '01_toy.ipynb'})" in line
    assert (out / "executed" / "failed" / "01_toy.ipynb").exists()
    assert (out / "results" / "01_toy.json").read_bytes() == first  # the previous complete run stays
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
    assert not list(tmp_path.glob(".o.staging-*"))
    # The next good run cleans the orphan temporary file.
    Path(toy).write_text(Path(toy).read_text().replace("value: -2.0", "value: 3.0"))
    run.run(str(toy), out=str(out), log=lambda m: None)
    assert json.loads((out / "results" / "01_toy.json").read_text())["metrics"]["score"] == 3.0
    assert not list(out.rglob(".*.tmp"))


def test_second_run_into_a_locked_out_is_refused(toy, tmp_path):
    out = tmp_path / "o"
    with run.folder_lock(out):
        with pytest.raises(run.LockHeld, match=rf"--out {out} is being written by another run \(pid {os.getpid()}\)"):
            run.run(str(toy), out=str(out), log=lambda m: None)
    assert not out.exists()


@pytest.mark.notebooks
def test_killed_run_leaves_the_previous_complete_folder(toy, tmp_path):
    out = tmp_path / "o"
    run.run(str(toy), out=str(out), log=lambda m: None)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    Path(toy).write_text(Path(toy).read_text().replace("  01_toy: {}", "  01_toy:\n    value: 7.0\n    sleep_s: 60.0"))
    code = ("import sys; from pathlib import Path; from threatlab import run; "
            f"run.NOTEBOOKS = Path({str(run.NOTEBOOKS)!r}); "
            f"run.run({str(toy)!r}, out={str(out)!r}, log=lambda m: None)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(run.__file__).parents[1]), str(Path(__file__).parent)])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".o.staging-*/executed/*.ipynb")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".o.staging-*")), "the run never started"
    # A concurrent second run is refused while the first holds the lock.
    with pytest.raises(run.LockHeld):
        run.run(str(toy), out=str(out), log=lambda m: None)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel
    proc.wait()
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    Path(toy).write_text(Path(toy).read_text().replace("sleep_s: 60.0", "sleep_s: 0.0"))
    run.run(str(toy), out=str(out), log=lambda m: None)
    assert not list(tmp_path.glob(".o.staging-*"))
    assert json.loads((out / "results" / "01_toy.json").read_text())["metrics"]["score"] == 7.0


def test_swap_into_place_replaces_a_folder_whole(tmp_path):
    final, staging = tmp_path / "out", tmp_path / ".out.staging-1"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    run.swap_into_place(staging, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"] and not staging.exists()
    # A kill between the fallback's two renames: recover() restores the previous folder.
    old = tmp_path / ".out.old-99"
    final.rename(old)
    run.recover(final)
    assert (final / "new.txt").exists() and not old.exists()
