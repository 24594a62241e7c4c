"""The readers' view: executed notebooks as self-contained HTML pages, and an index.

`export` turns each executed notebook (papermill's copy, outputs included) into
``docs/<notebook>.html`` and writes ``docs/index.html``, which links each notebook to the
findings it judges and to their figures. A reader needs a browser and nothing else:

- self-contained: figures are the notebooks' own PNG outputs, base64-embedded, and
  images a markdown cell links to are embedded too; the CSS is inlined.
- no JavaScript: the page loads no script (no require.js, MathJax, Mermaid or widget
  manager; formulas in markdown read as their TeX source), and what a notebook's code
  printed cannot add one: HTML and markdown outputs are sanitized with nh3 (Ammonia),
  which keeps tables, text markup and embedded images and drops scripts, event
  handlers, styles and javascript: links; SVG outputs are shown as images (an SVG drawn
  through ``<img>`` runs no script).
- deterministic bytes, like the figures: what differs between two runs of the same
  code on one machine is dropped before rendering: papermill's start / end times and
  durations, the kernel's per-cell execution timestamps, every other cell and notebook
  metadata key except ``tags``, ``kernelspec`` and ``language_info``, and stderr streams
  (warnings from libraries, progress bars). Absolute paths inside the checkout are
  written relative to it (``/home/u/threatlab/figures`` -> ``figures``), so the pages do
  not depend on where the repository was cloned. A cell whose output itself varies run
  to run (a wall time, "cached" vs "trained") is tagged ``volatile`` in the notebook:
  its outputs are replaced by one fixed line naming where the varying numbers live.

    $ python -m threatlab.report.docs --executed build/executed/quick --out docs
"""
from __future__ import annotations

import argparse
import copy
import html
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError
from ..io import atomic_write
from . import findings, results

REPO = Path(__file__).resolve().parents[3]
NOTEBOOKS = REPO / "notebooks"

#: Cell tag: this cell's outputs differ between runs of the same code; not published.
VOLATILE_TAG = "volatile"
VOLATILE_NOTE = ("[output not published: it varies run to run (wall times, cache hits); "
                 "see results/*.run.json]\n")

#: Pages are named like the notebooks: two digits, an underscore, a name.
_PAGE = re.compile(r"^\d\d_[A-Za-z0-9_]+\.html$")

# JupyterLab's template with every script block emptied (nothing is fetched from a CDN
# or run) and its 270 kB of inlined application CSS replaced by a few rules for the
# classes the page uses (the pygments highlighting CSS stays).
_CSS = """
:root{--jp-cell-editor-background:#f6f8fa;--jp-cell-editor-active-background:#fff;
 --jp-mirror-editor-comment-color:#408080;--jp-mirror-editor-error-color:#f00;
 --jp-mirror-editor-keyword-color:#008000;--jp-mirror-editor-number-color:#080;
 --jp-mirror-editor-operator-color:#a2f;--jp-mirror-editor-punctuation-color:#05a;
 --jp-mirror-editor-string-color:#ba2121;--jp-mirror-editor-variable-color:#212121}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:62em;margin:1.5em auto;
 padding:0 1em;line-height:1.45;color:#1f2328;background:#fff}
.jp-Cell{margin:.5em 0}.jp-Collapser,a.anchor-link{display:none}
.jp-InputArea,.jp-OutputArea-child{display:flex;gap:.6em;align-items:flex-start}
.jp-InputPrompt,.jp-OutputPrompt{flex:0 0 5.5em;text-align:right;font:.75em monospace;
 color:#6e7781;padding-top:.5em}
.jp-MarkdownCell .jp-InputPrompt{visibility:hidden}
.jp-InputArea-editor,.jp-OutputArea-output,.jp-RenderedMarkdown{flex:1;min-width:0;overflow-x:auto}
.jp-InputArea-editor{background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px}
.jp-InputArea-editor pre,.jp-RenderedText pre{margin:0;padding:.35em .6em;font-size:.82em;
 white-space:pre-wrap;word-break:break-word}
.jp-OutputArea-output img{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #d0d7de;padding:.2em .5em}
code{background:#f6f8fa;padding:0 .2em;border-radius:3px}
"""
_TEMPLATE = "threatlab_static.html.j2"
_TEMPLATE_SOURCE = """{%- extends 'lab/index.html.j2' -%}
{%- block notebook_css -%}<style type="text/css">""" + _CSS + """</style>{%- endblock notebook_css -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block data_javascript -%}{%- endblock data_javascript -%}
{%- block data_widget_view -%}{%- endblock data_widget_view -%}
{%- block footer_js -%}{%- endblock footer_js -%}
"""

