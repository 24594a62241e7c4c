"""The findings table over a sweep: points.jsonl in, one row per finding out."""
import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import stats

from threatlab.errors import ConfigError
from threatlab.report import findings as F

MNIST_M = [0.10, 0.12, 0.08, 0.15, 0.11]          # F97's margins over seeds 0-4 on MNIST
FASHION_M = [-0.02, 0.03, 0.01, -0.04, 0.00]      # ... on Fashion-MNIST: straddles 0


def _judge(e):
    return F.judged([F.Condition("m", e["m"], 0.0, reach=(-1, 1))],
                    {"attack success": e["success"], "noise success": e["noise"], "best strategy": e["best"]},
                    checks=[F.power_check("clean accuracy >= 0.9", e.get("acc", 1.0), e.get("acc", 1.0) >= 0.9)])


def _pooled(evs):
    k = sum(e["hits"] for e in evs)
    return [F.Exact("pooled hits >= 7", 1 if k >= 7 else -1, k, detail=f"{k} hits")]


REGISTER = (
    F.Finding("F97", "adversarial", "claim A", "rule A", "04_fig_a", _judge, baselines=("noise success",)),
    F.Finding("F98", "poisoning", "claim B", "rule B", "03_fig_b", _judge, pooled=_pooled),
)


def _point(nb, ds, seed, evidence, **params):
    return {"notebook": nb, "dataset": ds, "seed": seed, "digest": f"{nb}-{ds}-{seed}",
            "params": {"seed": seed, "dataset": ds, **params}, "results": {"notebook": nb, "evidence": evidence}}


def _ev(m, i):
    return {"m": m, "success": 0.5 + m, "noise": 0.05 + i / 100, "best": "jacobian" if i < 3 else "knockoff",
            "hits": i}


@pytest.fixture()
def points():
    pts = [_point("04_adversarial", "mnist", s, {"F97": _ev(m, s)}) for s, m in enumerate(MNIST_M)]
    pts += [_point("04_adversarial", "fashion_mnist", s, {"F97": _ev(m, s)}) for s, m in enumerate(FASHION_M)]
    # 03 ran on MNIST only: Fashion-MNIST has no points at all.
    pts += [_point("03_poisoning", "mnist", s, {"F98": _ev(m, s)}) for s, m in enumerate(MNIST_M)]
    return pts


