import numpy as np
import pytest
import torch

from threatlab import metrics


def test_tpr_at_fpr_exact_on_hand_made_scores():
    # 10 non-members with scores 0..9, 5 members with scores 5.5, 7.5, 9.5, 10, 11.
    nonmem = np.arange(10.0)
    mem = np.array([5.5, 7.5, 9.5, 10, 11])
    s = np.r_[nonmem, mem]
    t = np.r_[np.zeros(10), np.ones(5)]
    # FPR 0: thresholds above 9 -> members 9.5, 10, 11 -> TPR 3/5
    assert metrics.tpr_at_fpr(s, t, 0.0) == pytest.approx(0.6)
    # FPR <= 0.1: may also pass non-member 9 -> TPR still 3/5
    assert metrics.tpr_at_fpr(s, t, 0.1) == pytest.approx(0.6)
    # FPR <= 0.2 -> non-members 9, 8 -> adds member 7.5 -> 4/5
    assert metrics.tpr_at_fpr(s, t, 0.2) == pytest.approx(0.8)
    # AUC by pair counting
    pairs = (mem[:, None] > nonmem[None, :]).mean()
    assert metrics.auc(s, t) == pytest.approx(pairs)


def test_auc_extremes_and_ties():
    assert metrics.auc([3, 4], [0, 1]) == 1.0
    assert metrics.auc([4, 3], [0, 1]) == 0.0
    assert metrics.auc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)


def test_lp_norms_and_psnr():
    d = torch.zeros(2, 1, 2, 2)
    d[0, 0, 0, 0] = 0.5
    d[1] = 0.1
    n = metrics.lp_norms(d)
    assert n["l0"].tolist() == [1, 4]
    assert n["l2"].tolist() == pytest.approx([0.5, 0.2])
    assert n["linf"].tolist() == pytest.approx([0.5, 0.1])
    x = torch.full((1, 1, 2, 2), 0.5)
    assert float(metrics.psnr(x + 0.1, x)) == pytest.approx(20.0, abs=1e-4)


def test_spearman_and_agreement():
    assert metrics.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert metrics.agreement(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])) == pytest.approx(2 / 3)
    assert np.isnan(metrics.median(torch.tensor([])))
