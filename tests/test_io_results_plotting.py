import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from threatlab import io as tio
from threatlab.report.plotting import save_figure, save_table
from threatlab.report.results import Recorder, jsonable, load_all


def test_atomic_write_interrupted_keeps_previous(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    tio.atomic_write(p, "good\n")

    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        tio.atomic_write(p, "half")
    assert p.read_text() == "good\n"
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_interrupted_figure_save_keeps_previous(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, "01_line", tmp_path, close=False)
    before = (tmp_path / "01_line.png").read_bytes()
    ax.plot([0, 1], [1, 0])
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_figure(fig, "01_line", tmp_path)
    assert (tmp_path / "01_line.png").read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["01_line.png", "01_line.svg"]


def test_figure_bytes_are_deterministic(tmp_path):
    out = []
    for d in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot(np.arange(5), np.arange(5) ** 2, label="x")
        ax.legend()
        save_figure(fig, "04_demo", tmp_path / d)
        out.append([(tmp_path / d / f"04_demo.{e}").read_bytes() for e in ("png", "svg")])
    assert out[0] == out[1]
    assert b"<dc:date>" not in out[0][1]


def test_recorder_writes_deterministic_results_and_separate_timings(tmp_path):
    for d in ("a", "b"):
        rec = Recorder("04_adversarial", tmp_path / d, params={"seed": 0, "eps": 0.3})
        rec.evidence("F13", {"x": torch.tensor([1.0, float("nan")]), "n": np.int64(3)})
        rec.metric("acc", 0.123456789)
        rec.timing("pgd_s", 0.01 if d == "a" else 0.02)
        rec.save()
    a = (tmp_path / "a/results/04_adversarial.json").read_bytes()
    assert a == (tmp_path / "b/results/04_adversarial.json").read_bytes()
    doc = load_all(tmp_path / "a")["04_adversarial"]
    assert doc["evidence"]["F13"] == {"x": [1.0, None], "n": 3}
    assert doc["metrics"]["acc"] == 0.123457
    assert doc["provenance"]["seed"] == 0 and "torch" in doc["provenance"]["versions"]
    run = json.loads((tmp_path / "a/results/04_adversarial.run.json").read_text())
    assert run["timings"]["pgd_s"] == 0.01 and "wall_time_s" in run


def test_jsonable_and_tables(tmp_path):
    assert jsonable({"a": (1, 2.0, float("inf"))}) == {"a": [1, 2.0, None]}
    save_table([{"attack": "pgd", "l2": 1.23456}], "04_norms", tmp_path)
    assert (tmp_path / "tables/04_norms.csv").read_text() == "attack,l2\npgd,1.235\n"
    assert "| pgd | 1.235 |" in (tmp_path / "tables/04_norms.md").read_text()


# --------------------------------------------------------------------------- file modes

@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_written_files_get_the_mode_plain_open_gives(tmp_path, umask):
    """Results, figures, tables, checkpoints and atomic_write files: 0o666 & ~umask, the
    mode of a file made by open() next to them (mkstemp would give 0600)."""
    from threatlab import models

    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    expected = _mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~umask                       # 0644 / 0664

    written = [tio.atomic_write(tmp_path / "a.bin", b"x"), tio.atomic_write(tmp_path / "a.txt", "x")]
    with tio.atomic_open(tmp_path / "b.bin") as f:
        f.write(b"y")
    written.append(tmp_path / "b.bin")
    rec = Recorder("04_adversarial", tmp_path / "out", params={"seed": 0})
    rec.metric("acc", 0.5)
    written += [rec.save(), tmp_path / "out/results/04_adversarial.run.json"]
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    written += save_figure(fig, "04_modes", tmp_path / "out")
    written += save_table([{"a": 1}], "04_modes", tmp_path / "out")
    model = models.build("mlp", in_shape=(1, 8, 8), seed=0)
    written.append(models.save_checkpoint(model, tmp_path / "cache/m.safetensors", key="k", arch="mlp"))
    assert len(written) == 10
    assert {str(p): oct(_mode(p)) for p in written} == {str(p): oct(expected) for p in written}
    # Rewriting keeps the umask mode (the temporary file is new each time).
    tio.atomic_write(tmp_path / "a.bin", b"z")
    assert _mode(tmp_path / "a.bin") == expected


def test_temporary_names_are_fresh_and_never_reused(tmp_path, monkeypatch):
    seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **k):
        seen.append((str(path), flags, mode))
        return real_open(path, flags, mode, *a, **k)

    monkeypatch.setattr(os, "open", spy)
    for _ in range(3):
        tio.atomic_write(tmp_path / "r.json", "{}")
    names = [s[0] for s in seen]
    assert len(set(names)) == 3 and all(os.path.basename(n).startswith(".r.json.") for n in names)
    assert all(s[1] & os.O_EXCL and s[2] == 0o666 for s in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# --------------------------------------------------------------------------- provenance

def test_provenance_lists_every_distribution_and_the_thread_pools(tmp_path):
    from importlib import metadata

    from threatlab.report import results

    rec = Recorder("01_model_extraction", tmp_path, params={"seed": 3})
    prov = json.loads(rec.save().read_text())["provenance"]
    dists = prov["distributions"]
    names = [d.split("==")[0] for d in dists]
    canon = [results._canonical(n) for n in names]
    assert canon == sorted(canon) and len(set(canon)) == len(canon)
    installed = {results._canonical(d.metadata["Name"]) for d in metadata.distributions()
                 if d.metadata is not None and d.metadata["Name"]}
    assert set(canon) == installed and len(dists) > 20        # all of them, not 6 packages
    for mod, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("threadpoolctl", "threadpoolctl")):
        assert f"{metadata.metadata(dist)['Name']}=={__import__(mod).__version__}" in dists
    # Thread pools depend on the launch (a Dask worker pins BLAS to one thread): they are
    # in the run file, beside the wall times, not in the results file.
    assert "threads" not in prov
    th = json.loads((tmp_path / "results" / "01_model_extraction.run.json").read_text())["threads"]
    assert th["torch_intra_op"] == torch.get_num_threads()
    # numpy is loaded, so its BLAS is in use and reported with its thread count.
    blas = [p for p in th["pools"] if p["user_api"] == "blas"]
    assert blas and all(isinstance(p["num_threads"], int) and p["filepath"] for p in blas)
    assert prov["seed"] == 3 and prov["device"] in ("cpu", "cuda")


