"""Sphinx configuration of threatlab's docs site (`make docs`; Jupyter Book 1's stack:
Sphinx + myst-nb + sphinx-book-theme, pinned in docs/requirements.txt).

Notebooks are never executed here (`nb_execution_mode = "off"`): the family chapters are
the published sweep's executed copies (docs/chapters/, written by `make figures`), the
tutorials are shown as committed. `threatlab.report.site.prepare` copies both into
docs/_generated/ at the start of each build.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "lib"))

from threatlab.report import site  # noqa: E402

project = "threatlab"
author = "threatlab contributors"
copyright = "2026, threatlab contributors"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon",
              "sphinx.ext.mathjax"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "chapters", "requirements.txt", "README.md", "**.ipynb_checkpoints"]

# Notebooks: shown as stored, never run; plumbing hidden by the Jupyter Book tags.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

# The API reference: docstrings of the public packages, NumPy/Google sections.
autosummary_generate = True
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_mock_imports = ["opacus"]
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "sphinx_book_theme"
html_title = "threatlab"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
html_static_path: list[str] = []
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False


def _prepare(app) -> None:
    site.prepare(DOCS)


_LITERAL = re.compile(r"(``.+?``)")


def _escape(text: str) -> str:
    text = re.sub(r"(?<!\\)([|*])", r"\\\1", text)
    return re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", text)


def _plain_text_docstring(app, what, name, obj, options, lines) -> None:
    """The docstrings are plain text: '|x|' is an absolute value, '*' a product and
    'NAME_' a name, not reStructuredText substitutions, emphasis and references (which
    would render as broken links). ``literals`` are left as they are. Runs before
    napoleon, which then writes its own markup."""
    lines[:] = ["".join(part if part.startswith("``") else _escape(part) for part in _LITERAL.split(line))
                for line in lines]


def setup(app) -> None:
    app.connect("builder-inited", _prepare)
    app.connect("autodoc-process-docstring", _plain_text_docstring, priority=100)