_KEEP_NB_META = ("kernelspec", "language_info")
_TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex")


def _join(text: str | list[str]) -> str:
    return "".join(text) if isinstance(text, list) else text


def _relative_paths(text: str, root: str) -> str:
    """Paths under the checkout `root` written relative to it ('<root>/figures' ->
    'figures', '<root>' -> '.'); '<root>2/x', another folder, is left alone."""
    return re.sub(re.escape(root) + r"(?:(/)|(?![\w-]|\.\w))",
                  lambda m: "" if m.group(1) else ".", text)


#: What an HTML output may keep: nh3's default tags (text markup, lists, tables, img)
#: and attributes, plus `class` (pandas' tables) and the table attributes pandas writes.
_HTML_ATTRIBUTES = {"*": {"class", "title"}, "table": {"border"}}
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*$")


def _keep_attribute(tag: str, attr: str, value: str) -> str | None:
    # data: URLs only as embedded images (what matplotlib and the export embed); a
    # data: link could carry a page of its own.
    if value.strip().lower().startswith("data:"):
        return value if tag == "img" and attr == "src" and _DATA_IMAGE.match(value.strip()) else None
    return value


def clean_html(text: str) -> str:
    """An HTML fragment from a notebook output made safe to show in a reader's browser:
    no script, no event handler (``onerror=``...), no style, no javascript: URL; tables,
    text markup and images (http(s) or embedded data:image) stay."""
    import nh3

    attributes = {tag: set(a) for tag, a in nh3.ALLOWED_ATTRIBUTES.items()}
    for tag, extra in _HTML_ATTRIBUTES.items():
        attributes[tag] = attributes.get(tag, set()) | extra
    return nh3.clean(text, attributes=attributes, attribute_filter=_keep_attribute,
                     url_schemes={"http", "https", "mailto", "data"},
                     clean_content_tags={"script", "style", "noscript", "template", "iframe", "object"})


def _markdown_html(text: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    return markdown2html_mistune(text)


def _safe_output_data(data: dict[str, Any]) -> None:
    """In place: the outputs a page renders as markup made safe (see `clean_html`).

    text/html is sanitized; text/markdown is rendered here and sanitized as HTML (raw
    HTML inside markdown passes a markdown renderer untouched); an SVG becomes an
    embedded <img> unless the output has HTML of its own to show."""
    import base64

    if "text/markdown" in data:
        md = data.pop("text/markdown")
        data.setdefault("text/html", _markdown_html(_join(md)))
    if "image/svg+xml" in data:
        svg = _join(data.pop("image/svg+xml"))
        if "text/html" not in data:
            b64 = base64.b64encode(svg.encode("utf-8")).decode("ascii")
            data["text/html"] = f'<img src="data:image/svg+xml;base64,{b64}" alt="figure">'
    if "text/html" in data:
        data["text/html"] = clean_html(_join(data["text/html"]))
    # Never rendered by the script-free template; dropped so nothing depends on that.
    for mime in [m for m in data if "javascript" in m or m.startswith("application/vnd.jupyter.widget")]:
        del data[mime]


def sanitize(nb: Any, *, root: str | os.PathLike = REPO) -> Any:
    """A copy of the executed notebook `nb` (nbformat v4) without what varies run to run.

    See the module docstring for what is dropped. Execution counts stay: the same cells
    run in the same order get the same counts.
    """
    import nbformat

    root = str(Path(root).resolve())
    out = copy.deepcopy(nb)
    out.metadata = type(out.metadata)({k: out.metadata[k] for k in _KEEP_NB_META
                                       if k in out.metadata})
    for cell in out.cells:
        tags = list(cell.metadata.get("tags", []))
        if "injected-parameters" in tags:
            cell.id = "injected-parameters"      # papermill draws a random id per run
        cell.metadata = type(cell.metadata)({"tags": tags} if tags else {})
        cell.source = _relative_paths(_join(cell.source), root)
        if cell.cell_type != "code":
            continue
        if VOLATILE_TAG in tags:
            cell.outputs = ([nbformat.v4.new_output("stream", name="stdout", text=VOLATILE_NOTE)]
                            if cell.outputs else [])
            continue
        kept = []
        for o in cell.outputs:
            if o.get("output_type") == "stream":
                if o.get("name") == "stderr":
                    continue
                o["text"] = _relative_paths(_join(o["text"]), root)
            elif "data" in o:
                for mime in _TEXT_MIMES:
                    if mime in o["data"]:
                        o["data"][mime] = _relative_paths(_join(o["data"][mime]), root)
                _safe_output_data(o["data"])
                o["metadata"] = {k: v for k, v in o.get("metadata", {}).items()
                                 if k in ("image/png", "image/jpeg", "image/svg+xml")}
            elif o.get("output_type") == "error":
                o["traceback"] = [_relative_paths(t, root) for t in o.get("traceback", [])]
            kept.append(o)
        cell.outputs = kept
    return out


#: Cell tags that hide plumbing from readers (the Jupyter Book names, so a notebook
#: tagged for these pages is tagged for a book too): the input, the outputs, or the cell.
HIDE_INPUT_TAG, HIDE_OUTPUT_TAG, HIDE_CELL_TAG = "remove-input", "remove-output", "remove-cell"


def _exporter():
    import jinja2
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    # nbconvert's own preprocessor: it marks the source as removed (the lab template then
    # draws no input area) rather than us editing cells by hand.
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT_TAG}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {HIDE_OUTPUT_TAG}
    c.TagRemovePreprocessor.remove_cell_tags = {HIDE_CELL_TAG}
    return HTMLExporter(config=c, template_file=_TEMPLATE, theme="light", embed_images=True,
                        extra_loaders=[jinja2.DictLoader({_TEMPLATE: _TEMPLATE_SOURCE})])


