"""Tiny notebooks for runner and sweep tests: a family notebook that records a number
(or fails on request, or sleeps) and a findings notebook that reads the results.

They execute in a few seconds each, so the runner's machinery (staging, locks,
failures, Dask) is tested without training anything.
"""
from pathlib import Path

import nbformat

FAMILY_PARAMS = '''seed: int = 0  # the sweep's seed
dataset: str = "mnist"  # the sweep's data set
value: float = 1.0  # recorded; a negative value makes the science cell fail
sleep_s: float = 0.0  # seconds to sleep before recording (kill tests)
out_dir: str = "."  # where results/ and tables/ go
profile: str = "interactive"  # set by the runner'''

FAMILY_VALIDATION = '''from threatlab import validate as v

PARAMS = dict(seed=seed, dataset=dataset, value=value, sleep_s=sleep_s, out_dir=out_dir, profile=profile)
CONSTRAINTS = {"seed": {"low": 0, "integer": True}, "sleep_s": {"low": 0, "high": 600},
               "__cross__": [["value <= 100", "the toy records values up to 100"]]}
v.check_notebook(PARAMS, CONSTRAINTS)'''

FAMILY_BODY = '''import time

from threatlab.report import plotting
from threatlab.report.results import Recorder

time.sleep(sleep_s)
if value < 0:
    raise ValueError(f"value={value} made this point fail")
rec = Recorder("{name}", out_dir, params=PARAMS)
rec.metric("score", value * (seed + 1))
rec.evidence("T1", {{"dataset": dataset, "seed": seed}})
plotting.save_table([{{"seed": seed, "dataset": dataset, "score": value * (seed + 1)}}], "{name}", out_dir)
rec.save()
print("saved in", out_dir)'''

FINDINGS_PARAMS = '''update_readme: bool = False  # never used by the toy
out_dir: str = "."  # results/ are read here, findings.md written
profile: str = "interactive"  # set by the runner'''

FINDINGS_BODY = '''from pathlib import Path

from threatlab.io import atomic_write
from threatlab.report import results

docs = results.load_all(out_dir)
lines = [f"{nb} score={doc['metrics']['score']}" for nb, doc in sorted(docs.items())]
table = Path(out_dir) / "sweep" / "points.jsonl"
if table.exists():  # as the real 05 does: judge over the gathered table when there is one
    lines.append(f"sweep points={len(table.read_text().splitlines())}")
atomic_write(Path(out_dir) / "findings.md", "\\n".join(lines) + "\\n")'''


def _notebook(params: str, validation: str | None, body: str) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_markdown_cell("# toy")]
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    cells.append(p)
    if validation:
        cells.append(nbformat.v4.new_code_cell(validation))
    cells.append(nbformat.v4.new_code_cell(body))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write_toy(folder: Path, families=("01_toy",), findings=True, profile_extra: str = "",
              no_dataset=()) -> Path:
    """Write toy notebooks into `folder` and a profile `folder/toy.yaml`; return the profile.
    Families named in `no_dataset` have no `dataset` parameter."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in families:
        params, validation, body = FAMILY_PARAMS, FAMILY_VALIDATION, FAMILY_BODY
        if name in no_dataset:
            params = params.replace('dataset: str = "mnist"  # the sweep\'s data set\n', "")
            validation = validation.replace("dataset=dataset, ", "")
            body = body.replace('"dataset": dataset, ', "")
        nbformat.write(_notebook(params, validation, body.replace("{name}", name)
                                 .replace("{{", "{").replace("}}", "}")), folder / f"{name}.ipynb")
    if findings:
        nbformat.write(_notebook(FINDINGS_PARAMS, None, FINDINGS_BODY), folder / "05_findings.ipynb")
    prof = folder / "toy.yaml"
    nbs = "".join(f"  {n}: {{}}\n" for n in families) + ("  05_findings: {}\n" if findings else "")
    prof.write_text(f"timeout_s: 120\ndefaults:\n  seed: 0\nnotebooks:\n{nbs}{profile_extra}")
    return prof
