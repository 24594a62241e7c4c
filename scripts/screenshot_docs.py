"""Screenshots of the built docs site: the landing page, one family chapter and the
findings page, in headless Chromium (scripts/screenshot.py).

    python scripts/screenshot_docs.py                 # docs/_build/html -> build/screens/
    python scripts/screenshot_docs.py --site DIR --out DIR --chapter 04_adversarial

Build the site first (`make docs`). Exits 2 with one line when the site or a page is
missing, or Chromium is not installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot import screenshot  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pages(site: Path, chapter: str) -> dict[str, Path]:
    """Screenshot name -> page of the built site."""
    return {"landing": site / "index.html",
            f"chapter_{chapter}": site / "_generated" / "chapters" / f"{chapter}.html",
            "findings": site / "findings.html"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, default=REPO / "docs" / "_build" / "html", help="the built site")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "screens", help="where the PNGs go")
    ap.add_argument("--chapter", default="03_poisoning", help="the family chapter to show (notebook name)")
    args = ap.parse_args(argv)
    try:
        todo = pages(args.site, args.chapter)
        for page in todo.values():
            if not page.is_file():
                raise FileNotFoundError(f"page: {page} does not exist; build the site first (make docs)")
        for name, page in todo.items():
            print(screenshot(str(page), args.out / f"{name}.png"))
    except FileNotFoundError as exc:
        print(f"screenshot_docs: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"screenshot_docs: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
