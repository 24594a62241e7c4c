"""F02's substitutes fitted at once (attacks.extraction.fit_substitutes via
attacks.extraction.pool_queries_many) against the same fits one after another."""
import pytest
import torch
from torch import nn

from threatlab.attacks import extraction as ex
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox

SHAPE = (1, 4, 5)
MODES = ("probs", "rounded", "label")
# Early stopping must act for the test to mean anything: a short patience and a quick
# learning rate make the modes stop at different epochs within each budget (11/10/30,
# 11/12/10, 10/6/15), so their generators part ways before the next budget's split.
FIT = dict(arch="mlp", arch_params={"hidden": [16]}, max_epochs=30, patience=2, min_steps=10, batch_size=16,
           lr=1e-2)


def victim():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


def curves(stacked, seeds=(5, 5, 5), modes=MODES, **kw):
    v = victim()
    pool = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(2))
    x_eval = torch.rand(100, *SHAPE, generator=torch.Generator().manual_seed(3))
    oracles = [BlackBox(v, mode=m, decimals=1) for m in modes]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = ex.pool_queries_many(oracles, pool, budgets=[30, 60, 120], generators=gens, eval_x=x_eval,
                               eval_labels=v(x_eval).argmax(1), stacked=stacked, **{**FIT, **kw})
    return out, oracles, gens


def test_stacked_fits_match_the_sequential_ones():
    seq, seq_oracles, seq_gens = curves(stacked=False)
    stk, stk_oracles, stk_gens = curves(stacked=True)
    for i in range(3):  # within every budget, the modes stopped at different epochs
        assert len({c.epochs[i] for c in seq}) > 1
    for a, b, oa, ob in zip(seq, stk, seq_oracles, stk_oracles):
        assert a.epochs == b.epochs and a.queries == b.queries and oa.total == ob.total
        assert torch.equal(a.x_query, b.x_query)
        assert a.agreement == pytest.approx(b.agreement, abs=0.02)
        for sa, sb in zip(a.substitutes, b.substitutes):
            for (k, pa), pb in zip(sa.state_dict().items(), sb.state_dict().values()):
                torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-4, msg=k)
    # Each generator is left where the sequential fits leave it (a stopped model draws no more).
    for ga, gb in zip(seq_gens, stk_gens):
        assert torch.equal(torch.randperm(50, generator=ga), torch.randperm(50, generator=gb))


def test_the_pool_queries_path_is_what_unstacked_curves_run():
    v = victim()
    pool = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(2))
    x_eval = torch.rand(100, *SHAPE, generator=torch.Generator().manual_seed(3))
    one = ex.pool_queries(BlackBox(v, mode="label"), pool, budgets=[30, 60, 120], eval_x=x_eval,
                          eval_labels=v(x_eval).argmax(1), generator=torch.Generator().manual_seed(7), **FIT)
    # Different seeds mean different query orders: nothing to stack, each curve on its own.
    many, _, _ = curves(stacked=True, seeds=(5, 7), modes=("probs", "label"))
    assert many[1].agreement == one.agreement and many[1].epochs == one.epochs
    for sa, sb in zip(one.substitutes, many[1].substitutes):
        for pa, pb in zip(sa.state_dict().values(), sb.state_dict().values()):
            assert torch.equal(pa, pb)


def test_without_a_held_out_slice_every_model_runs_every_epoch():
    seq, _, _ = curves(stacked=False, val_fraction=0.0, max_epochs=3)
    stk, _, _ = curves(stacked=True, val_fraction=0.0, max_epochs=3)
    for a, b in zip(seq, stk):
        assert a.epochs == b.epochs
        for sa, sb in zip(a.substitutes, b.substitutes):
            for pa, pb in zip(sa.state_dict().values(), sb.state_dict().values()):
                torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad, match", [
    (dict(generators="one"), "generators must be a list of 2"),
    (dict(generators=[torch.Generator()]), "generators must be a list of 2"),
    (dict(oracles=[]), "oracles must be a non-empty list"),
    (dict(budgets=[30, 999]), "budgets go up to 999"),
])
def test_bad_input_is_refused_before_any_query(bad, match):
    v = victim()
    oracles = [BlackBox(v, mode="probs"), BlackBox(v, mode="label")]
    args = dict(oracles=oracles, x=torch.rand(200, *SHAPE), budgets=[30, 60],
                generators=[torch.Generator(), torch.Generator()])
    args.update(bad)
    with pytest.raises(ConfigError, match=match):
        ex.pool_queries_many(args.pop("oracles"), args.pop("x"), **args, **FIT)
    assert all(o.total == 0 for o in oracles)
