"""Screenshot an HTML page (a file or an http(s) URL) in headless Chromium.

    python scripts/screenshot.py docs/_build/html/index.html build/screens/landing.png

Used to check pages as a reader's browser renders them (the docs site, `threatlab
audit`'s report). Needs Debian's ``chromium`` (``apt-get install chromium``); exits 2 with
one line when it is missing or the page does not exist, 1 when Chromium wrote no image.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The first headless-capable Chromium on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page: str, out: Path, *, width: int = 1280, height: int = 1600,
               timeout_s: float = 120.0) -> Path:
    """Render `page` at width x height CSS pixels into the PNG `out` (written atomically)."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("chromium: not found on PATH; install it with `apt-get install chromium`")
    url = page if page.startswith(("http://", "https://", "file://")) else Path(page).resolve().as_uri()
    if url.startswith("file://") and not Path(page).exists():
        raise FileNotFoundError(f"page: {page!r} does not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        tmp = out.with_name(f".{out.name}.tmp.png")
        # A throwaway profile keeps runs independent; --no-sandbox because CI runs as root.
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               "--virtual-time-budget=5000", f"--screenshot={tmp}", url]
        subprocess.run(cmd, check=False, capture_output=True, timeout=timeout_s)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise RuntimeError(f"chromium wrote no screenshot of {url}")
        tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", help="HTML file or http(s) URL")
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1600)
    args = ap.parse_args(argv)
    for name in ("width", "height"):
        value = getattr(args, name)
        if not 200 <= value <= 10000:
            print(f"--{name}: {value} is outside 200..10000 pixels", file=sys.stderr)
            return 2
    try:
        screenshot(args.page, args.out, width=args.width, height=args.height)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
