"""The built wheel works outside the checkout (issue 35): build it, install it into a
fresh venv in a temporary folder, and use it from a folder outside the repository.

No network: the new venv sees the test venv's packages through one .pth line naming
the test venv's site-packages. Python processes .pth files only in site directories, not
in folders a .pth line adds, so the editable install of this checkout (its own .pth in
the test venv) stays invisible there, which the test asserts. The wheel is built from a
copy of the sources the wheel needs, so the checkout gets no build/ or egg-info.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: Console commands run in the fresh venv, each with what its output must contain (exit 0).
#: The `threatlab audit --help` check joins this list when the audit command lands.
CONSOLE_COMMANDS: list[tuple[list[str], str]] = [
    (["--version"], "threatlab 0.1.0"),
    (["--help"], "sweep"),
    (["run", "--help"], "--profile"),
    (["sweep", "--help"], "--seeds"),
    (["audit", "--help"], "--model"),
]

ATTACK = textwrap.dedent("""
    import json, sys
    import torch
    from torch import nn
    import threatlab
    from threatlab import attacks, data, models, paths

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    x = torch.rand(12, 1, 4, 4)
    y = torch.randint(0, 3, (12,), dtype=torch.int32)
    res = attacks.fgsm(net, x, y, eps=0.3, batch_size=5)
    print(json.dumps({
        "file": threatlab.__file__,
        "same_as_registry": attacks.fgsm is attacks.get("fgsm"),
        "linf": float((res.x_adv - x).abs().max()),
        "n": int(res.success.numel()),
        "still_training": net.training,
        "cache": str(paths.cache_dir()), "data_cache": str(data.cache_dir()),
        "checkpoints": str(models.checkpoint_dir()),
        "checkout": paths.source_checkout() is not None,
        "sys_path": sys.path,
    }))
""")


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert p.returncode == 0, f"{cmd} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, console script, clean env, a working folder outside the repository)."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert REPO not in tmp.parents, "the temporary folder must lie outside the repository"
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "lib", src / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "THREATLAB_CACHE", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp / "home"), XDG_CACHE_HOME=str(tmp / "xdg"), THREATLAB_NO_PROGRESS="1",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        cwd=tmp, env=env)
    (wheel,) = dist.glob("threatlab-*.whl")

    target = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    py = target / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp, env=env).stdout.strip())
    (site / "_threatlab_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp, env=env)
    work = tmp / "work"
    work.mkdir()
    return py, target / "bin" / "threatlab", env, work


def test_wheel_ships_the_marker_and_the_console_script(installed):
    py, script, env, work = installed
    out = run([str(py), "-c", "import importlib.metadata as m, importlib.resources as r; "
               "print([e.value for e in m.entry_points(group='console_scripts', name='threatlab')]); "
               "print(r.files('threatlab').joinpath('py.typed').is_file()); print(m.version('threatlab'))"],
              cwd=work, env=env).stdout.split("\n")
    assert out[0] == "['threatlab.__main__:main']" and out[1] == "True" and out[2] == "0.1.0"
    assert script.is_file()


def test_installed_package_attacks_from_outside_the_checkout(installed):
    import json

    py, _, env, work = installed
    got = json.loads(run([str(py), "-c", ATTACK], cwd=work, env=env).stdout.strip().splitlines()[-1])
    venv_dir = py.parent.parent
    assert Path(got["file"]).is_relative_to(venv_dir), got["file"]  # the wheel, not the checkout
    # Neither the checkout nor its lib/ (the editable install's path) is importable there; the
    # dependencies' site-packages may lie inside the checkout (`make setup`'s .venv), so the
    # check is on the source folders, not on "anything under the repository".
    lib = (REPO / "lib").resolve()
    on_path = [Path(p).resolve() for p in got["sys_path"] if p]
    assert not any(q == REPO.resolve() or q.is_relative_to(lib) for q in on_path), got["sys_path"]
    assert got["same_as_registry"] and got["n"] == 12 and 0 < got["linf"] <= 0.3 + 1e-6
    assert got["still_training"]  # attacked in eval mode, given back in train mode
    assert not got["checkout"]
    user_cache = str(Path(env["XDG_CACHE_HOME"]) / "threatlab")
    assert got["cache"] == got["data_cache"] == user_cache and got["checkpoints"] == user_cache + "/models"


@pytest.mark.parametrize("args,expect", CONSOLE_COMMANDS, ids=[" ".join(a) for a, _ in CONSOLE_COMMANDS])
def test_console_commands(installed, args, expect):
    py, script, env, work = installed
    # `python -m threatlab` is the same main(): checked once, for --version
    for cmd in ([str(script), *args], *([[str(py), "-m", "threatlab", *args]] if args == ["--version"] else [])):
        p = run(cmd, cwd=work, env=env)
        assert expect in p.stdout, (cmd, p.stdout, p.stderr)


@pytest.mark.parametrize("cmd", [["run", "--profile", "quick"], ["sweep", "--seeds", "0"]])
def test_run_and_sweep_say_in_one_line_that_they_need_a_checkout(installed, cmd):
    _, script, env, work = installed
    p = run([str(script), *cmd], cwd=work, env=env, ok=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "needs a source checkout" in p.stderr and "Traceback" not in p.stderr
