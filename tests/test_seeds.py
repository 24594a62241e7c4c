"""Seed bands: curves recorded per run, gathered over seeds, drawn as mean and 95 % band."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from threatlab.errors import ConfigError
from threatlab.report import plotting, results, seeds

EPS = [0.1, 0.2, 0.3]


def _curve_doc(tmp_path, seed, shift):
    rec = results.Recorder("04_adversarial", tmp_path / f"s{seed}", params={"seed": seed})
    rec.curve("04_success_vs_eps", "eps (L-inf)", "attack success",
              {"pgd": (np.array(EPS), np.array([0.5, 0.9, 1.0]) - shift),
               "fgsm": (EPS, [0.3 - shift, 0.6 - shift, float("nan")])})   # last: not reached
    return json.loads(rec.save().read_text())


@pytest.fixture()
def points(tmp_path):
    pts = []
    for ds in ("mnist", "fashion_mnist"):
        for s in range(5):
            doc = _curve_doc(tmp_path / ds, s, 0.01 * s + (0.2 if ds == "fashion_mnist" else 0))
            pts.append({"notebook": "04_adversarial", "dataset": ds, "seed": s, "digest": f"{ds}{s}",
                        "params": {"seed": s}, "results": doc})
    return pts


def test_curve_round_trips_through_the_results_file(tmp_path):
    doc = _curve_doc(tmp_path, 0, 0.0)
    c = doc["curves"]["04_success_vs_eps"]
    assert c["x"] == "eps (L-inf)" and c["y"] == "attack success"
    assert c["series"]["pgd"] == {"x": EPS, "y": [0.5, 0.9, 1.0]}
    assert c["series"]["fgsm"]["y"] == [0.3, 0.6, None]
    # A notebook that draws no curve keeps its results file as before (no "curves" key).
    rec = results.Recorder("04_adversarial", tmp_path / "none", params={"seed": 0})
    assert "curves" not in json.loads(rec.save().read_text())


@pytest.mark.parametrize("args, says", [
    (("a/b", "x", "y", {"s": ([1], [1])}), "name="),
    (("f", "", "y", {"s": ([1], [1])}), "x_label="),
    (("f", "x", "y", {}), "series="),
    (("f", "x", "y", {"s": ([1, 2], [1])}), "equal length"),
    (("f", "x", "y", {"s": ([1, float("nan")], [1, 2])}), r"xs\[1\]"),
    (("f", "x", "y", {"s": ([1, 2], [1, float("inf")])}), "infinity"),
    (("f", "x", "y", {"s": [1, 2, 3]}), "pair"),
])
def test_bad_curves_are_refused(tmp_path, args, says):
    rec = results.Recorder("04_adversarial", tmp_path, params={"seed": 0})
    with pytest.raises(ConfigError, match=says):
        rec.curve(*args)


def test_curve_rows_are_tidy_one_row_per_seed_x_series(points):
    assert seeds.curve_names(points) == ["04_success_vs_eps"]
    rows = seeds.curve_rows(points, "04_success_vs_eps")
    # 2 data sets x 5 seeds x (3 pgd + 2 fgsm: the unreached value is left out)
    assert len(rows) == 2 * 5 * 5
    assert {r["dataset"] for r in rows} == {"MNIST", "Fashion-MNIST"}
    one = [r for r in rows if r["dataset"] == "MNIST" and r["series"] == "pgd" and r["x"] == 0.2]
    assert sorted(r["y"] for r in one) == pytest.approx([0.9 - 0.01 * s for s in range(5)][::-1])
    assert seeds.curve_rows(points, "nothing") == []


def test_band_is_the_mean_and_a_bootstrap_interval_around_it(points):
    rows = [r for r in seeds.curve_rows(points, "04_success_vs_eps") if r["dataset"] == "MNIST"]
    fig = seeds.band_figure(rows, "x", "y", "series")
    ax = fig.axes[0]
    # Lines and bands are drawn in hue order (fgsm, pgd); the legend's proxies carry the names.
    assert [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")] == ["fgsm", "pgd"]
    pgd, band = [ln for ln in ax.lines if ln.get_label().startswith("_")][1], ax.collections[1]
    assert pgd.get_color() == next(ln for ln in ax.lines if ln.get_label() == "pgd").get_color()
    mean = [np.mean([v - 0.01 * s for s in range(5)]) for v in (0.5, 0.9, 1.0)]
    assert list(pgd.get_xdata()) == EPS and pgd.get_ydata() == pytest.approx(mean)
    # The band lies within the seeds' range at each x and holds the mean.
    verts = band.get_paths()[0].vertices
    at = verts[np.isclose(verts[:, 0], 0.2)][:, 1]
    assert 0.86 - 1e-9 <= at.min() < mean[1] < at.max() <= 0.9 + 1e-9
    plt.close(fig)
    with pytest.raises(ConfigError, match="column 'z'"):
        seeds.band_figure(rows, "x", "z")
    with pytest.raises(ConfigError, match="empty"):
        seeds.band_figure([], "x", "y")


def test_seed_band_figure_has_a_panel_per_data_set_and_repeats_its_bytes(tmp_path, points):
    fig = seeds.seed_band_figure(points, "04_success_vs_eps")
    assert [ax.get_title() for ax in fig.axes] == ["MNIST: mean and 95 % bootstrap CI over 5 seeds",
                                                    "Fashion-MNIST: mean and 95 % bootstrap CI over 5 seeds"]
    a = plotting.save_figure(fig, "04_success_vs_eps_seeds", tmp_path / "a")
    b = plotting.save_figure(seeds.seed_band_figure(points, "04_success_vs_eps"), "04_success_vs_eps_seeds",
                             tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    with pytest.raises(ConfigError, match="no point holds the curve 'x'"):
        seeds.seed_band_figure(points, "x")
