"""threatlab.report.site: executed notebooks made fit to publish (deterministic, no
script, no machine paths) as the docs site's chapters, and the sources a build reads."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from threatlab.errors import ConfigError
from threatlab.report import site


def tiny_notebook(folder: Path, root: Path) -> Path:
    """A notebook named like a family notebook with what the export must handle: a
    parameters cell, a printed path under the checkout, a stderr warning, a cell whose
    output varies (tagged volatile)."""
    nb = new_notebook(cells=[
        new_markdown_cell("# 01 — A tiny family"),
        new_code_cell("seed: int = 0\nout_dir: str = 'out'\nprofile: str = 'interactive'",
                      metadata={"tags": ["parameters"]}),
        new_code_cell(f"print('results in', {str(root / 'figures')!r})\nprint('seed', seed)"),
        new_code_cell("import sys\nprint('WARN' + 'ED', file=sys.stderr)"),
        new_code_cell("import time\nprint('TO' + 'OK', time.perf_counter_ns(), 'ns')",
                      metadata={"tags": ["volatile"]}),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "01_model_extraction.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The tiny notebook executed twice by papermill (two runs, two timestamps)."""
    base = tmp_path_factory.mktemp("site_nb")
    root, src = base / "checkout", base / "src"
    src.mkdir()
    (root / "figures").mkdir(parents=True)
    path = tiny_notebook(src, root)
    runs = []
    for i in range(2):
        out = base / f"run{i}" / path.name
        out.parent.mkdir()
        papermill.execute_notebook(str(path), str(out), parameters={"seed": 3, "profile": "quick"},
                                   kernel_name="python3", progress_bar=False, cwd=str(src), log_output=False)
        runs.append(out)
    return {"root": root, "src": src, "runs": runs}


def test_two_executions_give_identical_chapters_without_run_details(executed, tmp_path):
    # Both executions on this machine (identical bytes across CPU kinds are not expected).
    a, b = executed["runs"]
    assert a.read_bytes() != b.read_bytes()          # papermill's times and ids differ ...
    for run, d in ((a, "x"), (b, "y")):
        site.export_chapters([run], tmp_path / d, root=executed["root"])
    x, y = (tmp_path / d / a.name for d in ("x", "y"))
    assert x.read_bytes() == y.read_bytes()          # ... the published chapter does not
    text = x.read_text()
    nb = json.loads(text)
    assert "papermill" not in nb["metadata"] and "seed 3" in text      # injected, output kept
    assert "WARNED" not in text and "TOOK" not in text and site.VOLATILE_NOTE.strip() in text
    assert str(executed["root"]) not in text and "results in figures" in text


def test_export_removes_only_the_stale_chapters_it_wrote_and_refuses_bad_input(executed, tmp_path):
    out = tmp_path / "chapters"
    out.mkdir()
    (out / "09_gone.ipynb").write_text("{}")       # a chapter of a notebook that no longer exists
    written = site.export_chapters(executed["runs"][:1], out, root=executed["root"])
    assert [p.name for p in written] == ["01_model_extraction.ipynb"]
    # A folder of chapters only (written before the marker existed) is threatlab's: the
    # stale chapter goes, and the marker now lists what this export wrote.
    assert sorted(p.name for p in out.iterdir()) == [site.CHAPTERS_MARKER, "01_model_extraction.ipynb"]
    assert site.owned_chapters(out) == {"01_model_extraction.ipynb"}
    # Files threatlab did not write are never touched: a folder holding them is refused in
    # one line, before anything is written ...
    (out / "notes.ipynb").write_text("{}")
    (out / site.CHAPTERS_MARKER).unlink()
    (out / "03_mine.ipynb").write_text("{}")
    with pytest.raises(ConfigError, match=r"holds files threatlab did not write .* --force") as exc:
        site.export_chapters(executed["runs"][:1], out, root=executed["root"])
    assert "\n" not in str(exc.value)
    # ... and with force the chapters are added beside them, removing nothing.
    site.export_chapters(executed["runs"][:1], out, root=executed["root"], force=True)
    assert sorted(p.name for p in out.iterdir()) == [site.CHAPTERS_MARKER, "01_model_extraction.ipynb",
                                                     "03_mine.ipynb", "notes.ipynb"]
    # With a marker, only the chapters it lists are the export's to remove.
    (out / site.CHAPTERS_MARKER).write_text(json.dumps({"chapters": ["01_model_extraction.ipynb",
                                                                     "02_model_inversion.ipynb"]}))
    (out / "02_model_inversion.ipynb").write_text("{}")
    site.export_chapters(executed["runs"][:1], out, root=executed["root"])
    assert sorted(p.name for p in out.iterdir()) == [site.CHAPTERS_MARKER, "01_model_extraction.ipynb",
                                                     "03_mine.ipynb", "notes.ipynb"]
    (out / site.CHAPTERS_MARKER).write_text("{not json")
    with pytest.raises(ConfigError, match="does not read as threatlab's list of chapters"):
        site.export_chapters(executed["runs"][:1], out, root=executed["root"])
    with pytest.raises(ConfigError, match=r"notebooks=\[\] is empty"):
        site.export_chapters([], out)
    with pytest.raises(ConfigError, match="is not an .ipynb file"):
        site.export_chapters([tmp_path / "x.txt"], out)


