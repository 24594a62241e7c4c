"""The README as a landing page: small, in order, every command run by CI or a test,
and the same verdicts as the docs site's findings page, from the same gathered table."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from threatlab.errors import ConfigError
from threatlab.report import findings as F
from threatlab.report import readme as R

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGE = REPO / R.PAGE
POINTS = REPO / "figures" / "sweep" / "points.jsonl"

#: Words of the project's own bookkeeping that readers should never meet.
INTERNAL = re.compile(r"\b(register|v1|v2|v3)\b", re.I)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def shell_commands(text: str) -> list[str]:
    """The commands of a file's ```bash blocks (comments and blank lines dropped)."""
    out = []
    for block in blocks(text, "bash"):
        out += [c for c in (line.split("#")[0].strip() for line in block.splitlines()) if c]
    return out


def test_readme_is_a_landing_page_under_10_kb_in_order():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 10 * 1024
    heads = re.findall(r"^## (.+)$", text, re.M)
    assert heads == ["The verdicts", "Try it in 2 minutes", "Reproduce the figures", "Test",
                     "Attack your own model", "Read more"]
    assert text.index("arXiv 1911.12562") < text.index(R.START)        # the pitch comes first
    assert "about 60 min from an empty" in text and "45 min warm on 2 cores" in text
    for target in ("notebooks/tutorials/README.md", "benchmarks/results.md", "CITATION.cff", "docs/findings.md"):
        assert f"]({target}" in text


def test_readers_never_meet_internal_vocabulary():
    pages = [README, REPO / "CONTRIBUTING.md", PAGE, *sorted((REPO / "docs").glob("*.md"))]
    hits = [f"{p.relative_to(REPO)}: {m[0]}" for p in pages for m in INTERNAL.finditer(p.read_text())]
    assert hits == []


#: README commands CI does not run, each with the test that runs it instead.
RUN_BY_A_TEST = {"make figures": "test_make_figures_expands_to_a_sweep_whose_every_point_passes_its_checks"}


def test_every_readme_command_is_run_by_ci_or_a_test():
    """.ci/run runs the README's shell commands (and no other make target), except the
    hour-long default sweep, whose expansion a test checks point by point; the Python
    snippet runs below."""
    readme = shell_commands(README.read_text(encoding="utf-8"))
    ci = [c for c in (line.split("#")[0].strip() for line in (REPO / ".ci/run").read_text().splitlines()) if c]
    assert readme and set(readme) - set(ci) == set(RUN_BY_A_TEST), sorted(set(readme) - set(ci))
    assert {c for c in ci if c.startswith("make")} == set(readme) - set(RUN_BY_A_TEST)
    assert all(name in globals() for name in RUN_BY_A_TEST.values())
    for cmd in readme:
        assert shlex.split(cmd)[0] == "make", cmd
    assert len(blocks(README.read_text(encoding="utf-8"), "python")) == 1


