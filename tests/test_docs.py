"""threatlab.report.docs: executed notebooks as self-contained, script-free,
deterministic HTML pages, and the index linking notebook -> findings -> figures."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from threatlab.report import docs
from threatlab.report.plotting import save_figure

# A 1x1 PNG a markdown cell links to (embedded in the page, not linked).
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def tiny_notebook(folder: Path, root: Path) -> Path:
    """A notebook named like a family notebook with what the export must handle: a
    parameters cell, a printed path under the checkout, a matplotlib figure, a stderr
    warning, a cell whose output varies (tagged volatile), a markdown image."""
    (folder / "pixel.png").write_bytes(PIXEL)
    nb = new_notebook(cells=[
        new_markdown_cell("# 01 — A tiny family\n\nSee the picture: ![pixel](pixel.png)"),
        new_code_cell("seed: int = 0\nout_dir: str = 'out'\nprofile: str = 'interactive'",
                      metadata={"tags": ["parameters"]}),
        new_code_cell(f"print('results in', {str(root / 'figures')!r})\nprint('seed', seed)"),
        new_code_cell("import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n"
                      "from IPython.display import Image, display\nimport io\n"
                      "fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1], [1, 0])\n"
                      "buf = io.BytesIO(); fig.savefig(buf, format='png', metadata={'Software': None})\n"
                      "display(Image(buf.getvalue()))"),
        new_code_cell("import sys, warnings\nprint('WARN' + 'ED', file=sys.stderr)"),
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
    base = tmp_path_factory.mktemp("docs_nb")
    root = base / "checkout"
    src = base / "src"
    src.mkdir()
    (root / "figures").mkdir(parents=True)
    path = tiny_notebook(src, root)
    runs = []
    for i in range(2):
        out = base / f"run{i}" / path.name
        out.parent.mkdir()
        papermill.execute_notebook(str(path), str(out), parameters={"seed": 3, "profile": "quick"},
                                   kernel_name="python3", progress_bar=False, cwd=str(src),
                                   log_output=False)
        runs.append(out)
    return {"root": root, "src": src, "runs": runs}


def test_two_executions_give_identical_html(executed, tmp_path):
    # Both executions on this machine (identical bytes across CPU kinds are not expected).
    a, b = executed["runs"]
    assert a.read_bytes() != b.read_bytes()          # papermill's times and ids differ ...
    pages = [docs.notebook_html(p, root=executed["root"], source_dir=executed["src"])
             for p in (a, b)]
    assert pages[0] == pages[1]                      # ... the published page does not
    # and exporting the same executed notebook twice, through files, gives the same bytes
    for d in ("x", "y"):
        docs.export([a], tmp_path / d, figures_dir=executed["root"] / "figures",
                    root=executed["root"], source_dir=executed["src"])
    for name in ("01_model_extraction.html", "index.html"):
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes()


def test_page_is_self_contained_without_scripts_or_run_details(executed):
    a = executed["runs"][0]
    page = docs.notebook_html(a, root=executed["root"], source_dir=executed["src"])
    raw = json.loads(a.read_text())
    assert "WARNED" in a.read_text() and "TOOK" in a.read_text()   # in the executed copy
    assert "<script" not in page.lower() and 'src="http' not in page and "href=\"http" not in page
    assert page.count("data:image/png;base64,") == 2        # the figure and the markdown image
    assert base64.b64encode(PIXEL).decode() in page
    assert "seed 3" in page                                  # parameters injected, output kept
    assert raw["metadata"]["papermill"]["end_time"] not in page
    assert "iopub" not in page and "duration" not in page
    assert "WARNED" not in page                              # stderr is not published
    assert "TOOK" not in page and docs.VOLATILE_NOTE.strip() in page
    assert str(executed["root"]) not in page and "results in figures" in page


def test_index_links_notebook_findings_figures(executed, tmp_path):
    root = executed["root"]
    figures = tmp_path / "out" / "figures"
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, "01_transfer_from_substitute", figures)
    results = figures / "results"
    results.mkdir()
    (results / "01_model_extraction.json").write_text(json.dumps(
        {"notebook": "01_model_extraction",
         "evidence": {"F04": {"transfer_success": [0.2, 0.6], "noise_success": 0.05,
                              "n_examples": 500, "eps": 0.3, "noise_linf_max": 0.3}}}))
    docs_dir = tmp_path / "out" / "docs"
    docs_dir.mkdir()
    (docs_dir / "09_gone.html").write_text("stale")             # a notebook that no longer exists
    (docs_dir / "notes.html").write_text("not a page")
    written = docs.export(executed["runs"][:1], docs_dir, figures_dir=figures, root=root,
                          source_dir=executed["src"])
    assert [p.name for p in written] == ["01_model_extraction.html", "index.html"]
    assert sorted(p.name for p in docs_dir.iterdir()) == ["01_model_extraction.html", "index.html",
                                                         "notes.html"]
    index = (docs_dir / "index.html").read_text()
    assert "<script" not in index and "(quick profile)" in index
    assert '<a href="01_model_extraction.html">01 — A tiny family</a>' in index
    rows = {line.split("</td>")[0].split("<td>")[-1]: line for line in index.splitlines()
            if line.startswith("<tr><td>F0")}
    assert sorted(rows) == ["F01", "F02", "F03", "F04"]
    # the verdict is the finding's own judge on that results file, as 05_findings gives it
    from threatlab.report import findings, results as res
    v = findings.get("F04").judge(res.load_all(figures))
    assert v.status != findings.NOT_RUN and v.numbers, v.note
    assert f'class="{v.status.replace(" ", "-")}">{v.status}</span>' in rows["F04"]
    assert html.escape(findings.fmt_numbers(v.numbers)) in rows["F04"]
    assert '<img src="../figures/01_transfer_from_substitute.png"' in rows["F04"]
    assert "not run" in rows["F01"] and "<img" not in rows["F01"]     # no figure, no image
    assert 'href="../figures/findings.md"' in index


def test_cli_and_bad_input(executed, tmp_path, capsys):
    folder = executed["runs"][0].parent
    out = tmp_path / "site"
    assert docs.main(["--executed", str(folder), "--out", str(out),
                      "--figures", str(tmp_path)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["01_model_extraction.html", "index.html"]
    assert docs.main(["--executed", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(docs.ConfigError, match="notebooks=\\[\\] is empty"):
        docs.export([], out)
    with pytest.raises(docs.ConfigError, match="is not an .ipynb file"):
        docs.export([tmp_path / "x.txt"], out)


def test_index_takes_a_sweeps_verdicts_per_dataset(executed, tmp_path):
    """The sweep's publish step passes its aggregates (one per data set) instead."""
    from threatlab.report import findings

    def cond(m):
        return findings.ConditionSummary("ratio at 0.80", "ratio", ">=", 1.5, "log", 5, (m, m - 0.1, m + 0.1),
                                         (2.0, 1.8, 2.2), 1, False, "in reach", "probs 200 queries")

    agg = [findings.Aggregate("F02", ds, st, 5, k, 0, 0, (cond(m),), (), {"gap": (0.1, 0.0, 0.2)})
           for ds, st, k, m in (("mnist", findings.SUPPORTED, 5, 0.3),
                                ("fashion_mnist", findings.INCONCLUSIVE, 3, 0.05))]
    docs.export(executed["runs"][:1], tmp_path / "d", figures_dir=tmp_path, root=executed["root"],
                source_dir=executed["src"], verdicts={"F02": agg})
    index = (tmp_path / "d" / "index.html").read_text()
    (row,) = [line for line in index.splitlines() if line.startswith("<tr><td>F02")]
    assert ('mnist: <span class="supported">supported</span><br>fashion_mnist: '
            '<span class="inconclusive">inconclusive</span>') in row
    assert "margin 0.3 [0.2, 0.4]" in row and "margin 0.05 [-0.05, 0.15]" in row and "gap.0 = 0.1" in row
    (f01,) = [line for line in index.splitlines() if line.startswith("<tr><td>F01")]
    assert '<span class="not-run">not run</span>' in f01


