"""Notebooks 01/02's protocol changes of the third register: G1 victims, F06's evidence
from halves, notebook 01's budget checks before any victim trains."""
from __future__ import annotations

import pytest
import torch

from threatlab import models
from threatlab.errors import ConfigError
from threatlab.protocols import extraction as px
from threatlab.protocols import inversion as proto
from threatlab.report.findings import get

from test_protocols_inversion import LEAK_KW, pool, pools  # noqa: F401  (fixtures)

ES = {"holdout": 60, "patience": 1, "min_epochs": 1, "max_epochs": 3}


def test_shadow_evidence_chooses_on_one_half_and_the_judge_reads_it(pools):  # noqa: F811
    scores, truth = proto.membership_scores(pools, n_targets=2, seed=0)
    mi = proto.MembershipComparison(pools, scores, truth, proto.membership_table(scores, truth), True, 0.0)
    ev, sel = proto.shadow_evidence(mi, n_reference=4, generator=torch.Generator().manual_seed(3))
    assert ev["sides"] == {"shadow_free": list(proto.SHADOW_FREE), "shadow_based": list(proto.SHADOW_BASED)}
    assert "class_loss" in ev["sides"]["shadow_based"] and "class_threshold" in ev["sides"]["shadow_free"]
    assert ev["half"]["best"] == sel.best and ev["half"]["auc"] == sel.auc
    assert ev["half"]["select_rows"] + ev["half"]["report_rows"] == truth.numel() == ev["candidates"]
    # The judged AUC is the chosen attack's on the reporting half, not on all rows.
    from threatlab import metrics
    k = sel.best["shadow_free"]
    rows = sel.report_rows
    assert ev["half"]["auc"]["shadow_free"] == metrics.auc(scores[k][rows], truth[rows])
    v = get("F06").judge_evidence(ev, "mnist")
    assert v.numbers["AUC best shadow-free"] == sel.auc["shadow_free"]
    assert v.status == "inconclusive" and "reference models >= 16" in v.note   # 4 reference models here


def test_gradient_leakage_trains_with_early_stopping(digits):
    x, y = digits
    kw = {**LEAK_KW, "epochs": None, "early_stop": ES}
    gl = proto.gradient_leakage(x[:300], y[:300], x[300:400], y[300:400], **kw)
    assert all(1 <= r["epochs_run"] <= 3 for r in gl.rows[:2])
    with pytest.raises(ConfigError, match="holdout"):
        proto.gradient_leakage(x[:300], y[:300], x[300:400], y[300:400], **{**kw, "early_stop": True})


def test_class_inversion_trains_with_early_stopping(digits, monkeypatch):
    x, y = digits
    seen = []
    real = models.cached

    def spy(*a, **k):
        seen.append(k.get("early_stop"))
        return real(*a, **k)
    monkeypatch.setattr(models, "cached", spy)
    proto.class_inversion(x[:1000], y[:1000], x[1000:1200], y[1000:1200], n_train=300, epochs=None, dataset="digits",
                          num_classes=10, restarts=1, steps=2, lr=0.5, samples=2, sigma=0.1, seed=0,
                          target_params={"shallow": {"hidden": []}}, early_stop=ES)
    assert seen == [ES, ES]   # the target and the evaluation classifier


@pytest.mark.parametrize("budgets, match", [([25, 50, 200], "more than twice"), ([25, 50, 100, 200, 400, 800, 1600], "n_pool=800"),
                                            ([50, 25], "strictly increasing")])
def test_attacker_data_checks_budgets_before_training(budgets, match):
    with pytest.raises(ConfigError, match=match):
        px.attacker_data("mnist", n_train=100, n_pool=800, n_eval=30, stream_length=20, calibration_clients=1,
                         benign_clients=1, budgets=budgets)
    with pytest.raises(ConfigError, match="d \\+ 1 = 785"):
        px.attacker_data("mnist", n_train=100, n_pool=700, n_eval=30, stream_length=20, calibration_clients=1,
                         benign_clients=1, budgets=[25, 50])
