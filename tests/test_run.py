"""The runner: profiles are checked against notebooks before anything executes."""
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
