"""One figure style and deterministic saving.

`save_figure` writes PNG and SVG with creation dates and software stamps removed and a
fixed SVG hash salt, so the same numbers give the same bytes run after run (and a
figure changes in git only when its content does). Writes are atomic.
"""
from __future__ import annotations

import io
from pathlib import Path

# No matplotlib.use() here: in Jupyter that would silently replace the inline backend,
# and without a display matplotlib already falls back to Agg.
import matplotlib.pyplot as plt

from ..io import atomic_write

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "svg.hashsalt": "threatlab",  # SVG element ids are otherwise random
    "svg.fonttype": "none",
    "image.cmap": "gray",
}

#: Colours per attack family, used across notebooks.
FAMILY_COLORS = {"extraction": "#1b9e77", "inversion": "#d95f02",
                 "poisoning": "#7570b3", "adversarial": "#e7298a"}


def use_style() -> None:
    """Apply the project's rc style (idempotent)."""
    plt.rcParams.update(STYLE)


def save_figure(fig: "plt.Figure", name: str, out_dir: str | Path, *, close: bool = True) -> list[Path]:
    """Save `fig` as <out_dir>/<name>.png and .svg with deterministic bytes."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a plain file stem like '04_success_vs_eps'")
    out = Path(out_dir)
    paths = []
    for fmt, meta in (("png", {"Software": None}),
                      ("svg", {"Date": None, "Creator": None})):
        buf = io.BytesIO()
        # The salt fixes SVG element ids even when the caller never applied STYLE.
        with plt.rc_context({"svg.hashsalt": STYLE["svg.hashsalt"]}):
            fig.savefig(buf, format=fmt, metadata=meta, bbox_inches="tight")
        paths.append(atomic_write(out / f"{name}.{fmt}", buf.getvalue()))
    if close:
        plt.close(fig)
    return paths


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "\\|")


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table from a list of dicts."""
    cols = columns or (list(rows[0]) if rows else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save_table(rows: list[dict], name: str, out_dir: str | Path, columns: list[str] | None = None) -> list[Path]:
    """Write <out_dir>/tables/<name>.csv and .md from a list of dicts."""
    import csv

    cols = columns or (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _cell(r.get(c)) if isinstance(r.get(c), float) else r.get(c) for c in cols})
    folder = Path(out_dir) / "tables"
    return [atomic_write(folder / f"{name}.csv", buf.getvalue()),
            atomic_write(folder / f"{name}.md", markdown_table(rows, cols))]


def image_grid(rows: dict[str, "object"], *, n_cols: int = 6, cell: float = 1.0) -> "plt.Figure":
    """A grid of grey images: one row per label, the first `n_cols` images of each.

    rows maps a row label to a tensor/array [n, 1, H, W] (or [n, H, W]) in [0, 1]; rows
    with fewer images leave their last cells empty.
    """
    import numpy as np

    fig, axes = plt.subplots(len(rows), n_cols, figsize=(cell * n_cols, 1.05 * cell * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        arr = np.asarray(imgs.detach().cpu() if hasattr(imgs, "detach") else imgs)
        arr = arr[:, 0] if arr.ndim == 4 else arr
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
            if c < len(arr):
                ax.imshow(arr[c], vmin=0, vmax=1, cmap="gray")
            else:
                ax.set_axis_off()
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    return fig
