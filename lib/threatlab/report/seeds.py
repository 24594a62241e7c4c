"""Seed bands: a single-run curve redrawn over a sweep, as its mean and a 95 % band.

A family notebook draws one run's curves (success vs eps, agreement vs queries, ...) and
keeps each one in its results document with `results.Recorder.curve(name, ...)`, where
`name` is the figure's stem. Over a sweep, every seed has its copy of the curve; this
module turns those copies into a tidy table (one row per seed, x and series) and draws
them with seaborn's `lineplot(errorbar=("ci", 95))`: the line is the mean over seeds and
the band its 95 % bootstrap confidence interval (seaborn's percentile bootstrap, 1000
resamples, a fixed seed so the bytes repeat). The companion figure is named
`<stem>_seeds`, one panel per data set; the single-seed figure stays beside it.

    >>> rows = curve_rows(points, "04_success_vs_eps")
    >>> fig = band_figure(rows, "eps", "success", "series")
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .findings import DATASETS

#: Seaborn's bootstrap seed: the same seeds' curves give the same band, byte for byte.
BOOT_SEED = 0
#: Columns of a tidy curve table.
COLUMNS = ("dataset", "seed", "series", "x", "y")


def curve_names(points: Sequence[dict[str, Any]]) -> list[str]:
    """Every curve name some point's results document holds, sorted."""
    return sorted({name for p in points for name in (p["results"].get("curves") or {})})


def curve_rows(points: Sequence[dict[str, Any]], name: str,
               datasets: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One curve over a sweep as a tidy table: a row {dataset, seed, series, x, y} per point.

    dataset is its label from `findings.DATASETS`; points on other data sets and points
    without the curve are left out, and so are y values that are None (not reached).
    The axis names of the curve are returned in each row under "x_label"/"y_label".
    """
    datasets = dict(DATASETS if datasets is None else datasets)
    rows = []
    for p in sorted(points, key=lambda p: (str(p["dataset"]), str(p["seed"]), str(p.get("digest")))):
        curve = (p["results"].get("curves") or {}).get(name)
        if curve is None or p["dataset"] not in datasets:
            continue
        for series, xy in curve["series"].items():
            for x, y in zip(xy["x"], xy["y"]):
                if y is None:
                    continue
                rows.append({"dataset": datasets[p["dataset"]], "seed": p["seed"], "series": series,
                             "x": float(x), "y": float(y), "x_label": curve["x"], "y_label": curve["y"]})
    return rows


def band_figure(tidy_rows: Sequence[dict[str, Any]], x: str, y: str, hue: str | None = None, *,
                ax=None, title: str = "", xlabel: str | None = None, ylabel: str | None = None,
                logx: bool = False):
    """Mean over seeds and its 95 % band: seaborn lineplot(errorbar=("ci", 95)).

    tidy_rows: one row per (seed, x, series), with columns `x`, `y` and `hue` (the line
    a row belongs to; None draws one line). Each x's band is the bootstrap interval of
    the mean over the seeds that have a value there. Returns the figure (drawn into
    `ax` when given). ConfigError when a column is missing or there is nothing to draw.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rows = list(tidy_rows)
    if not rows:
        raise ConfigError("tidy_rows is empty: a band needs at least one seed's curve")
    for col in (x, y) + ((hue,) if hue else ()):
        if col not in rows[0]:
            raise ConfigError(f"column {col!r} is not in the table; it has {sorted(rows[0])}")
    df = pd.DataFrame(rows)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.4))
    else:
        fig = ax.figure
    hue_order = sorted(df[hue].unique(), key=str) if hue else None
    sns.lineplot(data=df, x=x, y=y, hue=hue, hue_order=hue_order, estimator="mean",
                 errorbar=("ci", 95), n_boot=1000, seed=BOOT_SEED, marker="o", markersize=4, ax=ax)
    if logx:
        ax.set_xscale("log")
    n_seeds = df["seed"].nunique() if "seed" in df else None
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y,
           title=title or (f"mean and 95 % bootstrap CI over {n_seeds} seeds" if n_seeds else ""))
    if ax.get_legend() is not None:
        ax.legend(title="", fontsize=7)
    return fig


def seed_band_figure(points: Sequence[dict[str, Any]], name: str, datasets: dict[str, str] | None = None,
                     *, logx: bool | None = None):
    """The `<name>_seeds` companion: one `band_figure` panel per data set with the curve.

    logx: a log x axis; by default when the curve's x values span more than a factor 20
    and are all positive (query budgets). ConfigError when no point holds the curve.
    """
    import matplotlib.pyplot as plt

    rows = curve_rows(points, name, datasets)
    if not rows:
        raise ConfigError(f"no point holds the curve {name!r}; curves found: {curve_names(points)}")
    labels = [d for d in (DATASETS if datasets is None else datasets).values() if any(r["dataset"] == d for r in rows)]
    xs = [r["x"] for r in rows]
    if logx is None:
        logx = min(xs) > 0 and max(xs) / min(xs) > 20
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 3.4), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels):
        mine = [r for r in rows if r["dataset"] == label]
        n_seeds = len({r["seed"] for r in mine})
        band_figure(mine, "x", "y", "series", ax=ax, logx=logx, xlabel=mine[0]["x_label"],
                    ylabel=mine[0]["y_label"], title=f"{label}: mean and 95 % bootstrap CI over {n_seeds} seeds")
    return fig
