"""The docs site (docs/, Sphinx + myst-nb + sphinx-book-theme) builds from the committed
sources without executing a notebook, its pages load, and every internal link and image
resolves, anchors included.

The build needs the docs lock file (docs/requirements.txt), which `make test` installs
(`test: setup docs-deps`); without those packages the build tests skip and say so. The
link checker itself is tested on a small hand-made site either way.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
DOCS_PACKAGES = ("sphinx", "myst_nb", "sphinx_book_theme")


class _Links(HTMLParser):
    """Every href / src of a page, and every id / name it defines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag != "meta" else ():
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None and not (tag == "link" and a.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(a[key])
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def parse(page: Path) -> _Links:
    p = _Links()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def broken_links(site: Path) -> list[str]:
    """'page: link (why)' for each internal href/src of the site's HTML pages that does
    not resolve: a missing file, or a #fragment no id/name of the target defines.
    External links (a scheme or //host) are not followed; data: URLs are inline. Files
    under _static/ are the theme's assets (templates among them), not pages."""
    site = site.resolve()
    parsed = {p: parse(p) for p in sorted(site.rglob("*.html")) if "_static" not in p.relative_to(site).parts}
    out = []
    for page, info in parsed.items():
        for link in info.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                if parts.scheme == "javascript":
                    out.append(f"{page.relative_to(site)}: {link} (javascript: link)")
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if site not in target.parents and target != site:
                out.append(f"{page.relative_to(site)}: {link} (outside the site)")
            elif not target.is_file():
                out.append(f"{page.relative_to(site)}: {link} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    out.append(f"{page.relative_to(site)}: {link} (no #{parts.fragment} there)")
    return out


def test_link_checker_finds_missing_files_anchors_and_escapes(tmp_path):
    site = tmp_path / "html"
    (site / "sub").mkdir(parents=True)
    (site / "img.png").write_bytes(b"png")
    (site / "index.html").write_text(
        '<html><head><title>t</title><link rel="stylesheet" href="style.css"></head><body>'
        '<a href="sub/page.html#here">ok</a><a href="sub/page.html#gone">bad anchor</a>'
        '<a href="#top">self</a><h1 id="top">x</h1><img src="img.png"><img src="missing.png">'
        '<a href="https://example.org/x">external</a><a href="../outside.html">out</a>'
        '<a href="javascript:alert(1)">js</a><a href="sub/">dir</a></body></html>')
    (site / "sub" / "page.html").write_text('<html><body><p id="here">x</p><a href="../index.html#top">'
                                            'back</a><a href="../index.html#nope">n</a></body></html>')
    (site / "sub" / "index.html").write_text("<html><body></body></html>")
    assert sorted(broken_links(site)) == sorted([
        "index.html: style.css (no such file)", "index.html: sub/page.html#gone (no #gone there)",
        "index.html: missing.png (no such file)", "index.html: ../outside.html (outside the site)",
        "index.html: javascript:alert(1) (javascript: link)", "sub/page.html: ../index.html#nope (no #nope there)"])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as `make docs` builds it, into a temporary folder."""
    missing = [m for m in DOCS_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"docs packages not installed ({', '.join(missing)}): `make test` installs "
                    f"docs/requirements.txt first (make docs-deps)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(out / "doctrees"),
                          str(DOCS), str(out / "html")], capture_output=True, text=True, env=env, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "html"


def test_conf_never_executes_notebooks():
    conf = (DOCS / "conf.py").read_text()
    assert 'nb_execution_mode = "off"' in conf


def test_pages_load_with_titles_and_the_chapters_tutorials_and_api(site):
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("0[0-5]_*.ipynb"))
    tutorials = sorted(p.stem for p in (REPO / "notebooks" / "tutorials").glob("0[1-9]_*.ipynb"))
    pages = ["index", "findings", "chapters", "tutorials", "install", "running", "sweeps", "reproducibility",
             "benchmarks", "api", "search", "genindex"]
    pages += [f"_generated/chapters/{n}" for n in notebooks] + [f"_generated/tutorials/{n}" for n in tutorials]
    for name in pages:
        info = parse(site / f"{name}.html")
        assert info.title.strip(), name
    assert len(notebooks) == 6 and len(tutorials) == 5
    assert (site / "searchindex.js").stat().st_size > 10_000                 # Sphinx's built-in search
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in ("threatlab.attacks.adversarial.pgd_linf", "threatlab.defenses.dp_sgd",
                 "threatlab.protocols.evasion", "threatlab.report.findings.sweep_rows"):
        assert f'id="{name}' in api, name


def test_every_internal_link_and_image_resolves(site):
    assert broken_links(site) == []


def test_plumbing_cells_are_hidden_and_chapters_say_when_unexecuted(site):
    import nbformat

    from threatlab.report import site as S

    for src in sorted((REPO / "notebooks").glob("0[0-5]_*.ipynb")):
        page = (site / "_generated" / "chapters" / f"{src.stem}.html").read_text(encoding="utf-8")
        nb = nbformat.read(str(src), as_version=4)
        hidden = [c for c in nb.cells if c.cell_type == "code"
                  and {S.HIDE_INPUT_TAG, S.HIDE_CELL_TAG} & set(c.metadata.get("tags", []))]
        for cell in hidden:
            first = next(line for line in cell.source.splitlines() if len(line.strip()) > 20)
            assert first.strip() not in page, (src.stem, first)
        executed = (DOCS / "chapters" / src.name).is_file()
        assert ("has not exported its executed copy" in page) == (not executed), src.stem


def test_findings_page_has_every_finding_anchor_and_the_readmes_verdicts(site):
    from threatlab.report import findings as F
    from threatlab.report import readme as R

    info = parse(site / "findings.html")
    assert {f.id.lower() for f in F.FINDINGS} <= info.ids
    html = (site / "findings.html").read_text(encoding="utf-8")
    points = F.load_points(REPO / "figures" / "sweep" / "points.jsonl")
    for status, k, n in R.verdicts(points).values():
        assert R.verdict_text(status, k, n) in html
