"""data/literature/*.csv: the schema holds, and the join with results files is right."""
import csv
import shutil

import pytest

from threatlab.report import findings, literature as lit
from threatlab.errors import ConfigError

#: Papers the issue names; each must have a row.
NAMED = {("Tramèr", 2016), ("Papernot", 2017), ("Orekondy", 2019), ("Juuti", 2019), ("Fredrikson", 2015),
         ("Shokri", 2017), ("Salem", 2019), ("Yeom", 2018), ("Carlini", 2022), ("Zhu", 2019), ("Gu", 2017),
         ("Shafahi", 2018), ("Tran", 2018), ("Goodfellow", 2015), ("Madry", 2018), ("Carlini", 2017),
         ("Moosavi-Dezfooli", 2016), ("Papernot", 2016), ("Andriushchenko", 2020), ("Chen", 2020),
         ("Brendel", 2018), ("Athalye", 2018)}


@pytest.fixture(scope="module")
def rows():
    return lit.load()


def test_every_family_file_has_the_required_columns():
    for fam in lit.FAMILIES:
        with (lit.LITERATURE_DIR / f"{fam}.csv").open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh))
        assert set(lit.REQUIRED) <= set(header), fam
        assert set(header) <= set(lit.REQUIRED + lit.OPTIONAL), fam


def test_rows_parse_and_name_their_location(rows):
    assert len(rows) >= len(NAMED)
    for r in rows:
        assert isinstance(r["year"], int) and 1980 <= r["year"] <= 2100
        assert isinstance(r["reported_value"], float)
        assert lit._LOCATION.search(r["location"]), r["attack"]
        assert r["verified"] in ("yes", "no")


def test_findings_and_notebooks_exist(rows):
    for r in rows:
        f = findings.BY_ID[r["finding"]]
        assert r["notebook"] == f.notebook and r["family"] == f.family, r["attack"]
        if r["measured"]:
            lit.parse_spec(r["measured"])


def test_every_named_paper_has_a_row(rows):
    have = {(r["authors"].split(",")[0].strip(), r["year"]) for r in rows}
    assert NAMED <= have, sorted(NAMED - have)


def test_verified_rows_say_what_text_was_read(rows):
    for r in rows:
        if r["verified"] == "yes":
            assert r["note"].startswith("Read in"), r["attack"]
        else:
            assert "not checked" in r["note"] or not r["note"], r["attack"]


def _copy(tmp_path):
    for fam in lit.FAMILIES:
        shutil.copy(lit.LITERATURE_DIR / f"{fam}.csv", tmp_path / f"{fam}.csv")
    return tmp_path / "adversarial.csv"


@pytest.mark.parametrize("column, bad, says", [
    ("year", "20x5", "'year'"),
    ("reported_value", "89.4%", "'reported_value'"),
    ("location", "somewhere", "'location'"),
    ("verified", "maybe", "'verified'"),
    ("finding", "F99", "'finding'"),
    ("notebook", "01_model_extraction", "'notebook'"),
    ("knowledge", "grey", "'knowledge'"),
    ("measured", "results::F14::x", "'measured'"),
])
def test_bad_cells_raise_config_error_naming_file_row_column(tmp_path, column, bad, says):
    path = _copy(tmp_path)
    with path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    table[2][column] = bad
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    with pytest.raises(ConfigError) as e:
        lit.load(folder=tmp_path)
    assert "adversarial.csv, row 4" in str(e.value) and says in str(e.value)


