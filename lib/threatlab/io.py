"""Atomic file writes and checksums.

Every file threatlab writes (figures, results, checkpoints, tables) goes through
`atomic_write`: the bytes land in a temporary file in the same folder, are flushed to
disk, then renamed over the target. A run killed half-way leaves the previous good file
in place, never a truncated one.

File modes: the file gets the permissions a plain ``open(path, "w")`` would give a new
file, ``0o666`` less the process umask (0644 under umask 022, 0664 under 002), and any
default ACL of the folder applies as it would to ``open()``. ``tempfile.mkstemp`` would
make every result, figure and checkpoint 0600, unreadable to a group sharing a cache or
a sweep folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable
from typing import IO, Iterator


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r}; atomic_open writes only ('wb' or 'w')")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_sibling(path)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Leave the old file alone; drop the partial one.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _create_sibling(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file next to `path`; return (fd, its path).

    Like ``mkstemp`` (O_EXCL: never an existing file, random name) but created with mode
    0o666 so the kernel applies the umask exactly as it does for ``open()``.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes or text to `path` atomically and return the path."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def read_marker_names(marker: str | os.PathLike, key: str, allowed: Callable[[str], bool]) -> set[str]:
    """The names listed under `key` in the JSON marker file by which threatlab records
    what it wrote into a folder (a run's --out, a docs folder), every one a string
    `allowed` accepts. ValueError when the file does not read as such a list: the
    caller says which folder and what to do, so nothing is deleted on a guess."""
    try:
        names = json.loads(Path(marker).read_text(encoding="utf-8"))[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{marker} does not read") from e
    if not isinstance(names, list) or not all(isinstance(n, str) and allowed(n) for n in names):
        raise ValueError(f"{marker}: {key} is not a list of names")
    return set(names)
