"""threatlab.validate and the checks every library entry point runs before compute.

Classes of bad input (issue 21): non-finite numbers in every kind of numeric parameter;
NaN / infinite / out-of-[0, 1] pixels; shape, dtype, device and label-range mistakes;
empty batches; `correctly_classified` short of n; data digests in results provenance.
Everything here must fail before any compute, so the file runs in seconds.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from threatlab import attacks, models, validate
from threatlab.defenses.dp_sgd import dp_sgd_train
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox
from threatlab.protocols import evasion
from threatlab.report import results

NONFINITE = [math.nan, math.inf, -math.inf]
NONFINITE_IDS = ["nan", "+inf", "-inf"]


@pytest.fixture(scope="module")
def net():
    return models.build("cnn", in_shape=(1, 8, 8), num_classes=10, seed=0).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3])


# ------------------------------------------------------------------- scalar checks


@pytest.mark.parametrize("bad", NONFINITE, ids=NONFINITE_IDS)
@pytest.mark.parametrize("check, kwargs", [
    (validate.number, {}),
    (validate.number, {"low": 0, "high": 1}),
    (validate.number, {"low": 0, "high": math.inf, "high_open": True}),
    (validate.positive, {}),
    (validate.non_negative, {}),
    (validate.fraction, {}),
])
def test_number_checks_refuse_nan_and_infinities(check, kwargs, bad):
    with pytest.raises(ConfigError, match=r"^eps=(nan|inf|-inf) must be"):
        check("eps", bad, **kwargs)
    with pytest.raises(ConfigError, match=r"^eps=np.float32\((nan|inf|-inf)\) must be"):
        check("eps", np.float32(bad), **kwargs)          # numpy scalars too


def test_number_checks_still_accept_finite_values_and_big_ints():
    assert validate.positive("eps", 0.3) == 0.3
    assert validate.number("steps", 10 ** 400, low=1, integer=True) == 10 ** 400
    assert validate.number("beta", 5.0, low=0, high=math.inf, high_open=True) == 5.0
    assert validate.fraction("rate", np.float64(0.5)) == 0.5
    with pytest.raises(ConfigError, match="steps=inf must be an integer"):
        validate.positive("steps", math.inf, integer=True)


@pytest.mark.parametrize("bad", NONFINITE, ids=NONFINITE_IDS)
def test_of_type_and_params_refuse_nonfinite_numbers(bad):
    with pytest.raises(ConfigError, match="lr=.* must be a finite number"):
        validate.of_type("lr", bad, float)
    with pytest.raises(ConfigError, match=r"eps_grid\[2\]=.* must be a finite number"):
        validate.params({"eps_grid": [0.1, 0.2, bad]}, {"eps_grid": list})
    with pytest.raises(ConfigError, match=r"sizes\['b'\]\[0\]=.* must be a finite number"):
        validate.params({"sizes": {"a": [1], "b": [bad]}}, {"sizes": dict})
    assert validate.params({"eps_grid": [0.1, 0.2], "n": 3}, {"eps_grid": list, "n": int})


# Every kind of numeric hyper-parameter of the library: budgets, step sizes, learning
# rates, noise multipliers, rates, weights, thresholds. Each call must fail at entry,
# naming the parameter.
def _wb(name, **kw):
    return lambda net, x, y, value, p: attacks.get(name)(net, x, y, **{**kw, p: value})


def _bb(name, mode="probs", **kw):
    return lambda net, x, y, value, p: attacks.get(name)(BlackBox(net, mode=mode), x, y, **{**kw, p: value})


def _train(net, x, y, value, p):
    return models.train(models.build("mlp", in_shape=(1, 8, 8), seed=0), x, y, progress=False, **{p: value})


def _dp(net, x, y, value, p):
    kw = {"lot_size": 2, "progress": False, p: value}
    return dp_sgd_train(models.build("mlp", in_shape=(1, 8, 8), seed=0), x, y, **kw)


def _cached(net, x, y, value, p):
    return models.cached("mlp", "t", x, y, train_params={p: value}, cache_dir="/nonexistent", progress=False)


NUMERIC_PARAMS = [
    ("fgsm", _wb("fgsm", eps=0.1), "eps"),
    ("bim", _wb("bim", eps=0.1, steps=2), "eps"),
    ("bim", _wb("bim", eps=0.1, steps=2), "step_size"),
    ("pgd_linf", _wb("pgd_linf", eps=0.1, steps=2), "eps"),
    ("pgd_linf", _wb("pgd_linf", eps=0.1, steps=2), "step_size"),
    ("pgd_l2", _wb("pgd_l2", eps=1.0, steps=2), "eps"),
    ("cw_l2", _wb("cw_l2", steps=2, binary_search_steps=1), "lr"),
    ("cw_l2", _wb("cw_l2", steps=2, binary_search_steps=1), "confidence"),
    ("deepfool", _wb("deepfool", steps=2), "overshoot"),
    ("jsma", _wb("jsma"), "theta"),
    ("jsma", _wb("jsma"), "gamma"),
    ("eot_pgd", _wb("eot_pgd", eps=0.1, steps=2, samples=2), "eps"),
    ("square_linf", _bb("square_linf", eps=0.1, max_queries=10), "eps"),
    ("square_linf", _bb("square_linf", eps=0.1, max_queries=10), "p_init"),
    ("square_l2", _bb("square_l2", eps=1.0, max_queries=10), "eps"),
    ("simba", _bb("simba", max_queries=10), "eps"),
    ("simba", _bb("simba", max_queries=10), "step"),
    ("boundary", _bb("boundary", mode="label", max_queries=10), "spherical_step"),
    ("boundary", _bb("boundary", mode="label", max_queries=10), "step_adaptation"),
    ("hopskipjump", _bb("hopskipjump", mode="label", max_queries=10), "gamma"),
    ("fredrikson", _bb("fredrikson", steps=2), "lr"),
    ("fredrikson", _bb("fredrikson", steps=2), "tv_weight"),
    ("dlg", _wb("dlg", steps=2), "noise_multiplier"),
    ("train", _train, "lr"),
    ("train", _train, "weight_decay"),
    ("train", _train, "momentum"),
    ("cached", _cached, "lr"),
    ("dp_sgd", _dp, "lr"),
    ("dp_sgd", _dp, "clip"),
    ("dp_sgd", _dp, "noise_multiplier"),
    ("dp_sgd", _dp, "delta"),
]


@pytest.mark.parametrize("bad", NONFINITE, ids=NONFINITE_IDS)
@pytest.mark.parametrize("call, param", [c[1:] for c in NUMERIC_PARAMS],
                         ids=[f"{c[0]}-{c[2]}" for c in NUMERIC_PARAMS])
def test_every_numeric_parameter_refuses_nan_and_infinities(net, batch, call, param, bad):
    x, y = batch
    with pytest.raises(ConfigError, match=rf"^{param}=(nan|inf|-inf) "):
        call(net, x, y, bad, param)


def test_poisoning_and_extraction_parameters_refuse_nonfinite(net, batch):
    x, y = batch
    from threatlab.attacks import extraction
    for bad in NONFINITE:
        with pytest.raises(ConfigError, match="^rate="):
            attacks.get("label_flip_random")(x, y, rate=bad)
        with pytest.raises(ConfigError, match="^eps="):
            attacks.get("feature_collision")(net, x, y, target=x.flip(0), eps=bad)
        with pytest.raises(ConfigError, match="^beta="):
            attacks.get("feature_collision")(net, x, y, target=x.flip(0), beta=bad)
        with pytest.raises(ConfigError, match="^eps="):
            extraction.transfer_attack(net, BlackBox(net), x, y, eps=bad)
        with pytest.raises(ConfigError, match="^lam="):
            attacks.get("jacobian")(BlackBox(net, mode="label"), x, budgets=[8], lam=bad)


# ------------------------------------------------------------------- tensor checks


@pytest.mark.parametrize("value, match", [
    (math.nan, "NaN or infinite"), (math.inf, "NaN or infinite"), (-math.inf, "NaN or infinite"),
    (-0.01, r"must lie in \[0, 1\]"), (1.01, r"must lie in \[0, 1\]"),
])
def test_images_refuses_nonfinite_and_out_of_range_pixels(value, match):
    x = torch.rand(3, 1, 4, 4)
    x[2, 0, 1, 1] = value
    with pytest.raises(ConfigError, match=match):
        validate.images("x", x)
    if not math.isfinite(value):   # NaN and +-inf are refused even when any range is fine
        with pytest.raises(ConfigError, match="first in row 2"):
            validate.images("x", x, unit_range=False)
    else:
        validate.images("x", x, unit_range=False)


def test_images_names_0_to_255_inputs():
    with pytest.raises(ConfigError, match=r"got values in \[0, 255\] \(pixels 0..255\? divide by 255\)"):
        validate.images("x", torch.arange(256.).reshape(1, 1, 16, 16))


def test_labels_and_model_input_messages(net):
    with pytest.raises(ConfigError, match=r"^y holds class ids 0..10; allowed: 0..9 \(the model has 10 classes\)"):
        validate.labels("y", torch.tensor([0, 10]), 2, num_classes=10)
    with pytest.raises(ConfigError, match=r"allowed: >= 0"):
        validate.labels("y", torch.tensor([-1, 3]), 2)
    with pytest.raises(ConfigError, match=r"must be an integer tensor \(any integer dtype; not bool or floating\) of shape \(2,\)"):
        validate.labels("y", torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ConfigError, match=r"x has shape \(2, 64\); the model expects \[n, 1, 8, 8\]"):
        validate.model_input(net, torch.rand(2, 64))
    with pytest.raises(ConfigError, match=r"x has dtype torch.float64; the model computes in torch.float32"):
        validate.model_input(net, torch.rand(2, 1, 8, 8, dtype=torch.float64))
    facts = validate.model_facts(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)))
    assert facts["num_classes"] == 3 and facts["in_shape"] is None and facts["dtype"] == torch.float32
    assert validate.model_facts(lambda x: x) == {"in_shape": None, "num_classes": None, "dtype": None,
                                                 "device": None}


def test_device_disagreement_is_named(net, batch):
    # The meta device stands in for an accelerator: it has no data, so nothing can run.
    x, y = batch
    meta = models.build("cnn", in_shape=(1, 8, 8), seed=0).to("meta")
    with pytest.raises(ConfigError, match=r"x is on cpu but the model is on meta"):
        validate.batch(meta, x, y)
    with pytest.raises(ConfigError, match=r"x is on cpu but the model is on meta"):
        attacks.get("fgsm")(meta, x, y, eps=0.1)
    with pytest.raises(ConfigError, match=r"query x is on cpu but the model is on meta"):
        BlackBox(meta)(x)
    with pytest.raises(ConfigError, match=r"y is on meta but x is on cpu"):
        validate.batch(net, x, y.to("meta"))


def _bad_batches(x, y):
    nan = x.clone()
    nan[3, 0, 7, 7] = math.nan
    inf = x.clone()
    inf[1, 0, 0, 0] = math.inf
    return {
        "nan-pixel": ((nan, y), "NaN or infinite"),
        "inf-pixel": ((inf, y), "NaN or infinite"),
        "0..255": ((x * 255, y), r"must lie in \[0, 1\]"),
        "flat": ((x.reshape(4, 64), y), r"the model expects \[n, 1, 8, 8\]"),
        "float64": ((x.double(), y), "dtype torch.float64"),
        "label>=classes": ((x, torch.tensor([0, 1, 2, 10])), r"class ids 0..10; allowed: 0..9"),
        "label<0": ((x, torch.tensor([0, -1, 2, 3])), r"class ids -1..3"),
        "float-labels": ((x, y.float()), r"y must be an integer tensor \(any integer dtype; not bool or floating\)"),
        "empty": ((x[:0], y[:0]), "0 rows"),
    }


# One cheap configuration per registered kernel whose first argument is a model or an
# oracle: the entry checks must refuse each bad batch before the kernel computes.
KERNELS = {
    "fgsm": ("model", {"eps": 0.1}), "bim": ("model", {"eps": 0.1, "steps": 1}),
    "pgd_linf": ("model", {"eps": 0.1, "steps": 1}), "pgd_l2": ("model", {"eps": 1.0, "steps": 1}),
    "cw_l2": ("model", {"steps": 1, "binary_search_steps": 1}), "deepfool": ("model", {"steps": 1}),
    "jsma": ("model", {}), "eot_pgd": ("model", {"eps": 0.1, "steps": 1, "samples": 1}),
    "square_linf": ("probs", {"eps": 0.1, "max_queries": 5}),
    "square_l2": ("probs", {"eps": 1.0, "max_queries": 5}), "simba": ("probs", {"max_queries": 5}),
    "boundary": ("label", {"max_queries": 5}), "hopskipjump": ("label", {"max_queries": 5}),
    "mi_loss": ("probs", {}), "mi_confidence": ("probs", {}), "mi_entropy": ("probs", {}),
    "fredrikson": ("probs", {"steps": 1}), "dlg": ("model", {"steps": 1}),
    "sign_noise": ("label", {"eps": 0.1}), "mi_label_only": ("label", {}),
    "apgd_ce": ("model", {"eps": 0.1, "steps": 1}), "apgd_dlr": ("model", {"eps": 0.1, "steps": 1}),
    "min_linf": ("model", {"bisection_steps": 0, "steps": 1}),
    "nes_linf": ("probs", {"eps": 0.1, "max_queries": 5, "samples": 2}),
    "nes_l2": ("probs", {"eps": 1.0, "max_queries": 5, "samples": 2}),
    "pointwise": ("label", {"max_queries": 5}),
}


@pytest.mark.parametrize("case", list(_bad_batches(torch.rand(4, 1, 8, 8), torch.arange(4))))
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernels_refuse_bad_batches_before_compute(net, batch, name, case):
    (x, y), match = _bad_batches(*batch)[case]
    access, kw = KERNELS[name]
    first = net if access == "model" else BlackBox(net, mode=access)
    with pytest.raises(ConfigError, match=match):
        attacks.get(name)(first, x, y, **kw)
    if isinstance(first, BlackBox):
        assert first.total == 0          # refused before the first query was charged


def test_every_model_kernel_is_covered_by_the_entry_checks():
    # A kernel registered later is checked by the registry without a line of its own;
    # this list only has to name one cheap configuration for each to test it.
    data_first = {"label_flip_random", "label_flip_targeted", "badnets"}
    no_x = {"equation_solving"}
    pool_only = set(attacks.names("extraction")) - no_x - {"sign_noise"}  # (oracle, x), no labels
    # need extra inputs (features, shadow outputs); covered below or in test_inversion
    feature = {"feature_collision", "mi_shadow", "mi_lira", "mi_lira_offline", "mi_class_loss",
               "mi_class_threshold"}
    assert set(attacks.names()) - data_first - no_x - pool_only - feature - set(KERNELS) == set()
    for name in attacks.names():
        assert hasattr(attacks.get(name), "__wrapped__") and attacks.get(name).attack_name == name


def test_extraction_and_feature_collision_inputs_are_checked(net, batch):
    x, y = batch
    nan = x.clone()
    nan[0, 0, 0, 0] = math.nan
    for name in sorted(set(attacks.names("extraction")) - {"equation_solving", "sign_noise"}):
        kw = {} if name == "substitute" else {"budgets": [4]}
        with pytest.raises(ConfigError, match="NaN or infinite"):
            attacks.get(name)(BlackBox(net, mode="probs"), nan, **kw)
        with pytest.raises(ConfigError, match=r"the model expects \[n, 1, 8, 8\]"):
            attacks.get(name)(BlackBox(net, mode="probs"), x.reshape(4, 64), **kw)
    with pytest.raises(ConfigError, match="^target holds 1 NaN"):
        attacks.get("feature_collision")(net, x, y, target=nan)
    with pytest.raises(ConfigError, match=r"^target has shape \(4, 64\)"):
        attacks.get("feature_collision")(net, x, y, target=torch.rand(4, 64))
    with pytest.raises(ConfigError, match="class ids 0..10"):
        attacks.get("mi_shadow")(BlackBox(net), x, torch.tensor([0, 1, 2, 10]),
                                 shadow_probs=torch.rand(2, 4, 10), shadow_in=torch.ones(2, 4, dtype=torch.bool))


def test_targeted_labels_are_checked_against_the_model(net, batch):
    x, y = batch
    with pytest.raises(ConfigError, match=r"^target holds class ids"):
        attacks.get("pgd_linf")(net, x, y, eps=0.1, steps=1, targeted=True, target=torch.tensor([1, 2, 3, 12]))


def test_a_good_batch_still_runs(net, batch):
    x, y = batch
    res = attacks.get("fgsm")(net, x, y, eps=0.1)
    assert res.x_adv.shape == x.shape and res.success.shape == (4,)
    bb = BlackBox(net, mode="probs")
    res = attacks.get("square_linf")(bb, x, y, eps=0.1, max_queries=5,
                                     generator=torch.Generator().manual_seed(0))
    assert res.x_adv.shape == x.shape and bb.total > 0


# ------------------------------------------------------------- correctly_classified


def test_correctly_classified_returns_exactly_n_or_says_how_many(net, batch, digits):
    x, y = digits
    x, y = x[:64], y[:64]
    pred = net(x).argmax(1)
    right = int((pred == y).sum())
    assert 0 < right < 64                       # an untrained net gets some right
    xs, ys = evasion.correctly_classified(net, x, y, right)
    assert xs.shape[0] == ys.shape[0] == right
    assert torch.equal(net(xs).argmax(1), ys)
    first = (pred == y).nonzero().squeeze(1)[:3]
    xs3, _ = evasion.correctly_classified(net, x, y, 3)
    assert torch.equal(xs3, x[first])           # the first ones, in x's order
    with pytest.raises(ConfigError, match=rf"n={right + 1}: only {right} of the 64 examples"):
        evasion.correctly_classified(net, x, y, right + 1)
    for bad in (0, -1, 2.5, math.inf, math.nan):
        with pytest.raises(ConfigError, match="^n="):
            evasion.correctly_classified(net, x, y, bad)
    with pytest.raises(ConfigError, match="dtype torch.float64"):
        evasion.correctly_classified(net, x.double(), y, 3)


# ------------------------------------------------------------ data digests in results


def test_recorder_records_the_sha256_of_the_data(tmp_path, batch):
    x, y = batch
    rec = results.Recorder("99_test", tmp_path, params={"seed": 0})
    got = rec.data("x_test", x, y)
    rec.metric("m", 1.0)
    doc = json.loads(rec.save().read_text())
    assert doc["provenance"]["data"] == {"x_test": got}
    assert got == {"sha256": models.tensor_digest(x, y), "shapes": [[4, 1, 8, 8], [4]],
                   "dtypes": ["float32", "int64"]}
    assert doc["metrics"] == {"m": 1.0} and doc["evidence"] == {}
    # a numpy array hashes like the tensor made from it; one changed value, another
    # order or another subset gives another digest
    assert results.data_digest(x.numpy(), y.numpy())["sha256"] == got["sha256"]
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1e-3
    assert results.data_digest(x2, y)["sha256"] != got["sha256"]
    assert results.data_digest(x.flip(0), y.flip(0))["sha256"] != got["sha256"]
    assert results.data_digest(x[:3], y[:3])["sha256"] != got["sha256"]
    with pytest.raises(ConfigError, match="expected a torch tensor or numpy array"):
        rec.data("bad", [1, 2, 3])
    with pytest.raises(ConfigError, match="at least one"):
        results.data_digest()


def test_results_record_the_sha256_of_every_split_loaded(tmp_path):
    """data.load registers each split it returns; the results file names them."""
    import json

    from threatlab import data
    from threatlab.report.results import Recorder

    x, y = data.load("digits", "train", n=100)
    key = "digits/train[:100]"
    digest = data.loaded()[key]
    assert len(digest) == 64
    data.load("digits", "train", n=100)
    assert data.loaded()[key] == digest                      # same data, same digest
    data.load("digits", "train", n=101)
    assert data.loaded()["digits/train[:101]"] != digest     # another subset, another digest
    doc = json.loads(Recorder("01_model_extraction", tmp_path, params={"seed": 0}).save().read_text())
    assert doc["provenance"]["data_loaded"][key] == digest
