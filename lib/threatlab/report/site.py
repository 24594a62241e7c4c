"""The docs site's sources: executed notebooks made fit to publish, and the chapters.

The site (docs/, built by `make docs` with Sphinx + myst-nb + sphinx-book-theme, never
re-executing a notebook) shows each family notebook as one chapter. Its sources are:

- ``docs/chapters/<notebook>.ipynb``: the published sweep's executed notebooks (the
  quick profile's seed 0 on MNIST), written by `export_chapters` after `make figures`
  and committed, like the figures. What varies run to run is dropped (`sanitize`), so
  the same results give the same bytes.
- `prepare` (called by docs/conf.py at build time) copies them into the git-ignored
  ``docs/_generated/``; a notebook without an executed copy yet is shown as committed,
  with a note saying so. The tutorials are shown as committed (outputs kept, checked by
  nbval).

`sanitize` drops papermill's start / end times and durations, the kernel's per-cell
timestamps, every other cell and notebook metadata key except ``tags``, ``kernelspec``
and ``language_info``, and stderr streams (library warnings, progress bars). Absolute
paths inside the checkout are written relative to it (``/home/u/threatlab/figures`` ->
``figures``). A cell whose output varies run to run (a wall time, "cached" vs
"trained") is tagged ``volatile`` in the notebook: its outputs are replaced by one fixed
line naming where the varying numbers live. HTML and markdown outputs are sanitized with
nh3 (Ammonia): tables, text markup and embedded images stay; scripts, event handlers,
styles and javascript: links go, so no output can run script in a reader's browser.

Plumbing cells are hidden on the site by their Jupyter Book tags (``remove-input``,
``remove-output``, ``remove-cell``), which myst-nb honours.

    $ python -m threatlab.report.site --executed figures/executed --out docs/chapters
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError
from ..io import atomic_write, read_marker_names

REPO = Path(__file__).resolve().parents[3]
NOTEBOOKS = REPO / "notebooks"

#: Cell tag: this cell's outputs differ between runs of the same code; not published.
VOLATILE_TAG = "volatile"
VOLATILE_NOTE = ("[output not published: it varies run to run (wall times, cache hits); "
                 "see results/*.run.json]\n")

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
    # Scripts and widget state would run in a reader's browser: never published.
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


#: Cell tags that hide plumbing from readers (Jupyter Book's names, honoured by myst-nb).
HIDE_INPUT_TAG, HIDE_OUTPUT_TAG, HIDE_CELL_TAG = "remove-input", "remove-output", "remove-cell"

#: Parameter cells (the notebook's and papermill's) are folded on the site: a reader
#: opens them with one click instead of scrolling past them (myst-nb's `hide-input`).
FOLD_TAGS, FOLDED_TAG = frozenset({"parameters", "injected-parameters"}), "hide-input"

#: Chapters are named like the notebooks: two digits, an underscore, a name.
_CHAPTER = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")

UNEXECUTED_NOTE = ("```{note}\nThis chapter shows the notebook as committed, without outputs: the "
                   "published sweep (`make figures`) has not exported its executed copy to "
                   "`docs/chapters/` yet.\n```")


#: Lists the chapters an export wrote, so the next export removes only those.
CHAPTERS_MARKER = ".threatlab-chapters.json"


def owned_chapters(chapters_dir: str | os.PathLike) -> set[str] | None:
    """The chapter files threatlab owns in `chapters_dir`: set() for a missing or empty
    folder; the names its marker (`CHAPTERS_MARKER`) lists; for a folder written before
    markers existed (every entry a chapter-named file, ``NN_name.ipynb``), those; None for
    any other folder (someone else's). ConfigError for a marker that does not read."""
    d = Path(chapters_dir)
    if not d.exists():
        return set()
    if not d.is_dir():
        raise ConfigError(f"docs folder {d} is a file, not a folder")
    marker = d / CHAPTERS_MARKER
    if marker.exists():
        try:
            return read_marker_names(marker, "chapters", lambda n: n.endswith(".ipynb") and "/" not in n
                                     and not n.startswith("."))
        except ValueError:
            raise ConfigError(f"docs folder {d}: {CHAPTERS_MARKER} does not read as threatlab's list of "
                              "chapters; restore it or name another docs folder") from None
    entries = list(d.iterdir())
    if all(e.is_file() and not e.is_symlink() and _CHAPTER.match(e.name) for e in entries):
        return {e.name for e in entries}
    return None


def claim_chapters(chapters_dir: str | os.PathLike, *, force: bool = False) -> set[str]:
    """`owned_chapters`, refusing in one line a folder threatlab did not write unless
    `force` (then it owns nothing there: chapters are added beside the other files)."""
    owned = owned_chapters(chapters_dir)
    if owned is None:
        if not force:
            raise ConfigError(f"docs folder {chapters_dir} holds files threatlab did not write (no "
                              f"{CHAPTERS_MARKER}); name a new or empty folder in the profile's docs key, "
                              "or pass --force to add the chapters beside them (theirs are left alone)")
        return set()
    return owned


def export_chapters(notebooks: Iterable[str | os.PathLike], chapters_dir: str | os.PathLike, *,
                    root: str | os.PathLike = REPO, force: bool = False) -> list[Path]:
    """Write each executed notebook, sanitized, as ``<chapters_dir>/<name>.ipynb``.

    Args:
        notebooks: executed notebooks (papermill output), e.g. figures/executed/*.ipynb.
        chapters_dir: where the chapters go (created). Chapters an earlier export wrote
            (its marker, `CHAPTERS_MARKER`) that are not in this one are removed, so the
            folder holds exactly what this run published; nothing else is touched. A
            folder threatlab did not write is refused unless `force` (`claim_chapters`).
        root: the checkout; absolute paths under it are written relative to it.

    Returns the written files in name order.
    """
    import json

    import nbformat

    paths = sorted((Path(p) for p in notebooks), key=lambda p: p.name)
    if not paths:
        raise ConfigError("notebooks=[] is empty; give the executed notebooks to publish")
    for p in paths:
        if p.suffix != ".ipynb" or not p.is_file():
            raise ConfigError(f"notebook={str(p)!r} is not an .ipynb file")
    chapters_dir = Path(chapters_dir)
    owned = claim_chapters(chapters_dir, force=force)
    written = []
    for p in paths:
        nb = sanitize(nbformat.read(str(p), as_version=4), root=root)
        written.append(atomic_write(chapters_dir / p.name, nbformat.writes(nb) + "\n"))
    keep = {p.name for p in paths}
    for name in sorted(owned - keep):
        (chapters_dir / name).unlink(missing_ok=True)
    atomic_write(chapters_dir / CHAPTERS_MARKER, json.dumps({"written_by": "threatlab", "chapters": sorted(keep)},
                                                            indent=1) + "\n")
    return written


def prepare(docs_dir: str | os.PathLike, *, notebooks_dir: str | os.PathLike = NOTEBOOKS) -> list[Path]:
    """The site's generated sources under ``<docs_dir>/_generated/`` (rewritten each build).

    chapters/: each family notebook's executed copy from ``<docs_dir>/chapters/``, or,
    where none is there yet, the committed notebook with `UNEXECUTED_NOTE` on top; its
    parameter cells folded (`FOLD_TAGS`);
    tutorials/: the tutorials as committed. Returns the written notebooks.
    """
    import nbformat

    docs_dir, notebooks_dir = Path(docs_dir), Path(notebooks_dir)
    gen = docs_dir / "_generated"
    written = []
    for sub in ("chapters", "tutorials"):
        if (gen / sub).exists():
            shutil.rmtree(gen / sub)
    for src in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        executed = docs_dir / "chapters" / src.name
        nb = nbformat.read(str(executed if executed.is_file() else src), as_version=4)
        if not executed.is_file():
            title = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
            nb.cells.insert(title + 1, nbformat.v4.new_markdown_cell(UNEXECUTED_NOTE))
        for cell in nb.cells:
            tags = cell.metadata.get("tags", [])
            if FOLD_TAGS & set(tags) and HIDE_INPUT_TAG not in tags:
                cell.metadata["tags"] = [*tags, FOLDED_TAG]
        written.append(atomic_write(gen / "chapters" / src.name, nbformat.writes(nb, version=4) + "\n"))
    for src in sorted((notebooks_dir / "tutorials").glob("[0-9][0-9]_*.ipynb")):
        written.append(atomic_write(gen / "tutorials" / src.name, src.read_text(encoding="utf-8")))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m threatlab.report.site",
                                 description="Publish executed notebooks as the docs site's chapters.")
    ap.add_argument("--executed", required=True, help="folder of executed notebooks (e.g. figures/executed)")
    ap.add_argument("--out", default=str(REPO / "docs" / "chapters"), help="where the chapters go")
    ap.add_argument("--force", action="store_true",
                    help="add the chapters to a folder threatlab did not write (its files are left alone)")
    args = ap.parse_args(argv)
    executed = Path(args.executed)
    try:
        if not executed.is_dir():
            raise ConfigError(f"--executed={args.executed!r} is not a folder")
        written = export_chapters(sorted(executed.glob("[0-9][0-9]_*.ipynb")), args.out, force=args.force)
    except ConfigError as exc:
        print(f"threatlab: {exc}", file=sys.stderr)
        return 2
    print(f"[threatlab] site: {len(written)} chapters in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