def test_make_figures_expands_to_a_sweep_whose_every_point_passes_its_checks():
    """`make figures` is set-up plus one sweep; every point of that sweep passes the
    checks a real run makes before anything runs (parameters, ranges, data sets)."""
    from threatlab import sweep

    out = subprocess.run(["make", "-n", "-C", str(REPO), "figures", "PY=true"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (line,) = [l for l in out.stdout.splitlines() if "-m threatlab sweep" in l]
    args = shlex.split(line.split("-m threatlab sweep", 1)[1])
    opts = dict(zip(args[::2], args[1::2]))
    assert set(opts) == {"--profile", "--seeds", "--datasets"}
    plan = sweep.plan(opts["--profile"], seeds=sweep.parse_seeds(opts["--seeds"]),
                      datasets=sweep.parse_datasets(opts["--datasets"]))
    assert plan.seeds == [0, 1, 2, 3, 4] and plan.datasets == list(F.DATASETS)
    assert {p.notebook for p in plan.points} >= {nb for nb in F.NOTEBOOK.values()}


def test_attack_your_own_model_snippet_runs(capsys):
    (snippet,) = blocks(README.read_text(encoding="utf-8"), "python")
    assert len(snippet.strip().splitlines()) <= 3
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x, y = torch.rand(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    scope = {"model": model, "x": x, "y": y}
    exec(compile(snippet, "README.md", "exec"), scope)
    res = scope["result"]
    assert res.x_adv.shape == x.shape and (res.x_adv - x).abs().max() <= 0.3 + 1e-6
    printed = capsys.readouterr().out
    assert re.fullmatch(r"tensor\((0|1)\.\d*\)\n", printed), printed


def test_short_claims_fit_in_ten_words():
    assert [f.id for f in F.FINDINGS if not f.short or len(f.short.split()) > 10] == []


def _readme_verdicts(text: str) -> dict[tuple[str, str], str]:
    matrix = text.split(R.START, 1)[1].split(R.END, 1)[0]
    rows = [line.split(" | ") for line in matrix.strip().splitlines()[2:]]
    labels = list(F.DATASETS.values())
    out = {}
    for row in rows:
        fid = re.search(r"\[(F\d\d)\]", row[0])[1]
        for label, cell in zip(labels, row[2:]):
            out[fid, label] = cell.strip(" |")
    return out


def _page_verdicts(text: str) -> dict[tuple[str, str], str]:
    """The findings page's 'verdict' row of each finding's section (status and k/N)."""
    out = {}
    labels = list(F.DATASETS.values())
    for section in text.split('<a id="')[1:]:
        fid = section[:3].upper()
        row = next(line for line in section.splitlines() if line.startswith("| verdict |"))
        cells = row.split(" | ")[1:]
        for label, cell in zip(labels, cells):
            out[fid, label] = cell.strip(" |").split(":")[0]
    return out


def test_readme_and_docs_findings_page_show_the_same_verdicts_from_the_gathered_table():
    """Both committed files are what `readme.publish` writes from figures/sweep/points.jsonl."""
    points = F.load_points(POINTS)
    readme, page = README.read_text(encoding="utf-8"), PAGE.read_text(encoding="utf-8")
    assert readme.split(R.START, 1)[1].split(R.END, 1)[0] == "\n" + R.verdict_matrix(points)
    assert page == R.findings_page(points)
    a, b = _readme_verdicts(readme), _page_verdicts(page)
    assert len(a) == 2 * len(F.FINDINGS) and a == b
    expected = {k: R.verdict_text(*v) for k, v in R.verdicts(points).items()}
    assert a == expected


def test_readme_links_resolve_to_files_and_finding_anchors():
    text = README.read_text(encoding="utf-8")
    page = PAGE.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"https?://", link)]
    assert [link for link in local if not (REPO / link.split("#")[0]).exists()] == []
    anchors = [link.split("#")[1] for link in local if link.startswith(R.PAGE + "#")]
    assert anchors == [f.id.lower() for f in F.FINDINGS]
    assert [a for a in anchors if f'<a id="{a}"></a>' not in page] == []


def _toy_points() -> list[dict]:
    """Two seeds of F04's evidence on MNIST only, one of them failing the bar."""
    def ev(success):
        return {"F04": {"transfer_success": [success], "noise_success": 0.05, "n_examples": 500,
                        "eps": 0.3, "noise_linf_max": 0.3}}
    return [{"notebook": "01_model_extraction", "dataset": "mnist", "seed": s, "digest": f"d{s}", "params": {},
             "results": {"evidence": ev(v)}} for s, v in ((0, 0.6), (1, 0.1))]


def test_publish_rewrites_only_between_the_markers_and_both_files_agree(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(f"# x\n\nintro\n\n{R.START}\nold\n{R.END}\n\nafter\n")
    readme, page = R.publish(_toy_points(), root=tmp_path)
    text = readme.read_text()
    assert text.startswith("# x\n\nintro\n\n" + R.START + "\n| | finding |") and text.endswith(R.END + "\n\nafter\n")
    assert "old" not in text
    a, b = _readme_verdicts(text), _page_verdicts(page.read_text())
    assert a == b
    assert a["F04", "MNIST"] == R.verdict_text(F.INCONCLUSIVE, 1, 2)   # 2 runs < 5 seeds: not decided
    assert a["F04", "Fashion-MNIST"] == R.verdict_text(F.NOT_RUN, 0, 0) == "· not run"
    with pytest.raises(ConfigError, match="no <!-- verdicts:start -->"):
        R.replace_matrix("no markers", "m")
    with pytest.raises(ConfigError, match="has no README.md"):
        R.publish(_toy_points(), root=tmp_path / "docs")