def notebook_html(path: str | os.PathLike, *, root: str | os.PathLike = REPO,
                  source_dir: str | os.PathLike = NOTEBOOKS) -> str:
    """One executed notebook as a self-contained, script-free, deterministic HTML page.

    `source_dir`: the folder markdown image links are relative to (the source notebooks'
    folder, papermill's working directory), not the executed copy's.
    """
    import nbformat

    path = Path(path)
    nb = sanitize(nbformat.read(str(path), as_version=4), root=root)
    resources = {"metadata": {"name": path.stem, "path": str(source_dir)}}
    body, _ = _exporter().from_notebook_node(nb, resources=resources)
    return body if body.endswith("\n") else body + "\n"


def _title(path: Path) -> str:
    """The notebook's first markdown heading, without the '#'."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in _join(cell.source).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def _profile(path: Path) -> str | None:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return nb.metadata.get("papermill", {}).get("parameters", {}).get("profile")


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def _conditions(v: Any) -> str:
    # A run verdict lists its conditions with their margins; an aggregate its conditions'
    # intervals over seeds, G0 state and baseline (findings.fmt_condition).
    conds = getattr(v, "conditions", ())
    if conds and isinstance(conds[0], findings.ConditionSummary):
        return "; ".join(findings.fmt_condition(c) for c in conds)
    return "; ".join(f"{c.name} {c.op} {c.bar:.3g}: {c.value:.3g} (margin {c.margin:.3g})" for c in conds)


def index_html(pages: list[tuple[Path, str]], docs_dir: Path, figures_dir: Path,
               profile: str | None, verdicts: Mapping[str, Any] | None = None) -> str:
    """docs/index.html: notebook -> the findings it judges (verdict, numbers) -> figures.

    `pages` lists (executed notebook, its page's file name). `verdicts` maps a finding
    id to a verdict (`findings.Verdict`, or `findings.Aggregate`) or a list of them (one
    per data set); by default each finding is judged from the results files in
    `figures_dir`/results, as 05_findings judges one run.
    """
    e = html.escape
    if verdicts is None:
        verdicts = {f.id: v for f, v in findings.judge_all(results.load_all(figures_dir))}
    by_nb: dict[str, list[findings.Finding]] = {}
    for f in findings.FINDINGS:
        by_nb.setdefault(f.notebook, []).append(f)
    title = "threatlab: the executed notebooks" + (f" ({profile} profile)" if profile else "")
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8" />',
           '<meta name="viewport" content="width=device-width, initial-scale=1.0">',
           f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;"
           "line-height:1.4}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
           "padding:.3em .5em;vertical-align:top;text-align:left}img{max-width:220px;"
           "border:1px solid #eee}.supported{color:#1a7f37}.not-supported{color:#cf222e}"
           ".not-run,.inconclusive{color:#6e7781}</style>",
           "</head>", "<body>", f"<h1>{e(title)}</h1>",
           "<p>Each page is a notebook as it ran: code, printed numbers and figures. "
           "Regenerated by <code>make figures</code>; the claims, judges and verdicts are "
           f'those of <a href="{e(_rel(figures_dir / "findings.md", docs_dir))}">findings.md</a>.</p>']
    for nb_path, page in pages:
        stem = nb_path.stem
        out.append(f'<h2><a href="{e(page)}">{e(_title(nb_path))}</a></h2>')
        figs = sorted(figures_dir.glob(f"{stem[:2]}_*.png"))
        own = by_nb.get(stem, [])
        if own:
            out += ["<table>", "<tr><th>finding</th><th>claim</th><th>verdict</th>"
                    "<th>conditions</th><th>key numbers</th><th>figure</th></tr>"]
            for f in own:
                got = verdicts.get(f.id)
                got = [] if got is None else list(got) if isinstance(got, (list, tuple)) else [got]
                fig = figures_dir / f"{f.figure}.png"
                cell = (f'<a href="{e(_rel(fig, docs_dir))}"><img src="{e(_rel(fig, docs_dir))}" '
                        f'alt="{e(f.figure)}" loading="lazy"></a>' if fig.is_file() else "")
                status = "<br>".join(
                    (f"{e(v.dataset)}: " if getattr(v, "dataset", None) else "")
                    + f'<span class="{e(v.status.replace(" ", "-"))}">{e(v.status)}</span>'
                    for v in got) or f'<span class="not-run">{e(findings.NOT_RUN)}</span>'
                margin = "<br>".join(e(_conditions(v)) for v in got)
                numbers = "<br>".join(e(findings.fmt_numbers(v.numbers) if v.numbers else v.note)
                                      for v in got)
                out.append(f"<tr><td>{e(f.id)}</td><td>{e(f.claim)}</td><td>{status}</td>"
                           f"<td>{margin}</td><td>{numbers}</td><td>{cell}</td></tr>")
            out.append("</table>")
        if figs:
            links = ", ".join(f'<a href="{e(_rel(p, docs_dir))}">{e(p.stem)}</a>' for p in figs)
            out.append(f"<p>All figures: {links}</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def export(notebooks: Iterable[str | os.PathLike], docs_dir: str | os.PathLike, *,
           figures_dir: str | os.PathLike = REPO / "figures",
           root: str | os.PathLike = REPO,
           source_dir: str | os.PathLike = NOTEBOOKS,
           verdicts: Mapping[str, Any] | None = None) -> list[Path]:
    """Write each executed notebook as ``<docs_dir>/<name>.html`` and ``index.html``.

    Args:
        notebooks: executed notebooks (papermill output), e.g. build/executed/quick/*.ipynb.
        docs_dir: where the pages go (created; earlier pages of notebooks not in this
            export are removed, so the folder is exactly what this run published).
        figures_dir: the run's output folder (figures, results/, findings.md) that the
            index links to and reads the verdicts from.
        root: the checkout; absolute paths under it are written relative to it.
        source_dir: the folder markdown image links are relative to.
        verdicts: finding id -> verdict(s) for the index (e.g. a sweep's aggregates per
            data set); by default judged from `figures_dir`/results (one run).

    Returns the written files, pages in name order, then the index.
    """
    paths = sorted((Path(p) for p in notebooks), key=lambda p: p.name)
    if not paths:
        raise ConfigError("notebooks=[] is empty; give the executed notebooks to publish")
    for p in paths:
        if p.suffix != ".ipynb" or not p.is_file():
            raise ConfigError(f"notebook={str(p)!r} is not an .ipynb file")
    docs_dir, figures_dir = Path(docs_dir), Path(figures_dir)
    pages = [(p, f"{p.stem}.html") for p in paths]
    written = [atomic_write(docs_dir / page, notebook_html(p, root=root, source_dir=source_dir))
               for p, page in pages]
    profiles = sorted({pr for pr in (_profile(p) for p in paths) if pr})
    index = index_html(pages, docs_dir, figures_dir, profiles[0] if len(profiles) == 1 else None,
                       verdicts)
    written.append(atomic_write(docs_dir / "index.html", index))
    keep = {page for _, page in pages}
    for stale in docs_dir.glob("*.html"):
        if _PAGE.match(stale.name) and stale.name not in keep:
            stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m threatlab.report.docs",
                                 description="Publish executed notebooks as HTML pages.")
    ap.add_argument("--executed", required=True,
                    help="folder of executed notebooks (e.g. build/executed/quick)")
    ap.add_argument("--out", default="docs", help="where the pages go (default docs)")
    ap.add_argument("--figures", default=str(REPO / "figures"),
                    help="the run's output folder: figures, results/, findings.md")
    args = ap.parse_args(argv)
    executed = Path(args.executed)
    try:
        if not executed.is_dir():
            raise ConfigError(f"--executed={args.executed!r} is not a folder")
        written = export(sorted(executed.glob("[0-9][0-9]_*.ipynb")), args.out,
                         figures_dir=args.figures)
    except ConfigError as exc:
        print(f"threatlab: {exc}", file=sys.stderr)
        return 2
    print(f"[threatlab] docs: {len(written) - 1} pages and index.html in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