def test_sanitize_drops_run_details_and_relativises_checkout_paths(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    r = str(root.resolve())
    cell = new_code_cell(f"out_dir = '{r}/figures'", execution_count=4,
                         metadata={"tags": ["injected-parameters"], "execution": {"iopub.status.idle": "t"},
                                   "papermill": {"duration": 1.5}})
    cell.id = "a1b2c3d4"
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text=f"{r}/figures {r}2/other {r}. {r}\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="warning\n")]
    nb = new_notebook(cells=[cell], metadata={"papermill": {"start_time": "t0"},
                                              "kernelspec": {"name": "python3", "display_name": "Python 3"}})
    out = docs.sanitize(nb, root=root)
    assert dict(out.metadata) == {"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    (c,) = out.cells
    assert c.id == "injected-parameters" and dict(c.metadata) == {"tags": ["injected-parameters"]}
    assert c.source == "out_dir = 'figures'" and c.execution_count == 4
    assert [o["text"] for o in c.outputs] == [f"figures {r}2/other .. .\n"]
    assert nb.cells[0].id == "a1b2c3d4" and len(nb.cells[0].outputs) == 2   # the input is untouched


def test_plumbing_cells_tagged_remove_input_show_only_their_output(tmp_path):
    # Readers of the pages see the experiment, not the validation or saving code: a cell
    # tagged remove-input keeps its output and loses its source; remove-cell loses both.
    nb = new_notebook(cells=[
        new_code_cell("PLUMB" + "ING = 1\nprint('shown ' + 'output')", metadata={"tags": ["remove-input"]},
                      outputs=[nbformat.v4.new_output("stream", name="stdout", text="shown output\n")]),
        new_code_cell("HID" + "DEN_CELL = 2", metadata={"tags": ["remove-cell"]},
                      outputs=[nbformat.v4.new_output("stream", name="stdout", text="gone too\n")]),
        new_code_cell("VISI" + "BLE = 3"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "01_model_extraction.ipynb"
    nbformat.write(nb, str(path))
    page = docs.notebook_html(path, root=tmp_path, source_dir=tmp_path)
    assert "shown output" in page and "VISIBLE" in page
    assert "PLUMBING" not in page and "HIDDEN_CELL" not in page and "gone too" not in page
