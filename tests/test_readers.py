"""What a reader of the notebooks sees (issue #33): each family notebook names the
survey section it follows, every figure names its data set and model, no internal
vocabulary, plumbing cells hidden by tag, and every lesson has its instructors'
solutions. Structural checks on the stored notebooks: no kernel."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RESEARCH = sorted(NOTEBOOKS.glob("0[0-5]_*.ipynb"))
FAMILIES = [p for p in RESEARCH if p.name[:2] in ("01", "02", "03", "04")]
TUTORIALS = NOTEBOOKS / "tutorials"
LESSONS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", FAMILIES, ids=lambda p: p.stem)
def test_family_notebook_opens_with_the_survey_section_it_follows(path):
    first = source(cells(path)[0])
    assert "Survey section:" in first.split("\n\n")[1] and "1911.12562" in first, first[:300]


@pytest.mark.parametrize("path", RESEARCH, ids=lambda p: p.stem)
def test_every_figure_is_captioned_and_no_internal_words(path):
    text = "\n".join(source(c) for c in cells(path))
    calls = re.findall(r"plotting\.save_figure\((.*?)\)\n", text, re.S)
    assert calls, f"{path.name} saves no figure"
    for call in calls:
        assert "caption=" in call, f"{path.name}: a figure without its data set and model: {call[:80]}"
    words = re.findall(r"(?i)\bregister v?\d?\b|\bv[123]\b", text) + re.findall(r"FINDINGS\.md", text)
    assert not words, f"{path.name} shows internal vocabulary to readers: {words}"


@pytest.mark.parametrize("path", RESEARCH, ids=lambda p: p.stem)
def test_plumbing_cells_are_hidden_by_tag(path):
    for c in cells(path):
        tags = c.get("metadata", {}).get("tags", [])
        if "parameters" in tags:
            assert "hide-input" in tags, f"{path.name}: the parameters cell is not tagged hide-input"
        if c["cell_type"] == "code" and re.search(r"\bv\.(params|check_notebook)\(", source(c)):
            assert {"remove-input", "remove-cell"} & set(tags), f"{path.name}: a validation cell is shown"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_has_solutions_for_each_exercise_outside_the_outputs_check(lesson):
    sol = TUTORIALS / "instructors" / lesson.name.replace(".ipynb", "_solutions.ipynb")
    assert sol.exists(), f"no solutions for {lesson.name}"
    exercises = source([c for c in cells(lesson) if c["cell_type"] == "markdown"][-1]).split("## Exercises", 1)[1]
    n = len(re.findall(r"^\d+\. ", exercises, re.M))
    sc = cells(sol)
    answered = [int(m) for c in sc if c["cell_type"] == "markdown" for m in re.findall(r"^## Exercise (\d+)", source(c))]
    assert answered == list(range(1, n + 1)), (lesson.name, n, answered)
    code = [c for c in sc if c["cell_type"] == "code"]
    assert f"../{lesson.name}" in source(code[0])  # runs the lesson it answers
    assert not any(source(c).startswith("# NBVAL_CHECK_OUTPUT") for c in code)
    # Stored executed, without errors, so an instructor can read them without running them.
    assert all(c["execution_count"] for c in code)
    assert not any(o["output_type"] == "error" for c in code for o in c["outputs"])