# ------------------------------------------------------------ readers' figures

def test_bars_at_zero_stay_visible_with_their_value():
    """BPDA driving a defense to accuracy 0 (F18) must be seen: a zero bar is a hatched stub
    with a label "0.00"; NaN is "n/a"; every bar carries its value."""
    from threatlab.report import plotting

    fig, ax = plt.subplots()
    ax.set_ylim(0, 1)
    plotting.bars(ax, [0, 1, 2], [0.0, 0.75, float("nan")], 0.3, label="bpda")
    heights = sorted(round(p.get_height(), 4) for p in ax.patches if np.isfinite(p.get_height()))
    assert heights == [0.015, 0.75]  # the zero bar drawn at 1.5 % of the range, NaN left out
    assert [t.get_text() for t in ax.texts] == ["0.00", "0.75", "n/a"]
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["bpda"] and not handles[0].patches[0].get_hatch()  # solid, not the stub's hatch
    fig2, ax2 = plt.subplots()
    plotting.bars(ax2, [0], [0.0], 0.3, label="only zeros")  # the legend still names the series
    assert ax2.get_legend_handles_labels()[1] == ["only zeros"]
    with pytest.raises(ValueError, match="positions"):
        plotting.bars(ax, [0, 1], [0.5], 0.3)
    plt.close("all")


def test_caption_names_data_set_and_model_once(tmp_path):
    from threatlab.report import plotting

    assert plotting.caption("fashion_mnist", "lenet5", "seed 0") == "Fashion-MNIST · LeNet-5 · seed 0"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    cap = plotting.caption("mnist", "cnn")
    plotting.save_figure(fig, "t", tmp_path, close=False, caption=cap)
    plotting.save_figure(fig, "t", tmp_path, close=False, caption=cap)
    assert [t.get_text() for t in fig.texts] == ["MNIST · CNN"]
    assert "MNIST · CNN" in (tmp_path / "t.svg").read_text()
    with pytest.raises(ValueError, match="caption"):
        plotting.save_figure(fig, "t", tmp_path, caption=" ")
    plt.close("all")


def test_verdict_heatmap_colours_by_verdict_and_writes_k_of_n():
    from threatlab.report import plotting

    rows = [{"id": "F01", "claim": "a", "MNIST": "supported", "k/N MNIST": "5/5", "Fashion-MNIST": "not supported "
             "(below its bar: x)", "k/N Fashion-MNIST": "1/5"},
            {"id": "F02", "claim": "b", "MNIST": "not run: no evidence", "k/N MNIST": "",
             "Fashion-MNIST": "inconclusive (interval straddles its bar)", "k/N Fashion-MNIST": "3/5"}]
    fig = plotting.verdict_heatmap(rows, ["MNIST", "Fashion-MNIST"], title="t")
    ax = fig.axes[0]
    codes = ax.images[0].get_array().tolist()
    st = list(plotting.VERDICT_COLORS)
    assert codes == [[st.index("supported"), st.index("not supported")],
                     [st.index("not run"), st.index("inconclusive")]]
    assert [t.get_text() for t in ax.texts] == ["5/5", "1/5", "—", "3/5"]
    with pytest.raises(ValueError, match="at least one"):
        plotting.verdict_heatmap([], ["MNIST"])
    plt.close("all")


def test_frame_rounds_and_takes_rows_columns_or_one_row():
    from threatlab.report import plotting

    df = plotting.frame([{"model": "a", "acc": 0.123456789}, {"model": "b", "acc": 1 / 3}], index="model")
    assert df.loc["b", "acc"] == 0.333 and list(df.index) == ["a", "b"]
    cols = plotting.frame({"eps": [0.1, 0.2], "success": [0.51234, 0.9]}, digits=2)
    assert cols.shape == (2, 2) and cols["success"].tolist() == [0.51, 0.9]
    assert plotting.frame({"epsilon": 2.123456, "acc": 0.9}).shape == (1, 2)
    assert plotting.frame([], index="finding").empty  # nothing measured: an empty table, no error
    with pytest.raises(ValueError, match="digits"):
        plotting.frame([{"a": 1.0}], digits=-1)
    with pytest.raises(ValueError, match="index"):
        plotting.frame([{"a": 1.0}], index="b")
    with pytest.raises(ValueError, match="different lengths"):
        plotting.frame({"a": [1], "b": [1, 2]})
