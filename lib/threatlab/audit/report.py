"""`threatlab audit`'s report: report.json (every number, with provenance) and a
self-contained report.html (inline CSS, figures inlined as base64 PNG, no external
link or script), written into the output folder by the caller's atomic commit.
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np

from ..report.results import jsonable

__all__ = ["SECTION_TITLES", "render_html", "to_json"]

SECTION_TITLES = {"evasion": "Evasion (adversarial examples)", "membership": "Membership inference",
                  "extraction": "Model extraction", "backdoor": "Backdoor scan (Neural Cleanse)"}

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:960px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;
padding-bottom:.2em;margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;
padding:.25em .6em;text-align:right;white-space:nowrap}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left;white-space:normal}
.threat{background:#f6f8fa;border-left:4px solid #888;padding:.4em .8em}.cost{color:#555;font-size:.9em}
.verdict{font-weight:600}img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}"""


def to_json(doc: dict[str, Any]) -> str:
    """The report as JSON text (tensors and arrays as lists, NaN/inf as null)."""
    return json.dumps(jsonable(doc), indent=1, sort_keys=False) + "\n"


def _pyplot():
    """matplotlib.pyplot on the Agg backend: the report's figures are rendered to PNG
    without a display (imported lazily: only a report with figures needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.{digits}f} %"


def _ci(d: dict[str, Any], digits: int = 1) -> str:
    if d.get("low") is None:
        return f"{_pct(d['value'], digits)} (no interval)"
    return f"{_pct(d['value'], digits)} [{_pct(d['low'], digits)}, {_pct(d['high'], digits)}]"


def _num(d: dict[str, Any]) -> str:
    if d.get("low") is None:
        return f"{d['value']:.3f} (no interval)"
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def _cost(c: dict[str, Any]) -> str:
    bb = c.get("black_box_queries")
    parts = [f"wall time {c['seconds']:.1f} s", f"model passes: {c['forward_rows']:,} forward rows, "
             f"{c['backward_rows']:,} gradient rows"]
    if bb is not None:
        by = ", ".join(f"{k} {v:,}" for k, v in c.get("black_box_by_oracle", {}).items())
        parts.append(f"black-box queries {bb:,} ({by})")
    else:
        parts.append("white-box section (score-based attacks' queries are among the forward rows)")
    return '<p class="cost">' + "; ".join(parts) + "</p>"


def _evasion(s: dict[str, Any]) -> str:
    plt = _pyplot()

    rows = [f"<p>Clean accuracy on {s['n']} test examples: <b>{_ci(s['clean_accuracy'])}</b> "
            "(95 % Clopper-Pearson).</p>"]
    fig, axes = plt.subplots(1, len(s["curves"]), figsize=(4.2 * len(s["curves"]), 3), squeeze=False)
    for ax, (norm, pts) in zip(axes[0], s["curves"].items()):
        rows.append(f"<h3>{'L-inf' if norm == 'linf' else 'L2'}: worst case of {', '.join(s['attacks'][norm])}</h3>"
                    "<table><tr><th>eps</th><th>robust accuracy [95 % CI]</th><th>first broken by</th></tr>")
        for p in pts:
            broken = ", ".join(f"{k} {v}" for k, v in p["broken_by"].items())
            rows.append(f"<tr><td>{p['eps']:g}</td><td>{_ci(p['robust_accuracy'])}</td><td>{broken}</td></tr>")
        rows.append("</table>")
        e = [0.0] + [p["eps"] for p in pts]
        v = [s["clean_accuracy"]["value"]] + [p["robust_accuracy"]["value"] for p in pts]
        lo = [s["clean_accuracy"]["low"]] + [p["robust_accuracy"]["low"] for p in pts]
        hi = [s["clean_accuracy"]["high"]] + [p["robust_accuracy"]["high"] for p in pts]
        ax.fill_between(e, lo, hi, alpha=0.25, color="C0")
        ax.plot(e, v, "o-", color="C0")
        ax.set(xlabel=f"eps ({'L-inf' if norm == 'linf' else 'L2'}, [0, 1] input units)", ylabel="robust accuracy",
               ylim=(0, 1.02), title=norm)
    rows.append(_png(fig))
    return "".join(rows)


def _membership(s: dict[str, Any]) -> str:
    plt = _pyplot()

    names = {"loss": "loss threshold (Yeom et al. 2018)",
             "population": "population-calibrated class threshold (Ye et al. 2022)",
             "lira_offline": f"LiRA offline, {s['reference_models']} reference models (Carlini et al. 2022)"}
    rows = [f"<p>{s['n_members']} members (the training split) against {s['n_non_members']} non-members (test); "
            f"the population attack calibrates on {s['n_population']} further test records. AUC 0.5 is "
            f"guessing. Intervals: 95 % bootstrap. With {s['n_non_members']} non-members the smallest non-zero FPR "
            f"is {1 / max(s['n_non_members'], 1):.2%}: a TPR at a lower FPR is read at zero false positives.</p>"
            "<table><tr><th>attack</th><th>AUC</th><th>TPR at 0.1 % FPR</th><th>TPR at 1 % FPR</th></tr>"]
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    for k, a in s["attacks"].items():
        rows.append(f"<tr><td>{names.get(k, k)}</td><td>{_num(a['auc'])}</td>"
                    f"<td>{_ci(a['tpr_at_0.1%_fpr'], 2)}</td><td>{_ci(a['tpr_at_1%_fpr'], 2)}</td></tr>")
        fpr, tpr = np.asarray(a["roc"]["fpr"]), np.asarray(a["roc"]["tpr"])
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=k)
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(fontsize=8)
    rows.append("</table>")
    if s["reference_models"]:
        rows.append(f"<p>Training the {s['reference_models']} reference models took "
                    f"{s['reference_training_seconds']:.1f} s (Adam, the factory's architecture; a recipe unlike "
                    "the model's own weakens LiRA).</p>")
    else:
        rows.append("<p>LiRA offline was not run (it trains reference models: pass --reference-models K).</p>")
    rows.append(_png(fig))
    return "".join(rows)


def _extraction(s: dict[str, Any]) -> str:
    plt = _pyplot()

    rows = [f"<p>Queries a substitute ({s['substitute']}) needs to agree with the model on "
            f"{s['level']:.0%} of {s['n_eval']} held-out test records, budgets {s['budgets']}:</p>"
            "<table><tr><th>API answers</th><th>queries to 90 % agreement</th><th>agreement at the largest "
            "budget</th></tr>"]
    fig, ax = plt.subplots(figsize=(4.2, 3))
    for mode, m in s["modes"].items():
        rows.append(f"<tr><td>{'probabilities' if mode == 'probs' else 'label only'}</td><td>{m['answer']}</td>"
                    f"<td>{_pct(m['agreement'][-1])}</td></tr>")
        ax.plot(m["queries"], m["agreement"], "o-", label=mode)
    ax.axhline(s["level"], color="k", ls=":", lw=0.8)
    ax.set(xscale="log", xlabel="queries", ylabel="agreement", ylim=(0, 1.02), title="substitute agreement")
    ax.legend(fontsize=8)
    rows.append("</table>")
    rows.append(_png(fig))
    return "".join(rows)


def _backdoor(s: dict[str, Any]) -> str:
    plt = _pyplot()

    rows = [f"<p class='verdict'>{html.escape(s['verdict'])}</p><p>Neural Cleanse reversed a trigger for each "
            f"class on {s['n_clean']} clean test images ({s['steps']} steps). A class is flagged when its mask's "
            f"anomaly index exceeds {s['threshold']:g} on the small side. Largest anomaly index: "
            f"{s['max_anomaly_index']:.2f}.</p><table><tr><th>class</th><th>mask L1</th><th>trigger success</th>"
            "<th>anomaly index</th></tr>"]
    for c, (l1, sc, ai) in enumerate(zip(s["l1"], s["trigger_success"], s["anomaly_index"])):
        mark = " *" if c in s["flagged_classes"] else ""
        rows.append(f"<tr><td>{c}{mark}</td><td>{l1:.1f}</td><td>{_pct(sc)}</td><td>{ai:.2f}</td></tr>")
    rows.append("</table>")
    masks = np.asarray(s["masks"])
    fig, axes = plt.subplots(1, masks.shape[0], figsize=(0.9 * masks.shape[0], 1.2), squeeze=False)
    for c, ax in enumerate(axes[0]):
        ax.imshow(masks[c], cmap="gray", vmin=0, vmax=1)
        ax.set_title(str(c), fontsize=8)
        ax.axis("off")
    rows.append("<p>Reversed masks (white = pixel replaced by the trigger):</p>" + _png(fig))
    return "".join(rows)


_RENDER = {"evasion": _evasion, "membership": _membership, "extraction": _extraction, "backdoor": _backdoor}


def render_html(doc: dict[str, Any]) -> str:
    """The report page: a header (model, data, command), then one block per section:
    its threat model in one sentence, its numbers and figure, its wall time and counts."""
    e = html.escape
    m = doc["model"]
    head = (f"<h1>threatlab audit: <code>{e(m['factory'])}</code></h1>"
            f"<p>Weights <code>{e(str(m['weights']))}</code> (sha256 {e(str(m['weights_sha256'])[:16])}...), "
            f"{m['parameters']:,} parameters, {m['num_classes']} classes, input range "
            f"[{m['input_range'][0]:g}, {m['input_range'][1]:g}] (budgets below are in [0, 1] units, i.e. fractions "
            f"of that range). Data: {e(doc['data']['source'])}, {doc['data']['n_train']:,} training and "
            f"{doc['data']['n_test']:,} test records. Seed {doc['seed']}, device {e(doc['device'])}, "
            f"threatlab {e(doc['provenance']['versions'].get('threatlab', '?'))}, total "
            f"{doc['total_seconds']:.1f} s.</p><p>Command: <code>{e(doc['command'])}</code></p>"
            "<p>Survey: He et al., <i>Towards Security Threats of Deep Learning Systems</i>, arXiv 1911.12562.</p>")
    body = []
    for name, s in doc["sections"].items():
        body.append(f"<h2>{SECTION_TITLES[name]}</h2><p class='threat'><b>Threat model.</b> "
                    f"{e(s['threat_model'])}</p>{_RENDER[name](s)}{_cost(doc['costs'][name])}")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>threatlab audit</title>"
            f"<style>{_CSS}</style></head><body>{head}{''.join(body)}</body></html>\n")