def _hand(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _cell(mlh):
    return f"{mlh[0]:.3g} [{mlh[1]:.3g}, {mlh[2]:.3g}]"


def test_load_points_reads_jsonl_and_names_bad_lines(tmp_path, points):
    path = tmp_path / "points.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in points) + "\n\n", encoding="utf-8")
    assert F.load_points(path) == points
    path.write_text(json.dumps(points[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="points.jsonl, line 2: not JSON"):
        F.load_points(path)
    path.write_text(json.dumps({"notebook": "04_adversarial", "seed": 0}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 1: .*missing \['dataset', 'results'\]"):
        F.load_points(path)


def test_sweep_rows_intervals_equal_hand_computation(points):
    rows = {r["id"]: r for r in F.sweep_rows(points, register=REGISTER, figure_prefix="figures/")}
    a = rows["F97"]
    assert a["MNIST"] == F.SUPPORTED and a["k/N MNIST"] == "5/5"
    assert f"margin {_cell(_hand(MNIST_M))}" in a["conditions MNIST"]
    # The deciding number success = 0.5 + m lies in [0, 1]: a bootstrap percentile interval.
    boot = stats.bootstrap((np.array([0.5 + m for m in MNIST_M]),), np.mean, method="percentile",
                           n_resamples=9999, random_state=0).confidence_interval
    assert a["numbers MNIST"].startswith("attack success = " + _cell((0.5 + np.mean(MNIST_M), boot.low, boot.high)))
    # A text number shows its most common value and how many runs gave it.
    assert "best strategy = jacobian (3/5)" in a["numbers MNIST"]
    noise = [0.05 + s / 100 for s in range(5)]
    assert a["baseline MNIST"].startswith("noise success = ")
    assert "noise success" not in a["numbers MNIST"]
    # Fashion-MNIST straddles 0: inconclusive, with its own k/N and interval.
    assert a["Fashion-MNIST"].startswith(F.INCONCLUSIVE) and "straddles" in a["Fashion-MNIST"]
    assert a["k/N Fashion-MNIST"] == "3/5" and f"margin {_cell(_hand(FASHION_M))}" in a["conditions Fashion-MNIST"]
    assert a["figure"] == "[04_fig_a](figures/04_fig_a.png)"


def test_sweep_rows_missing_data_set_and_pooled_condition(points):
    b = {r["id"]: r for r in F.sweep_rows(points, register=REGISTER)}["F98"]
    assert b["Fashion-MNIST"] == "not run: no 03_poisoning points on fashion_mnist in the sweep"
    assert b["k/N Fashion-MNIST"] == "" and b["conditions Fashion-MNIST"] == ""
    # The pooled condition over the 5 seeds: 0+1+2+3+4 = 10 hits >= 7.
    assert b["MNIST"] == F.SUPPORTED and b["exact MNIST"] == "pooled hits >= 7: 10, met (10 hits)"
    # Seeds 2 and 3 without hits: 0+1+4 = 5 < 7, so the seeds' interval alone no longer decides.
    few = [p for p in points if not (p["notebook"] == "03_poisoning" and p["seed"] in (2, 3))]
    few += [_point("03_poisoning", "mnist", s, {"F98": {**_ev(0.1, 0), "hits": 0}}) for s in (2, 3)]
    b = {r["id"]: r for r in F.sweep_rows(few, register=REGISTER)}["F98"]
    assert b["MNIST"] == "not supported (below its bar: pooled hits >= 7)"


def test_sweep_rows_inconclusive_runs_and_too_few_seeds(points):
    weak = [p for p in points if p["notebook"] != "04_adversarial" or p["dataset"] != "mnist"]
    weak += [_point("04_adversarial", "mnist", s, {"F97": {**_ev(m, s), "acc": 0.5 if s < 2 else 1.0}})
             for s, m in enumerate(MNIST_M)]
    a = {r["id"]: r for r in F.sweep_rows(weak, register=REGISTER)}["F97"]
    assert a["MNIST"].startswith("inconclusive (2 of 5 runs inconclusive: power check failed")
    assert a["k/N MNIST"] == "3/5"
    four = [p for p in points if p["seed"] != 4]
    a = {r["id"]: r for r in F.sweep_rows(four, register=REGISTER)}["F97"]
    assert a["MNIST"] == "inconclusive (4 runs < 5 seeds)"


def test_a_grid_needs_a_choice_and_duplicate_seeds_are_refused(points):
    grid = points + [_point("04_adversarial", "mnist", s, {"F97": _ev(0.1, s)}, pgd_steps=40) for s in range(5)]
    for p in grid[:5]:
        p["params"]["pgd_steps"] = 10
    with pytest.raises(ConfigError, match=r"2 configurations \(they differ in \['pgd_steps'\]\)"):
        F.sweep_rows(grid, register=REGISTER)
    rows = F.sweep_rows(F.select_points(grid, {"pgd_steps": 40}) + points[5:], register=REGISTER)
    assert "m >= 0: 0.1 (margin 0.1;" in rows[0]["conditions MNIST"]
    dup = points + [{**points[0], "digest": "another"}]
    with pytest.raises(ConfigError, match="have seed 0"):
        F.sweep_rows(dup, register=REGISTER)


def test_eighteen_rows_from_the_real_register_and_a_single_run():
    from judge_cases import F13   # the standard target vs its adversarially trained copy

    ev = {"F13": F13}
    pts = [_point("04_adversarial", "mnist", s, ev) for s in range(5)]
    rows = F.sweep_rows(pts)
    assert [r["id"] for r in rows] == [f"F{i:02d}" for i in range(1, 19)]
    assert all(r["Fashion-MNIST"].startswith("not run") for r in rows)
    assert rows[0]["MNIST"].startswith("not run: no 01_model_extraction points on mnist")
    docs = {"04_adversarial": {"provenance": {"parameters": {"seed": 0}}, "evidence": ev}}
    single = F.single_run_rows(docs, figure_prefix="figures/")
    assert len(single) == 18 and list(single[0]) == list(rows[0])
    f13 = single[12]
    assert "(single run)" in f13["MNIST"] and f13["k/N MNIST"] in ("0/1", "1/1")
    assert f13["Fashion-MNIST"] == "not run: single run on mnist only"
    assert single[0]["MNIST"].startswith("not run: no results from 01_model_extraction")


def test_verdict_figure_draws_the_t_interval_per_data_set(points):
    tidy = F.margin_rows(points, register=REGISTER)
    assert len(tidy) == 15 and {r["dataset"] for r in tidy} == {"MNIST", "Fashion-MNIST"}
    fig = F.verdict_figure(tidy, order=["F97", "F98"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["F97 m", "F98 m"]
    spans = sorted((round(float(np.min(line.get_xdata())), 9), round(float(np.max(line.get_xdata())), 9))
                   for c in ax.containers for line in c.lines[2] for _ in [0]
                   for line in [line] if hasattr(line, "get_segments") for seg in [line.get_segments()[0]]
                   for line in [type("L", (), {"get_xdata": lambda self, s=seg: [s[0][0], s[1][0]]})()])
    want = sorted(tuple(round(v, 9) for v in _hand(m)[1:]) for m in (MNIST_M, FASHION_M, MNIST_M))
    assert spans == want
    plt.close(fig)
    plt.close(F.verdict_figure([]))   # nothing judged yet still draws


def test_verdict_figure_bytes_repeat(tmp_path, points):
    from threatlab.report import plotting

    tidy = F.margin_rows(points, register=REGISTER)
    a = plotting.save_figure(F.verdict_figure(tidy, order=["F97", "F98"]), "v", tmp_path / "a")
    b = plotting.save_figure(F.verdict_figure(tidy, order=["F97", "F98"]), "v", tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_one_runs_results_become_points_for_the_figure():
    ev = {"F97": _ev(0.1, 0)}
    docs = {"04_adversarial": {"provenance": {"parameters": {"seed": 3, "dataset": "fashion_mnist"}}, "evidence": ev},
            "00_literature": {"provenance": {}, "evidence": {}}}
    pts = F.points_from_results(docs)
    assert [(p["notebook"], p["dataset"], p["seed"]) for p in pts] == [("04_adversarial", "fashion_mnist", 3)]
    assert F.margin_rows(pts, register=REGISTER) == [
        {"finding": "F97", "condition": "F97 m", "unit": "fraction", "dataset": "Fashion-MNIST", "seed": 3,
         "margin": 0.1, "usable": True}]


def test_verdict_figure_with_one_data_set():
    """A single data set (one hue level) draws without dodging (seaborn divides by hues - 1)."""
    rows = [{"finding": "F01", "condition": "F01 a", "unit": "ratio", "dataset": "MNIST", "seed": s,
             "margin": 0.1 + s / 100, "usable": True} for s in range(5)]
    fig = F.verdict_figure(rows)
    assert fig.axes[0].get_xlabel().startswith("value / bar") and fig.axes[0].get_xscale() == "log"
