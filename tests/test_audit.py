"""`threatlab audit` end to end on a model this test trains in seconds (scikit-learn's
8x8 digits as an .npz folder), and every bad input refused with one line and exit 2."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from threatlab import models
from threatlab.audit.cli import main

NET = '''
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def wider():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def not_a_module():
    return 3
'''

#: Smoke sizes: every section runs, each in about a second on one loaded core.
SMALL = ["--n", "297", "--eps-linf", "0.05,0.2,1.0", "--eps-l2", "0.5", "--apgd-steps", "5",
         "--square-queries", "10", "--n-membership", "100", "--reference-models", "1", "--reference-epochs", "1",
         "--budgets", "25,50", "--n-eval", "100", "--substitute-max-epochs", "2", "--substitute-min-steps", "10",
         "--nc-images", "40", "--nc-steps", "10"]


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> dict:
    """A user's files: net.py (factories), trained weights, a data folder (npz)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("user")
    (root / "net.py").write_text(NET)
    d = load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, ytr, xte, yte = x[:1500], y[:1500], x[1500:], y[1500:]
    (root / "data").mkdir()
    np.savez(root / "data" / "digits.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ns: dict = {}
    exec(NET, ns)
    torch.manual_seed(0)
    net = ns["build"]()
    models.train(net, torch.from_numpy(xtr), torch.from_numpy(ytr), epochs=4, batch_size=64, lr=3e-3,
                 progress=False)
    save_file(net.state_dict(), str(root / "w.safetensors"))
    torch.save(net.state_dict(), root / "w.pt")
    net.eval()
    return {"root": root, "net": net, "xte": torch.from_numpy(xte), "yte": torch.from_numpy(yte),
            "model": f"{root / 'net.py'}:build", "weights": str(root / "w.safetensors"), "data": str(root / "data")}


def _args(user, out, *extra, model=None, weights=None, data=None):
    return ["--model", model or user["model"], "--weights", weights or user["weights"], "--data",
            data or user["data"], "--out", str(out), *extra]


def test_audit_end_to_end(user, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(_args(user, out, *SMALL)) == 0
    doc = json.loads((out / "report.json").read_text())
    assert list(doc["sections"]) == ["evasion", "membership", "extraction", "backdoor"]
    ev = doc["sections"]["evasion"]
    # --n covers the whole test split: the clean accuracy is the model's, exactly.
    acc = models.accuracy(user["net"], user["xte"], user["yte"])
    assert ev["clean_accuracy"]["value"] == pytest.approx(acc, abs=1e-6) and ev["n"] == 297
    for norm in ("linf", "l2"):
        pts = ev["curves"][norm]
        vals = [p["robust_accuracy"]["value"] for p in pts]
        assert vals == sorted(vals, reverse=True) and vals[0] <= ev["clean_accuracy"]["value"]
        for p in pts:
            r = p["robust_accuracy"]
            assert r["low"] <= r["value"] <= r["high"] and r["n"] == 297
    # eps = 1 in L-inf is the whole box: an evaluation that cannot reach 0 there is broken.
    assert ev["curves"]["linf"][-1]["robust_accuracy"]["value"] <= 0.05
    mi = doc["sections"]["membership"]
    assert set(mi["attacks"]) == {"loss", "population", "lira_offline"} and mi["reference_models"] == 1
    assert mi["reference_training_seconds"] > 0
    for a in mi["attacks"].values():
        for key in ("auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr"):
            assert 0 <= a[key]["value"] <= 1
            assert a[key]["low"] <= a[key]["value"] + 1e-9 and a[key]["value"] <= a[key]["high"] + 1e-9
    m = mi["n_members"]
    assert m == 100 and mi["n_non_members"] == 100
    # The query counter, exactly: one query per candidate per attack, plus the population rows.
    assert doc["costs"]["membership"]["black_box_by_oracle"] == {"loss": 2 * m, "population": 3 * m,
                                                                 "lira_offline": 2 * m}
    ex = doc["sections"]["extraction"]
    for mode in ("probs", "label"):
        c = ex["modes"][mode]
        assert c["queries"] == [25, 50] and len(c["agreement"]) == 2
        assert c["reached"] == (c["queries_to_level"] is not None)
    assert doc["costs"]["extraction"]["black_box_by_oracle"] == {"probs": 50, "label": 50, "evaluation": 100}
    bd = doc["sections"]["backdoor"]
    assert len(bd["anomaly_index"]) == 10 and (bd["suspected_target"] is None) == (bd["verdict"] == "none flagged")
    for name, c in doc["costs"].items():
        assert c["seconds"] > 0 and c["forward_rows"] > 0, name
    assert doc["costs"]["evasion"]["backward_rows"] > 0
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)  # self-contained
    assert "<script" not in page and page.count("data:image/png;base64,") == 4 and "{" not in page.split("</style>")[1]
    for s in doc["sections"].values():
        assert html.escape(s["threat_model"]) in page
    assert (out / ".threatlab-run.json").is_file()
    # A second audit into the folder it wrote is allowed (the marker says so).
    assert main(_args(user, out, "--sections", "backdoor", "--nc-images", "20", "--nc-steps", "5")) == 0
    assert list(json.loads((out / "report.json").read_text())["sections"]) == ["backdoor"]


def _refused(capsys, argv, needle, out: Path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("threatlab audit: ") and needle in err, err
    assert not (out / "report.json").exists()  # refused before any report was written
    return err


@pytest.mark.parametrize("case, needle", [
    ("no_module", "no module named 'no_such_module_xyz'"),
    ("no_factory", "has no callable 'nope'"),
    ("not_module", "not a torch.nn.Module"),
    ("shapes", "has shape"),
    ("keys", "missing keys"),
    ("pickled", "not a weights-only state dict"),
    ("range", "outside the declared --input-range"),
    ("no_labels", "without labels"),
    ("nan_eps", "NaN"),
    ("negative_eps", "outside the allowed range"),
    ("unsorted_eps", "strictly increasing"),
    ("bad_range", "--input-range"),
    ("bad_section", "--sections"),
    ("bad_n", "--n"),
    ("foreign_out", "did not write"),
])
def test_audit_refuses_bad_input(user, tmp_path, capsys, case, needle):
    root, out = user["root"], tmp_path / "out"
    kw: dict = {}
    extra: list[str] = ["--eps-linf", "0.1", "--eps-l2", "1"]  # a case's own flag comes later and wins
    if case == "no_module":
        kw["model"] = "no_such_module_xyz:build"
    elif case == "no_factory":
        kw["model"] = f"{root / 'net.py'}:nope"
    elif case == "not_module":
        kw["model"] = f"{root / 'net.py'}:not_a_module"
    elif case == "shapes":
        kw["model"] = f"{root / 'net.py'}:wider"
    elif case == "keys":
        state = {k: v for k, v in user["net"].state_dict().items() if not k.startswith("0.")}
        save_file(state, str(tmp_path / "partial.safetensors"))
        kw["weights"] = str(tmp_path / "partial.safetensors")
    elif case == "pickled":
        torch.save(user["net"], tmp_path / "whole.pt")  # a pickled module, not a state dict
        kw["weights"] = str(tmp_path / "whole.pt")
    elif case == "range":
        d = np.load(Path(user["data"]) / "digits.npz")
        (tmp_path / "d255").mkdir()
        np.savez(tmp_path / "d255" / "d.npz", **{k: (d[k] * 255).astype(np.uint8) if k.startswith("x") else d[k]
                                                  for k in d.files})
        kw["data"] = str(tmp_path / "d255")
    elif case == "no_labels":
        d = np.load(Path(user["data"]) / "digits.npz")
        (tmp_path / "nolabels").mkdir()
        np.savez(tmp_path / "nolabels" / "d.npz", x_train=d["x_train"], x_test=d["x_test"])
        kw["data"] = str(tmp_path / "nolabels")
    elif case == "nan_eps":
        extra += ["--eps-linf", "0.1,nan"]
    elif case == "negative_eps":
        extra += ["--eps-l2", "-0.5"]
    elif case == "unsorted_eps":
        extra += ["--eps-linf", "0.3,0.1"]
    elif case == "bad_range":
        extra += ["--input-range", "1,0"]
    elif case == "bad_section":
        extra += ["--sections", "evasion,poisoning"]
    elif case == "bad_n":
        extra += ["--n", "0"]
    elif case == "foreign_out":
        out.mkdir()
        (out / "mine.txt").write_text("a user's file")
    _refused(capsys, _args(user, out, *extra, **kw), needle, out)
    if case == "foreign_out":
        assert (out / "mine.txt").read_text() == "a user's file"


def test_usage_error_is_one_line(capsys):
    assert main(["--model", "x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "threatlab audit: the following arguments are required: --data, --out (see threatlab audit --help)"]


def test_pt_weights_read_weights_only(user, tmp_path):
    """A .pt state dict is accepted (torch.load(weights_only=True)) and gives the same model."""
    from threatlab.audit import loading

    a = loading.load_model(user["model"], str(user["root"] / "w.pt"))
    b = loading.load_model(user["model"], user["weights"])
    x = user["xte"][:8]
    assert torch.equal(a(x), b(x))


def test_input_range_maps_the_box():
    """A model declared on [-1, 1] sees the kernels' 0 as -1 and 1 as 1."""
    from threatlab.audit.loading import InputRange

    m = InputRange(torch.nn.Identity(), -1, 1)
    assert torch.equal(m(torch.tensor([[0.0, 0.5, 1.0]])), torch.tensor([[-1.0, 0.0, 1.0]]))


def test_threatlab_main_dispatches_audit(tmp_path, capsys):
    """The hook in threatlab.__main__ (what `python -m threatlab` and the console script
    call): "audit" reaches the audit CLI, one line and exit 2 on a missing module."""
    from threatlab.__main__ import main as threatlab_main

    assert threatlab_main(["audit", "--model", "no_such_module_xyz:f", "--data", "mnist", "--out",
                           str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "threatlab audit: --model 'no_such_module_xyz:f': no module named 'no_such_module_xyz' (looked in the "
        "current folder and PYTHONPATH; or give path/to/file.py:factory)"]


def test_vectorised_roc_statistics_match_metrics():
    """The bootstrap's vectorised AUC and TPR-at-FPR agree with `metrics` on every row,
    ties included (scores rounded to one decimal)."""
    from threatlab import metrics
    from threatlab.audit.membership import _auc_rows, _tpr_rows

    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=(30, 120)), 1)
    t = rng.random((30, 120)) < 0.4
    for i in range(30):
        assert _auc_rows(s, t)[i] == pytest.approx(metrics.auc(s[i], t[i]), abs=1e-12)
        for f in (0.001, 0.01, 0.1, 0.5):
            assert _tpr_rows(s, t, f)[i] == pytest.approx(metrics.tpr_at_fpr(s[i], t[i], f), abs=1e-12)