def test_cli(executed, tmp_path, capsys):
    out = tmp_path / "c"
    assert site.main(["--executed", str(executed["runs"][0].parent), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [site.CHAPTERS_MARKER, "01_model_extraction.ipynb"]
    assert site.main(["--executed", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_prepare_uses_executed_chapters_and_shows_the_others_as_committed(tmp_path):
    nbs, docs = tmp_path / "notebooks", tmp_path / "docs"
    (nbs / "tutorials").mkdir(parents=True)
    (docs / "chapters").mkdir(parents=True)
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nbformat.write(new_notebook(cells=[new_markdown_cell(f"# {name}"),
                                           new_code_cell("x = 1", metadata={"tags": ["parameters"]})]),
                       str(nbs / name))
    executed = new_notebook(cells=[new_markdown_cell("# 01"), new_code_cell(
        "x = 1", outputs=[new_output("stream", name="stdout", text="EXECUTED\n")])])
    nbformat.write(executed, str(docs / "chapters" / "01_a.ipynb"))
    nbformat.write(new_notebook(cells=[new_markdown_cell("# lesson")]), str(nbs / "tutorials" / "01_t.ipynb"))
    (docs / "_generated" / "chapters").mkdir(parents=True)
    (docs / "_generated" / "chapters" / "07_old.ipynb").write_text("{}")   # from an earlier build
    written = site.prepare(docs, notebooks_dir=nbs)
    assert [p.relative_to(docs).as_posix() for p in written] == [
        "_generated/chapters/01_a.ipynb", "_generated/chapters/02_b.ipynb", "_generated/tutorials/01_t.ipynb"]
    assert "EXECUTED" in written[0].read_text()
    b = nbformat.read(str(written[1]), as_version=4)
    assert [c.source for c in b.cells[:2]] == ["# 02_b.ipynb", site.UNEXECUTED_NOTE]
    assert b.cells[2].metadata["tags"] == ["parameters", site.FOLDED_TAG]       # folded, not removed
    nbformat.validate(b)
    assert not (docs / "_generated" / "chapters" / "07_old.ipynb").exists()


def test_sanitize_drops_run_details_and_relativises_checkout_paths(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    r = str(root.resolve())
    cell = new_code_cell(f"out_dir = '{r}/figures'", execution_count=4,
                         metadata={"tags": ["injected-parameters"], "execution": {"iopub.status.idle": "t"},
                                   "papermill": {"duration": 1.5}})
    cell.id = "a1b2c3d4"
    cell.outputs = [new_output("stream", name="stdout", text=f"{r}/figures {r}2/other {r}. {r}\n"),
                    new_output("stream", name="stderr", text="warning\n")]
    nb = new_notebook(cells=[cell], metadata={"papermill": {"start_time": "t0"},
                                              "kernelspec": {"name": "python3", "display_name": "Python 3"}})
    out = site.sanitize(nb, root=root)
    assert dict(out.metadata) == {"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    (c,) = out.cells
    assert c.id == "injected-parameters" and dict(c.metadata) == {"tags": ["injected-parameters"]}
    assert c.source == "out_dir = 'figures'" and c.execution_count == 4
    assert [o["text"] for o in c.outputs] == [f"figures {r}2/other .. .\n"]
    assert nb.cells[0].id == "a1b2c3d4" and len(nb.cells[0].outputs) == 2   # the input is untouched


def test_html_and_markdown_outputs_cannot_run_script_in_a_readers_browser():
    import base64
    import re

    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    evil = '<script>alert("s")</script><img src="x.png" onerror="alert(\'e\')"><a href="javascript:alert(1)">j</a>'
    cell = new_code_cell("df", outputs=[
        new_output("display_data", data={"text/html": "<table class='dataframe' border='1'><thead><tr><th>eps</th>"
                                                      "</tr></thead><tbody><tr><td>0.3</td></tr></tbody></table>"
                                                      + evil, "text/plain": "df"}),
        new_output("display_data", data={"text/markdown": "**bold** " + evil, "text/plain": "md"}),
        new_output("display_data", data={"image/svg+xml": '<svg xmlns="http://www.w3.org/2000/svg"><script>'
                                                          'alert("v")</script><rect width="1" height="1"/></svg>',
                                         "text/plain": "svg"}),
        new_output("display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "fig"}),
        new_output("display_data", data={"application/javascript": "alert(2)", "text/plain": "js"}),
    ])
    out = site.sanitize(new_notebook(cells=[cell]))
    shown = json.dumps([o.get("data", {}) for o in out.cells[0].outputs])
    low = shown.lower()
    assert "<script" not in low and "onerror" not in low and "javascript:" not in low and "alert(" not in low
    mimes = [set(o.get("data", {})) for o in out.cells[0].outputs]
    assert mimes[2] == {"text/html", "text/plain"} and mimes[4] == {"text/plain"}   # SVG as <img>, no script
    assert 'src=\\"data:image/svg+xml;base64,' in shown
    # What outputs are for stays: the table, the markdown's markup, both images.
    html = out.cells[0].outputs[0]["data"]["text/html"]
    assert re.search(r'<table (border="1" class="dataframe"|class="dataframe" border="1")>', html)
    assert "<td>0.3</td>" in html and "<strong>bold</strong>" in shown and 'src=\\"x.png\\"' in shown
    assert out.cells[0].outputs[3]["data"]["image/png"] == base64.b64encode(png).decode()
