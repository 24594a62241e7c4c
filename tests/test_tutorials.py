"""Course tutorials: kept outputs are nbval's reference, so they must be complete and honest.

`make test` runs nbval (lax mode) on every lesson: only cells whose first line is
`# NBVAL_CHECK_OUTPUT` are compared. Checked cells print only what every CPU computes
alike (counts, parameters, the lesson's claims as True/False with a margin); numbers
that depend on float rounding, which differs between CPU kinds (AVX2, AVX-512, ...),
are printed by unchecked cells that assert a range instead. The structural tests below
need no kernel; the last test proves the check has teeth: a copy of a lesson whose
stored checked output was altered fails, while an unmodified copy passes.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "notebooks" / "tutorials"
SANITIZE = TUTORIALS / "sanitize.cfg"
CHECK = "# NBVAL_CHECK_OUTPUT"
LESSONS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _checked(cell: dict) -> bool:
    return cell["cell_type"] == "code" and _source(cell).startswith(CHECK)


def test_there_are_five_lessons_and_the_syllabus_lists_each():
    assert len(LESSONS) >= 5, [p.name for p in LESSONS]
    readme = (TUTORIALS / "README.md").read_text()
    for p in LESSONS:
        assert p.name in readme, f"{p.name} is missing from notebooks/tutorials/README.md"
    for name in re.findall(r"\b\d\d_\w+\.ipynb\b", readme):
        assert (TUTORIALS / name).exists(), f"README.md names {name}, which does not exist"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_is_executed_and_checkable(path):
    nb = _read(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    # Executed top to bottom in one go: the stored outputs are the reference.
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} is not executed in order: {counts}"
    checked = [c for c in code if _checked(c)]
    assert len(checked) >= 2, f"{path.name} checks fewer than two outputs"
    for c in checked:
        assert any(o["output_type"] == "stream" and o["name"] == "stdout" for o in c["outputs"]), \
            f"checked cell without printed output in {path.name}:\n{_source(c)}"
    for c in code:
        for o in c["outputs"]:
            assert o["output_type"] != "error", f"{path.name} stores an error: {o.get('evalue')}"
            # nbval compares inline SVG text and rejects random ids; PNG only.
            assert "image/svg+xml" not in o.get("data", {}), f"{path.name} displays inline SVG"
            if o["output_type"] == "stream" and _checked(c):
                assert o["name"] == "stdout", f"checked cell writes to stderr in {path.name}"
    # A lesson states its goals first and ends with exercises.
    md = [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert "Learning goals" in md[0], f"{path.name}: the first cell must state the learning goals"
    assert "## Exercises" in md[-1], f"{path.name}: the last markdown cell must hold the exercises"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c["outputs"]), \
        f"{path.name} shows no figure"


def _head(nb: dict, marker: str) -> dict:
    """The notebook cut after the first checked cell whose source contains `marker`."""
    for i, c in enumerate(nb["cells"]):
        if _checked(c) and marker in _source(c):
            return {**nb, "cells": nb["cells"][:i + 1]}
    raise AssertionError(f"no checked cell mentions {marker!r}")


@pytest.mark.notebooks
def test_nbval_fails_when_a_checked_output_changes(tmp_path):
    # The cheapest lesson, cut after its first checked print (the data sizes): the same
    # check nbval does on the full lesson, in a few seconds. The altered copy expects
    # one more training image than the lesson prints.
    lesson = _read(TUTORIALS / "01_adversarial_examples.ipynb")
    head = _head(lesson, "train / test images")
    (tmp_path / "unchanged.ipynb").write_text(json.dumps(head))

    altered = json.loads(json.dumps(head))
    out = altered["cells"][-1]["outputs"][0]
    text = "".join(out["text"])
    assert "train / test images: 1500 /" in text, text
    out["text"] = text.replace("1500", "1501")
    (tmp_path / "altered.ipynb").write_text(json.dumps(altered))

    ok, bad = _nbval(tmp_path / "unchanged.ipynb"), _nbval(tmp_path / "altered.ipynb")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = bad.stdout + bad.stderr
    assert bad.returncode == 1, out
    # It fails on the checked print, by an output mismatch, not by a crash.
    assert re.search(r"^1 failed, \d+ passed", out, re.M), out
    assert "Cell outputs differ" in out and "mismatch 'stdout'" in out, out
    assert "train / test images" in out, out


def _nbval(path: Path) -> subprocess.CompletedProcess:
    """nbval (lax mode, the project's sanitize file) on one notebook, in a fresh pytest."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", path.name, "--nbval-lax", "--nbval-sanitize-with",
         str(SANITIZE), "-p", "no:cacheprovider", "-q", "--color=no"],
        cwd=path.parent, capture_output=True, text=True, timeout=600)
