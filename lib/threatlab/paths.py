"""Where threatlab keeps files: the cache folder, and the source checkout when there is one.

One decision, used by `data` (data sets) and `models` (checkpoints), and by the CLI to
tell an installed package from a checkout (`threatlab run` / `sweep` need the checkout's
notebooks and profiles):

- ``$THREATLAB_CACHE`` when set (non-empty);
- else ``<repo>/data/cache`` (git-ignored) when the package runs from a source checkout;
- else the user's cache folder, ``platformdirs.user_cache_dir("threatlab")``
  (``~/.cache/threatlab`` on Linux, honouring ``$XDG_CACHE_HOME``), never a folder under
  the interpreter's prefix.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir", "source_checkout"]

#: Environment variable naming the cache root (read at call time).
CACHE_ENV = "THREATLAB_CACHE"

#: The package folder: <repo>/lib/threatlab in a checkout, <site-packages>/threatlab installed.
_PACKAGE = Path(__file__).resolve().parent
_PROJECT_NAME = re.compile(r'^\s*name\s*=\s*["\']threatlab["\']\s*$', re.M)


def source_checkout() -> Path | None:
    """The repository root when this package runs from a source checkout, else None.

    A checkout is recognised by the package's grandparent (``<repo>`` of
    ``<repo>/lib/threatlab``) holding a ``pyproject.toml`` that names the project
    threatlab and a ``notebooks/`` folder. Neither exists next to an installed wheel
    (``<prefix>/lib/python3.X/site-packages/threatlab``), whose grandparent is
    ``<prefix>/lib``; a ``pyproject.toml`` of some other project there does not count.
    """
    root = _PACKAGE.parents[1]
    pyproject = root / "pyproject.toml"
    if not (root / "notebooks").is_dir() or not pyproject.is_file():
        return None
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root if _PROJECT_NAME.search(text) else None


def cache_dir() -> Path:
    """The cache root (not created here): ``$THREATLAB_CACHE``, else ``<repo>/data/cache``
    in a source checkout, else ``platformdirs.user_cache_dir("threatlab")``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    root = source_checkout()
    if root is not None:
        return root / "data" / "cache"
    import platformdirs  # only an installed package needs it

    return Path(platformdirs.user_cache_dir("threatlab"))
