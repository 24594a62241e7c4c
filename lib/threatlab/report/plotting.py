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


#: Readers' names of the data sets and models the figures name in their captions.
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "digits": "UCI digits 8x8"}
MODEL_NAMES = {"cnn": "CNN", "mlp": "MLP", "lenet5": "LeNet-5", "logreg": "logistic regression"}
#: Verdict colours of the findings heatmap (colour-blind safe: blue, vermillion, grey, white).
VERDICT_COLORS = {"supported": "#0072b2", "not supported": "#d55e00", "inconclusive": "#bbbbbb",
                  "not run": "#ffffff"}


def caption(dataset: str, model: str, extra: str = "") -> str:
    """A figure's caption line, naming its data set and model: "MNIST · LeNet-5 · seed 0"."""
    if not isinstance(dataset, str) or not isinstance(model, str):
        raise ValueError(f"caption(dataset={dataset!r}, model={model!r}): both must be strings")
    parts = [DATASET_NAMES.get(dataset, dataset), MODEL_NAMES.get(model, model)] + ([extra] if extra else [])
    return " · ".join(p for p in parts if p)


def save_figure(fig: "plt.Figure", name: str, out_dir: str | Path, *, close: bool = True,
                caption: str | None = None) -> list[Path]:
    """Save `fig` as <out_dir>/<name>.png and .svg with deterministic bytes.

    `caption` (see `caption()`), when given, is written once under the axes, so every
    figure names its data set and model."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a plain file stem like '04_success_vs_eps'")
    if caption is not None:
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"caption={caption!r} must be a non-empty string such as 'MNIST · LeNet-5'")
        old = getattr(fig, "_threatlab_caption", None)
        if old is not None:  # saving twice writes one caption
            old.remove()
        # Just under everything drawn (tick labels, axis labels, legends below the axes).
        bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
        fig._threatlab_caption = fig.text(0.5, bottom - 0.01, caption, ha="center", va="top", fontsize=8,
                                          color="#444444")
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


def frame(rows: list[dict] | dict, *, digits: int = 3, index: str | None = None):
    """A list of dicts (rows), a dict of equal-length lists (columns) or one dict (one
    row) as a pandas DataFrame with floats rounded to
    `digits` decimals, so a notebook shows an HTML table instead of a dict of 16-digit
    floats; `index` names the column to index by."""
    import pandas as pd

    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 12:
        raise ValueError(f"digits={digits!r} must be an integer in 0..12")
    columns = isinstance(rows, dict) and rows and all(isinstance(v, (list, tuple)) for v in rows.values())
    if columns and len({len(v) for v in rows.values()}) != 1:
        raise ValueError(f"frame: the columns have different lengths {[len(v) for v in rows.values()]}")
    # A dict of equal-length lists is a table by columns; any other dict is one row.
    df = pd.DataFrame(dict(rows) if columns else [rows] if isinstance(rows, dict) else list(rows))
    if index is not None and not df.empty:  # no rows: an empty table, whatever its index
        if index not in df.columns:
            raise ValueError(f"index={index!r} is not a column; columns: {list(df.columns)}")
        df = df.set_index(index)
    return df.round(digits)


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


def bars(ax: "plt.Axes", x, heights, width: float, *, label: str | None = None, color=None,
         fmt: str = "{:.2f}", fontsize: float = 6.5) -> None:
    """Bars that stay visible at zero: each bar carries its value as a label, and a bar
    of (near) zero height is drawn as a hatched stub of 1.5 % of the y range, so a result
    such as an attack driving accuracy to 0 is seen, not missed. NaN bars (not measured)
    are left out and labelled "n/a". Set the y limits before calling."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    h = np.asarray(heights, dtype=float)
    if x.shape != h.shape:
        raise ValueError(f"bars: {x.shape[0] if x.ndim else 1} positions but {h.shape} heights")
    lo, hi = ax.get_ylim()
    stub = 0.015 * (hi - lo)
    measured = np.isfinite(h)
    zero = measured & (np.abs(h) < stub)
    # One call, so the series has one colour (the cycle's); its legend entry is a solid
    # proxy (an undrawn NaN bar), never a hatched stub.
    drawn = ax.bar(x[measured], np.where(zero, stub, h)[measured], width, color=color)
    solid = drawn.patches[0].get_facecolor() if drawn.patches else color
    for patch, is_zero in zip(drawn.patches, zero[measured]):
        if is_zero:
            patch.set_edgecolor(patch.get_facecolor())
            patch.set_facecolor("white")
            patch.set_hatch("////")
            patch.set_linewidth(0.8)
    if label is not None:
        ax.bar([np.nan], [np.nan], width, color=solid, label=label)
    for xi, hi_, ok in zip(x, h, measured):
        text = fmt.format(hi_) if ok else "n/a"
        ax.text(xi, (max(hi_, stub) if ok else 0) + 0.01 * (hi - lo), text, ha="center", va="bottom",
                fontsize=fontsize, rotation=90 if width < 0.25 else 0)


def verdict_heatmap(rows: list[dict], datasets: list[str], *, title: str = "") -> "plt.Figure":
    """The findings at a glance: one row per finding, one column per data set, each cell
    coloured by its verdict and annotated with k/N (runs that supported it / runs judged).

    rows: `findings.sweep_rows` / `single_run_rows` output ({"id", "claim", <data set>:
    verdict text, "k/N <data set>": "k/N"}); datasets: their column names ("MNIST", ...).
    The verdict is the leading status word(s) of the cell ("supported (…)")."""
    import matplotlib.colors as mcolors
    import numpy as np
    from matplotlib.patches import Patch

    if not rows or not datasets:
        raise ValueError("verdict_heatmap: needs at least one finding row and one data set")
    statuses = list(VERDICT_COLORS)

    def status(text: str) -> str:  # "not supported" before "supported": the longer prefix first
        for s in sorted(statuses, key=len, reverse=True):
            if str(text).startswith(s):
                return s
        return "not run"

    codes = np.array([[statuses.index(status(r.get(ds, ""))) for ds in datasets] for r in rows])
    cmap = mcolors.ListedColormap([VERDICT_COLORS[s] for s in statuses])
    claims = [f"{r['id']}  {_short(r.get('claim', ''), 72)}" for r in rows]
    fig, ax = plt.subplots(figsize=(3.2 + 1.25 * len(datasets) + 3.6, 0.3 * len(rows) + 1.4))
    ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(statuses) - 0.5, aspect="auto")
    ax.grid(False)
    for i, r in enumerate(rows):
        for j, ds in enumerate(datasets):
            s = statuses[codes[i, j]]
            kn = r.get(f"k/N {ds}") or ""
            text = kn if kn else ("—" if s == "not run" else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if s in ("supported", "not supported") else "#222222")
    ax.set_xticks(range(len(datasets)), datasets)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), claims, fontsize=7.5)
    ax.set_xticks(np.arange(-0.5, len(datasets)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="both", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(facecolor=VERDICT_COLORS[s], edgecolor="#888888", label=s) for s in statuses],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7.5, title="verdict (k/N runs supported)",
              title_fontsize=7.5)
    if title:
        ax.set_title(title, fontsize=9, pad=22)
    fig.tight_layout()
    return fig


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"