def test_verified_without_note_and_missing_column_are_rejected(tmp_path):
    path = _copy(tmp_path)
    with path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    row = next(i for i, r in enumerate(table) if r["verified"] == "no")
    # A 'yes' with a source but no note saying which text was read.
    table[row].update(verified="yes", note="", source="abstract")
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    with pytest.raises(ConfigError, match="'note'"):
        lit.load(["adversarial"], folder=tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("units,", "unit,", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="missing columns \\['units'\\]"):
        lit.load(["adversarial"], folder=tmp_path)
    with pytest.raises(ConfigError, match="family='evasion'"):
        lit.load(["evasion"])


# --- the join ------------------------------------------------------------------------

DOCS = {"04_adversarial": {"evidence": {
    "F13": {"n_pixels": 784, "median": {"jsma": {"l0": 31.0, "l2": 3.0, "linf": 1.0},
                                        "cw_l2": {"l0": 400.0, "l2": 1.25, "linf": 0.4},
                                        "deepfool": {"l0": 420.0, "l2": 1.5, "linf": 0.45},
                                        "min_linf": {"l0": 700.0, "l2": 2.5, "linf": 0.12}}},
    "F14": {"eps": [0.1, 0.25, 0.3], "success": {"fgsm": [0.2, 0.6, 0.8], "pgd_linf": [0.5, 1.0, 1.0]},
            "median_l2": {"cw_l2": 1.25, "deepfool": 1.5}, "passes_per_example": {"cw_l2": 1000.0, "deepfool": 40.0}}}}}


def test_resolve_paths_selectors_ratios_and_complements():
    assert lit.resolve("evidence::F14::success::fgsm::eps=0.25", "04_adversarial", DOCS) == 0.6
    assert lit.resolve("evidence::F14::success::fgsm::max", "04_adversarial", DOCS) == 0.8
    assert lit.resolve("evidence::F14::success::fgsm::-1", "04_adversarial", DOCS) == 0.8
    assert lit.resolve("evidence::F14::success::fgsm::eps=0.2", "04_adversarial", DOCS) is None
    assert lit.resolve("evidence::F13::median::jsma::l0 / evidence::F13::n_pixels",
                       "04_adversarial", DOCS) == pytest.approx(31 / 784)
    assert lit.resolve("1 - evidence::F14::success::fgsm::0", "04_adversarial", DOCS) == pytest.approx(0.8)
    assert lit.resolve("evidence::F14::nothing", "04_adversarial", DOCS) is None
    # A judge's own number: F14's verdict reports the FGSM success at PGD's 90 % eps.
    assert lit.resolve("verdict::F14::FGSM success", "04_adversarial", DOCS) == 0.6
    with pytest.raises(ConfigError, match="must start with"):
        lit.parse_spec("metrics::clean")


def test_join_marks_setting_and_missing_results(rows):
    table = {r["attack"]: r for r in lit.reported_vs_reproduced(rows, DOCS)}
    assert table["FGSM"]["measured"] == "60 %" and table["FGSM"]["status"] == lit.SAME
    assert table["JSMA"]["measured"] == "3.954 %" and table["JSMA"]["status"] == lit.SAME
    assert table["EOT"]["status"] == lit.NOT_RECORDED  # 04 ran, but without F17 evidence
    assert table["LiRA"]["status"] == lit.NOT_RUN  # no 02 results at all
    assert table["DeepFool"]["status"] == lit.NO_COUNTERPART
    docs = {**DOCS, "02_model_inversion": {"evidence": {"F06": {
        "auc": {"loss": 0.6, "shadow": 0.61}, "tpr_at_0.1%": {"loss": 0.001, "shadow": 0.002, "lira": 0.02},
        "sides": {"shadow_free": ["loss"], "shadow_based": ["shadow", "class_loss"]},
        "half": {"best": {"shadow_free": "loss", "shadow_based": "shadow"},
                 "auc": {"shadow_free": 0.6, "shadow_based": 0.61}},
        "members": 1000, "n_reference": 16, "shadow_disjoint": True}}}}
    table = {r["attack"]: r for r in lit.reported_vs_reproduced(rows, docs)}
    assert table["LiRA"]["measured"] == "10 ratio" and table["LiRA"]["status"] == lit.DIFFERENT
    assert lit.reported_vs_reproduced(rows, {}) == lit.reported_vs_reproduced(rows, {})


def test_reported_for_and_by_finding(rows):
    assert {r["attack"] for r in lit.reported_for("F13", rows)} == {"JSMA", "DeepFool"}
    assert lit.reported_for("F09", rows) == []
    with pytest.raises(ConfigError, match="F00"):
        lit.reported_for("F00", rows)
    per = {r["id"]: r for r in lit.by_finding(DOCS, rows)}
    assert len(per) == 18 and per["F14"]["verdict"] == findings.SUPPORTED
    assert "Goodfellow 2015: 89.4 %;" in per["F14"]["reported (paper: value)"]   # verified: no mark
    assert "Gu 2017: 0.09 % (unverified)" in per["F10"]["reported (paper: value)"]
    assert "60 %" in per["F14"]["measured here"]


def test_mnist_detection():
    assert lit.is_mnist("MNIST") and lit.is_mnist("MNIST, CIFAR-10")
    assert not lit.is_mnist("Fashion-MNIST") and not lit.is_mnist("CIFAR-10")


def test_family_tables_and_timeline(rows):
    t = lit.family_table(rows, "adversarial")
    assert len(t) == sum(r["family"] == "adversarial" for r in rows) and list(t[0]) == lit.TABLE_COLUMNS
    assert [r["year"] for r in t] == sorted(r["year"] for r in t)
    fig = lit.timeline(rows)
    assert len(fig.axes[0].collections) == len(rows)
    import matplotlib.pyplot as plt

    plt.close(fig)


# --- sources, settings and the sweep ---------------------------------------------------


def test_every_verified_row_names_its_source(rows):
    verified = [r for r in rows if r["verified"] == "yes"]
    assert len(verified) >= 13
    for r in verified:
        assert r["source"], r["attack"]
        # a repository and file ("owner/name: path") or the abstract and where it was read
        assert ": " in r["source"] and "/" in r["source"].split(":")[0] or r["source"].startswith(
            ("abstract", "a verbatim quote", "a public Markdown")), r["source"]
    # the numbers no primary text was found for stay unverified
    unverified = {r["attack"] for r in rows if r["verified"] == "no"}
    assert {"BadNets", "HopSkipJump", "Boundary Attack", "Knockoff Nets", "Spectral signatures"} <= unverified


def test_verified_without_source_and_bad_settings_are_rejected(tmp_path):
    path = _copy(tmp_path)
    with path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    fields = list(table[0])

    def write(t):
        with path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(t)

    row = next(i for i, r in enumerate(table) if r["verified"] == "yes")
    write([{**r, "source": ""} if i == row else r for i, r in enumerate(table)])
    with pytest.raises(ConfigError, match=f"row {row + 2}, column 'source'"):
        lit.load(["adversarial"], folder=tmp_path)
    for bad in ("model=CNN", "colour=a | b", "model=a | b; model=c | d", "targeted= | no"):
        write([{**r, "settings": bad} if i == 0 else r for i, r in enumerate(table)])
        with pytest.raises(ConfigError, match="row 2, column 'settings'"):
            lit.load(["adversarial"], folder=tmp_path)


def test_settings_cell_says_what_matches(rows):
    cw = next(r for r in rows if r["attack"] == "C&W L2")
    cell = lit.settings_cell(cw)
    assert cell.startswith("dataset: same (MNIST)")
    assert "targeted: differs (yes (average case) vs no)" in cell
    assert "statistic: differs (mean over successes vs median over successes)" in cell
    assert lit.settings_cell(cw, "Fashion-MNIST").startswith("dataset: differs (MNIST vs Fashion-MNIST)")
    sq = next(r for r in rows if r["attack"] == "Square Attack (median)")
    assert "statistic: same (median queries)" in lit.settings_cell(sq)


def _points(values, dataset="mnist"):
    return [{"notebook": "04_adversarial", "dataset": dataset, "seed": s, "digest": f"{dataset}{s}",
             "params": {"seed": s}, "results": {"evidence": {"F14": {
                 "eps": [0.1, 0.25, 0.3], "success": {"fgsm": [0.2, v, 0.8], "pgd_linf": [0.5, 1.0, 1.0]},
                 "median_l2": {"cw_l2": 1.2, "deepfool": 1.5},
                 "passes_per_example": {"cw_l2": 1000.0, "deepfool": 40.0}}}}} for s, v in enumerate(values)]


def test_reported_vs_sweep_gives_the_seed_interval(rows):
    import math

    from scipy import stats

    vals = [0.60, 0.55, 0.65, 0.58, 0.62]
    table = {r["attack"]: r for r in lit.reported_vs_sweep(rows, _points(vals))}
    n, mean = len(vals), sum(vals) / len(vals)
    half = stats.t.ppf(0.975, n - 1) * math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) / math.sqrt(n)
    want = f"{lit.fmt(100 * mean)} [{lit.fmt(100 * (mean - half))}, {lit.fmt(100 * (mean + half))}] %"
    fgsm = table["FGSM"]
    assert fgsm["measured"] == want and fgsm["seeds"] == "5" and fgsm["status"] == lit.SAME
    assert fgsm["verified"] == "yes" and fgsm["source"]
    assert table["C&W L2"]["measured"] == "1.2 [1.2, 1.2] L2"
    assert table["EOT"]["status"] == lit.NOT_RECORDED and table["EOT"]["seeds"] == "0"
    assert table["LiRA"]["status"] == lit.NOT_RUN and table["DeepFool"]["status"] == lit.NO_COUNTERPART
    fashion = {r["attack"]: r for r in lit.reported_vs_sweep(rows, _points(vals, "fashion_mnist"), "fashion_mnist")}
    assert fashion["FGSM"]["status"] == lit.DIFFERENT
    assert fashion["FGSM"]["settings"].startswith("dataset: differs (MNIST vs Fashion-MNIST)")
    one = {r["attack"]: r for r in lit.reported_vs_sweep(rows, _points([0.6]))}
    assert one["FGSM"]["measured"] == "60 % (1 seed)"
