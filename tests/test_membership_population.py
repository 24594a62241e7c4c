"""Register v3, F06: the population-calibrated class threshold (a shadow-free attack)
against a hand computation, and the selection of each side's best attack on one half
of the candidates with its AUC reported on the other."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from threatlab import attacks, metrics
from threatlab.attacks import inversion
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox
from threatlab.protocols import inversion as proto

# A toy target answering a fixed probability table: input i/(N - 1) gets row i.
TABLE = torch.tensor([
    # attacker's own rows (known non-members), labels REF_Y
    [0.5, 0.3, 0.2],
    [0.2, 0.7, 0.1],
    [0.8, 0.1, 0.1],
    [0.3, 0.4, 0.3],
    [0.2, 0.6, 0.2],
    # candidates, labels CAND_Y
    [0.9, 0.05, 0.05],
    [0.1, 0.3, 0.6],
    [0.25, 0.5, 0.25],
    [0.1, 0.1, 0.8],
])
REF_Y = [0, 0, 0, 1, 1]          # p_y: 0.5, 0.2, 0.8 (class 0); 0.4, 0.6 (class 1); none of class 2
CAND_Y = [0, 1, 1, 2]            # p_y: 0.9, 0.3, 0.5, 0.8


class TableModel(nn.Module):
    in_shape = (1,)
    num_classes = 3

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", probs.log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = (x.flatten(1)[:, 0] * (self.logits.shape[0] - 1)).round().long()
        return self.logits[i]


def _rows(idx):
    return (torch.tensor(idx, dtype=torch.float32) / (TABLE.shape[0] - 1)).view(-1, 1)


def test_class_threshold_matches_the_hand_computation():
    oracle = BlackBox(TableModel(TABLE))
    res = attacks.get("mi_class_threshold")(oracle, _rows([5, 6, 7, 8]), torch.tensor(CAND_Y),
                                            x_ref=_rows([0, 1, 2, 3, 4]), y_ref=torch.tensor(REF_Y))
    # q_0 = median(log .5, log .2, log .8) = log .5; q_1 = (log .4 + log .6) / 2;
    # class 2 has no reference row: the median of all five, log .5.
    q = [math.log(0.5), (math.log(0.4) + math.log(0.6)) / 2, math.log(0.5)]
    torch.testing.assert_close(res.extra["thresholds"], torch.tensor(q, dtype=torch.float64), rtol=0, atol=1e-6)
    want = [math.log(0.9) - q[0], math.log(0.3) - q[1], math.log(0.5) - q[1], math.log(0.8) - q[2]]
    torch.testing.assert_close(res.scores, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-6)
    assert res.extra["fallback_classes"] == [2] and res.extra["reference_counts"].tolist() == [3, 2, 0]
    # one query per candidate (ids 0..3), one per reference row (ids 4..8), all counted
    assert res.queries.tolist() == [1, 1, 1, 1] and oracle.total == 9 and res.extra["reference_queries"] == 5


def test_class_medians_batched_agrees_with_numpy():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(101, generator=g, dtype=torch.float64)
    c = torch.randint(0, 7, (101,), generator=g)
    c[c == 4] = 5                                       # class 4 left empty
    med, counts = inversion.class_medians(v, c, 7)
    for k in range(7):
        if counts[k]:
            assert float(med[k]) == pytest.approx(float(np.median(v[c == k].numpy())), abs=1e-12)
        else:
            assert math.isnan(float(med[k]))


def test_class_threshold_refuses_bad_reference_rows_before_querying():
    oracle = BlackBox(TableModel(TABLE))
    x, y = _rows([5, 6]), torch.tensor([0, 1])
    bad = _rows([0, 1])
    bad[0, 0] = math.nan
    with pytest.raises(ConfigError, match="x_ref"):
        inversion.mi_class_threshold(oracle, x, y, x_ref=bad, y_ref=torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="y_ref"):
        inversion.mi_class_threshold(oracle, x, y, x_ref=_rows([0, 1]), y_ref=torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="y_ref"):
        inversion.mi_class_threshold(oracle, x, y, x_ref=_rows([0, 1]), y_ref=torch.tensor([0]))
    assert oracle.total == 0


def test_sides_file_class_loss_with_the_shadow_attacks():
    assert proto.SHADOW_FREE == ("loss", "confidence", "entropy", "class_threshold")
    assert proto.SHADOW_BASED == ("shadow", "class_loss")
    assert set(proto.SHADOW_FREE) | set(proto.SHADOW_BASED) <= set(proto.ATTACKS)
    assert not set(proto.SHADOW_FREE) & set(proto.SHADOW_BASED)


# --------------------------------------------------------------------- selection on halves


def _synthetic(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(n) % 2 == 0
    noise = lambda: torch.randn(n, generator=g, dtype=torch.float64)  # noqa: E731
    t = truth.double()
    scores = {"loss": t + 2.0 * noise(), "confidence": t + 1.0 * noise(), "entropy": noise(),
              "class_threshold": t + 0.5 * noise(), "shadow": t + 0.7 * noise(), "class_loss": noise()}
    return scores, truth


def test_best_on_half_picks_the_known_best_and_reports_on_the_other_half():
    scores, truth = _synthetic()
    sel = proto.best_on_half(scores, truth, torch.Generator().manual_seed(1))
    assert sel.best == {"shadow_free": "class_threshold", "shadow_based": "shadow"}
    s, r = sel.select_rows, sel.report_rows
    assert len(set(s.tolist()) & set(r.tolist())) == 0 and len(s) + len(r) == 400
    assert int(truth[s].sum()) == 100 and int((~truth[s]).sum()) == 100        # stratified halves
    for side, k in sel.best.items():
        assert sel.auc[side] == pytest.approx(metrics.auc(scores[k][r], truth[r]))
        assert sel.selection_auc[side][k] == pytest.approx(metrics.auc(scores[k][s], truth[s]))
    assert sel.report_tpr["class_threshold"] == pytest.approx(metrics.tpr_at_fpr(scores["class_threshold"][r],
                                                                                truth[r], 0.001))


def test_selection_never_sees_the_reporting_half():
    scores, truth = _synthetic()
    sel = proto.best_on_half(scores, truth, torch.Generator().manual_seed(1))
    r = sel.report_rows
    # Make "entropy" perfect and "class_threshold" useless on the reporting half only:
    # the choice must not move, and the judged AUC must show the reporting half's truth.
    rigged = {k: v.clone() for k, v in scores.items()}
    rigged["entropy"][r] = truth[r].double() * 100
    rigged["class_threshold"][r] = -truth[r].double() * 100
    again = proto.best_on_half(rigged, truth, torch.Generator().manual_seed(1))
    assert torch.equal(again.report_rows, r) and again.best == sel.best
    assert again.selection_auc == sel.selection_auc
    assert again.auc["shadow_free"] == 0.0 and again.report_auc["entropy"] == 1.0


def test_best_on_half_refuses_bad_input():
    scores, truth = _synthetic(40)
    g = torch.Generator().manual_seed(0)
    nan = dict(scores, loss=scores["loss"].clone())
    nan["loss"][3] = math.nan
    with pytest.raises(ConfigError, match="'loss' hold NaN"):
        proto.best_on_half(nan, truth, g)
    with pytest.raises(ConfigError, match="no scores"):
        proto.best_on_half({"loss": scores["loss"]}, truth, g)
    with pytest.raises(ConfigError, match="1 members"):
        proto.best_on_half(scores, torch.arange(40) == 0, g)
    with pytest.raises(ConfigError, match="bool vector"):
        proto.best_on_half(scores, truth.long(), g)
