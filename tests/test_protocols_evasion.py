"""The notebook-04 protocol helpers (protocols.evasion): matched-success levels, the
transformation rule, matched-set norm medians, model-pass counting, AT vs standard, the
minimal-perturbation and black-box suites, EOT vs plain PGD, the defenses' accuracies and
the evidence each F13-F18 judge reads."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from threatlab import attacks, models
from threatlab.attacks.result import AttackResult
from threatlab.errors import ConfigError
from threatlab.oracle import BlackBox
from threatlab.protocols import evasion
from threatlab.transforms import RandomTransform

from test_blackbox import digits_cnn  # noqa: F401  (fixture)


def test_queries_at_levels_reads_the_success_curve():
    inf = math.inf
    q2s = torch.tensor([5.0, 1.0, inf, 3.0, 9.0, inf, 2.0, 7.0, inf, inf])
    # 10 examples: 10 % -> 1st smallest, 25 % -> 3rd (ceil 2.5), 50 % -> 5th, 70 % -> never
    assert evasion.queries_at_levels(q2s, [0.1, 0.25, 0.5, 0.6, 0.7]) == [1.0, 3.0, 7.0, 9.0, None]
    # consistent with success_vs_queries: at the returned budget the level is reached,
    # one query fewer it is not
    for p, q in zip([0.1, 0.25, 0.5], [1.0, 3.0, 7.0]):
        assert evasion.success_vs_queries(q2s, [q])[0] >= p > evasion.success_vs_queries(q2s, [q - 1])[0]
    with pytest.raises(ConfigError, match="level=0"):
        evasion.queries_at_levels(q2s, [0])


def test_best_at_levels_takes_the_fewest_queries_per_level():
    assert evasion.best_at_levels({"a": [10.0, None, None], "b": [20.0, 30.0, None]}) == [10.0, 30.0, None]
    assert evasion.best_at_levels({}) == []


class Threshold(nn.Module):
    """Class 1 iff the mean pixel exceeds 0.5: noise rarely flips images far from 0.5."""
    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([0.5 - m, m - 0.5], 1) * 50


def test_fooled_fractions_uses_the_same_draws_for_every_set():
    x = torch.full((10, 1, 8, 8), 0.3)
    y = torch.zeros(10, dtype=torch.long)
    t = RandomTransform(["noise"], noise_std=0.0)
    out = evasion.fooled_fractions(Threshold(), {"clean": x, "adv": x + 0.5, "same": x.clone()}, y, t,
                                   draws=5, threshold=0.9, seed=0)
    assert out["clean"] == {"untransformed": 0.0, "mean_over_draws": 0.0, "fooled_in_most_draws": 0.0}
    assert out["adv"] == {"untransformed": 1.0, "mean_over_draws": 1.0, "fooled_in_most_draws": 1.0}
    assert out["same"] == out["clean"]


def test_minimal_norms_uses_the_examples_every_attack_fooled():
    x = torch.zeros(4, 3)
    a = AttackResult(torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [0, 0, 0]]),
                     torch.tensor([True, True, True, False]))
    b = AttackResult(torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [9.0, 9.0, 9.0], [1.0, 1.0, 1.0]]),
                     torch.tensor([True, True, False, True]))
    out = evasion.minimal_norms(x, {"a": a, "b": b})
    assert out["n_common"] == 2 and out["n"] == 4
    assert out["median"]["a"]["l0"] == 1.0 and out["median"]["b"]["l0"] == 2.0
    # over a's own successes (1, 2, 3) the median L-inf would be 2; over the matched
    # set (1, 2) it is 1 (metrics.median: torch's lower median)
    assert out["median"]["a"]["linf"] == 1.0
    assert out["success"] == {"a": 0.75, "b": 0.75}


def test_first_eps_reaching():
    assert evasion.first_eps_reaching([0.3, 0.1, 0.2], [1.0, 0.5, 0.95], 0.9) == 2
    assert evasion.first_eps_reaching([0.1, 0.2], [0.5, 0.6], 0.9) is None


def test_pass_counter_counts_forward_and_backward_rows():
    model = nn.Linear(4, 3)
    c = evasion.PassCounter(model)
    x = torch.rand(5, 4, requires_grad=True)
    out = c(x)
    for k in range(3):  # three gradients through one forward: DeepFool's pattern
        torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)
    with torch.no_grad():
        c(torch.rand(2, 4))
    assert (c.forward_rows, c.backward_rows, c.passes) == (7, 15, 22)


def test_counted_attack_counts_what_the_kernel_does(digits_cnn):
    model, x, y = digits_cnn
    res, secs, per = evasion.counted_attack("pgd_linf", model, x, y, eps=0.1, steps=7,
                                            generator=torch.Generator().manual_seed(0))
    # 7 forward + 7 backward per example, plus the final success check
    assert per == 15.0 and secs > 0 and res.success.shape == y.shape


def test_robust_accuracy_is_judged_on_the_defended_model(digits_cnn):
    model, x, y = digits_cnn
    r = evasion.robust_accuracy(model, x, y, eps=0.3, steps=10, seed=0)
    res = attacks.get("pgd_linf")(model, x, y, eps=0.3, steps=10, generator=torch.Generator().manual_seed(0))
    assert r == pytest.approx(1 - res.success_rate)


# ------------------------------------------------ notebook 04's protocol functions


MINI_SUITE = {"jsma": {"gamma": 0.2}, "cw_l2": {"steps": 5, "binary_search_steps": 2, "lr": 0.1},
              "deepfool": {"steps": 10}, "min_linf": {"bisection_steps": 3, "steps": 5}}


def test_minimal_perturbation_suite_matches_its_parts(digits_cnn):
    model, x, y = digits_cnn
    x, y = x[:8], y[:8]
    out = evasion.minimal_perturbation_suite(model, x, y, MINI_SUITE, seed=0)
    assert list(out["results"]) == list(MINI_SUITE) == [r["attack"] for r in out["rows"]]
    # each attack as counted_attack runs it alone, with a fresh generator seeded 0
    for name, kw in MINI_SUITE.items():
        res, _, per = evasion.counted_attack(name, model, x, y, generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(res.x_adv, out["results"][name].x_adv)
        assert out["norms"]["passes_per_example"][name] == per
    assert out["norms"]["median"] == evasion.minimal_norms(x, out["results"])["median"]
    # JSMA changes pixel pairs: 0.2 x 64 pixels = 12.8 -> 12; hit_cap counts its capped examples
    assert out["n_pixels"] == 64 and out["norms"]["jsma_cap"] == 12
    assert out["norms"]["jsma_hit_cap"] == int(out["results"]["jsma"].extra["hit_cap"].sum())
    assert set(out["seconds_per_example"]) == set(MINI_SUITE) and all(s > 0 for s in out["seconds_per_example"].values())
    row = out["rows"][1]
    assert row["median L2"] == out["norms"]["median"]["cw_l2"]["l2"] and row["success"] == out["norms"]["success"]["cw_l2"]
    # same seed, same numbers; the timings aside
    again = evasion.minimal_perturbation_suite(model, x, y, MINI_SUITE, seed=0)
    assert again["norms"] == out["norms"] and again["rows"] == out["rows"]
    # without JSMA there is no cap to report
    assert evasion.minimal_perturbation_suite(model, x[:2], y[:2], {"deepfool": {"steps": 5}})["norms"]["jsma_cap"] is None


def test_minimal_perturbation_suite_refuses_bad_suites_before_any_attack(digits_cnn):
    model, x, y = digits_cnn
    with pytest.raises(ConfigError, match="attack='cw_l3' is not a registered attack"):
        evasion.minimal_perturbation_suite(model, x, y, {"deepfool": {}, "cw_l3": {}})
    with pytest.raises(ConfigError, match=r"suite\['deepfool'\] sets \['generator'\]"):
        evasion.minimal_perturbation_suite(model, x, y, {"deepfool": {"generator": None}})
    with pytest.raises(ConfigError, match="suite={} must be a non-empty dict"):
        evasion.minimal_perturbation_suite(model, x, y, {})


BB_SUITE = {"square_l2": ("score", "probs", {}), "simba": ("score", "probs", {"step": 0.3}),
            "boundary": ("decision", "label", {})}


def test_blackbox_suite_scores_every_attack_at_matched_success(digits_cnn):
    model, x, y = digits_cnn
    x, y = x[:10], y[:10]
    out = evasion.blackbox_suite(model, x, y, BB_SUITE, eps=2.0, max_queries=150, levels=[0.1, 0.5], seed=0)
    assert out["q_grid"][0] == 1 and out["q_grid"][-1] == 150 and out["q_grid"] == sorted(set(out["q_grid"]))
    assert list(out["at_levels"]) == ["score", "decision"]
    assert list(out["at_levels"]["score"]) == ["square_l2", "simba"] and list(out["at_levels"]["decision"]) == ["boundary"]
    # the curve is read off queries_to_success of the very same run
    oracle = BlackBox(model, mode="probs")
    res = attacks.get("square_l2")(oracle, x, y, eps=2.0, max_queries=150, generator=torch.Generator().manual_seed(0))
    q2s = evasion.queries_to_success(res.extra["trace"], norm="l2", eps=2.0)
    assert out["curves"]["square_l2"] == evasion.success_vs_queries(q2s, out["q_grid"])
    assert out["at_levels"]["score"]["square_l2"] == evasion.queries_at_levels(q2s, [0.1, 0.5])
    assert out["best"]["score"] == evasion.best_at_levels(out["at_levels"]["score"])
    row = out["rows"][0]
    assert row["attack"] == "square_l2" and row["kind"] == "score" and row["oracle"] == "probs"
    assert row["success"] == float(torch.isfinite(q2s).double().mean())
    assert [row["queries @10%"], row["queries @50%"]] == out["at_levels"]["score"]["square_l2"]
    assert (out["levels"], out["eps"], out["max_queries"], out["examples"]) == ([0.1, 0.5], 2.0, 150, 10)
    again = evasion.blackbox_suite(model, x, y, BB_SUITE, eps=2.0, max_queries=150, levels=[0.1, 0.5], seed=0)
    assert again["curves"] == out["curves"] and again["rows"] == out["rows"]


def test_blackbox_suite_fails_when_a_query_bypassed_the_counter(digits_cnn, monkeypatch):
    model, x, y = digits_cnn
    real = evasion.timed_attack

    def leaky(*args, **kwargs):  # reports one query more than the oracle counted
        res, secs = real(*args, **kwargs)
        res.queries = res.queries + 1
        return res, secs

    monkeypatch.setattr(evasion, "timed_attack", leaky)
    with pytest.raises(RuntimeError, match="square_l2: the attack reports .* but the oracle counted"):
        evasion.blackbox_suite(model, x[:4], y[:4], {"square_l2": ("score", "probs", {})}, eps=2.0,
                               max_queries=20, levels=[0.5])


def test_blackbox_suite_refuses_bad_input_before_any_query(digits_cnn):
    model, x, y = digits_cnn
    kw = dict(eps=2.0, max_queries=100, levels=[0.5])
    with pytest.raises(ConfigError, match=r"suite\['simba'\] kind='scores' is not allowed"):
        evasion.blackbox_suite(model, x, y, {"simba": ("scores", "probs", {})}, **kw)
    with pytest.raises(ConfigError, match=r"suite\['simba'\] sets \['eps'\]"):
        evasion.blackbox_suite(model, x, y, {"simba": ("score", "probs", {"eps": 1.0})}, **kw)
    with pytest.raises(ConfigError, match=r"levels\[0\]=0 is outside"):
        evasion.blackbox_suite(model, x, y, BB_SUITE, eps=2.0, max_queries=100, levels=[0])


def _calibration_task():
    x = torch.cat([torch.full((20, 1, 8, 8), 0.45), torch.full((20, 1, 8, 8), 0.9)])
    y = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    base = dict(max_shift=0.0, max_angle=0.0, max_blur=0.0, noise_std=1.0)
    return x, y, base


def test_eot_vs_plain_pgd_attacks_both_ways_and_scores_on_fresh_draws(digits_cnn):
    model, x, y = digits_cnn
    t = RandomTransform(["shift", "noise"], max_shift=1.0, noise_std=0.05)
    kw = dict(eps=0.15, steps=5, samples=2, confidence=10.0, draws=4, threshold=0.9, seed=0, draw_seed=1)
    out = evasion.eot_vs_plain_pgd(model, x, y, t, **kw)
    plain = attacks.get("pgd_linf")(model, x, y, eps=0.15, steps=5, loss="margin", confidence=10.0,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["plain"].x_adv, plain.x_adv)
    assert out["eot"].x_adv.shape == x.shape and not torch.equal(out["eot"].x_adv, plain.x_adv)
    assert out["fooled"] == evasion.fooled_fractions(model, {"clean": x, "plain": plain.x_adv, "eot": out["eot"].x_adv},
                                                     y, t, draws=4, threshold=0.9, seed=1)
    assert out["fooled"]["clean"]["untransformed"] == 0.0  # digits_cnn's images are classified correctly
    assert (out["eps"], out["draws"], out["threshold"], out["confidence"], out["transform"]) == (0.15, 4, 0.9, 10.0, t)
    assert evasion.eot_vs_plain_pgd(model, x, y, t, **kw)["fooled"] == out["fooled"]
    with pytest.raises(ConfigError, match="draw_seed=0 equals seed"):
        evasion.eot_vs_plain_pgd(model, x, y, t, **{**kw, "draw_seed": 0})


def test_defense_accuracies_measures_each_model_as_the_notebook_reads_it(digits_cnn):
    from threatlab.defenses.quantization import InputQuantization

    model, x, y = digits_cnn
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        other[1].weight.copy_(torch.linspace(-1, 1, 640).view(10, 64))
    kw = dict(eps=0.2, pgd_steps=5, quant_levels=4, aa_steps=5, square_queries=20, seed=0)
    out = evasion.defense_accuracies(model, other, x, y, x[:12], y[:12], **kw)
    assert list(out) == list(evasion.DEFENSES)
    assert set(out["standard"]) == set(out["adversarial training"]) == {"clean", "pgd", "worst_case", "worst_case_after"}
    assert set(out["input quantization"]) == {"clean", "pgd", "bpda"}
    assert out["standard"]["clean"] == models.accuracy(model, x, y) == 1.0
    assert out["adversarial training"]["pgd"] == evasion.robust_accuracy(other, x[:12], y[:12], eps=0.2, steps=5, seed=0)
    q = InputQuantization(model, 4).eval()
    assert out["input quantization"]["bpda"] == evasion.robust_accuracy(q, x[:12], y[:12], eps=0.2, steps=5, seed=0,
                                                                        attack_model=q.bpda())
    # rounding masks the gradient: plain PGD fails where BPDA's straight-through gradient succeeds
    assert out["input quantization"]["pgd"] > out["input quantization"]["bpda"]
    wc = evasion.worst_case_robust(model, x[:12], y[:12], eps=0.2, steps=5, square_queries=20, seed=0)
    assert out["standard"]["worst_case"] == wc["robust_accuracy"]
    assert list(out["standard"]["worst_case_after"]) == ["apgd_ce", "apgd_dlr", "square_linf"]
    assert evasion.defense_accuracies(model, other, x, y, x[:12], y[:12], **kw) == out
    with pytest.raises(ConfigError, match="quant_levels=1 is outside"):
        evasion.defense_accuracies(model, other, x, y, x, y, **{**kw, "quant_levels": 1})


# ---------------------------------------------------------------- evidence F13-F18


def _minimal_run():
    med = {"jsma": {"l0": 4.0, "l2": 1.7, "linf": 1.0}, "cw_l2": {"l0": 116.0, "l2": 0.13, "linf": 0.03},
           "deepfool": {"l0": 478.0, "l2": 0.05, "linf": 0.01}, "min_linf": {"l0": 458.0, "l2": 3.0, "linf": 0.14}}
    norms = {"median": med, "success": {k: 0.5 for k in med}, "n_common": 3, "n": 4, "jsma_cap": 78,
             "jsma_hit_cap": 2, "passes_per_example": {"jsma": 119.0, "cw_l2": 41.0, "deepfool": 137.0, "min_linf": 22.0}}
    return {"norms": norms, "n_pixels": 784}


def test_evidence_f13_and_f14_read_the_runs():
    from threatlab.report.judges import adversarial as judges

    who = dict(dataset="mnist", architecture="lenet5", accuracy=0.985)
    norms = {"n": 4, "n_pixels": 784, "eps_max": 1.0, "models": {
        "std": {"median_linf": 0.1, "median_l0": 12.0, "failures_linf": 0, "failures_l0": 1, "pointwise_smaller": 1},
        "at": {"median_linf": 0.35, "median_l0": None, "failures_linf": 0, "failures_l0": 3, "pointwise_smaller": 0}}}
    e13 = evasion.evidence_f13(norms, standard="std", adversarial="at", **who)
    assert e13["median_linf"] == {"standard": 0.1, "adversarial": 0.35}
    assert e13["median_l0"] == {"standard": 12.0, "adversarial": None}  # infinite: more than half failed
    assert e13["failures"]["adversarial"] == {"linf": 0, "l0": 3} and e13["victim_accuracy"] == 0.985
    v = judges.FINDINGS[0].judge_evidence(e13)
    # an infinite median reads as the pixel count: L0 grew, the claim fails
    assert v.status == "not supported" and v.numbers["median minimal L0"]["adversarial"] == 784
    run = _minimal_run()
    curve = {"fgsm": [0.2, 0.5, 0.6], "pgd_linf": [0.5, 0.95, 1.0]}
    e14 = evasion.evidence_f14([0.1, 0.2, 0.3], curve, run, cw={"steps": 1000}, **who)
    assert e14["eps_at_90"] == 0.2 and e14["success"] is curve and e14["cw"] == {"steps": 1000}
    assert e14["median_l2"] == {"cw_l2": 0.13, "deepfool": 0.05}
    assert e14["passes_per_example"] == {"cw_l2": 41.0, "deepfool": 137.0}
    assert evasion.evidence_f14([0.1], {"fgsm": [0.1], "pgd_linf": [0.2]}, run, cw={}, **who)["eps_at_90"] is None
    judges.FINDINGS[1].judge_evidence(e14)
    with pytest.raises(ConfigError, match=r"norms\['models'\] lacks \['at'\]"):
        evasion.evidence_f13({**norms, "models": {"std": norms["models"]["std"]}}, standard="std", adversarial="at",
                             **who)
    with pytest.raises(ConfigError, match=r"success\['pgd_linf'\] has 2 values; eps_grid has 3"):
        evasion.evidence_f14([0.1, 0.2, 0.3], {"fgsm": [0, 0, 0], "pgd_linf": [0, 0]}, run, cw={}, **who)


def test_evidence_f15_f16_f17_f18_build_what_the_judges_read():
    from threatlab.report.judges import adversarial as judges

    judge = {f.id: f.judge_evidence for f in judges.FINDINGS}
    who = dict(dataset="mnist", architecture="lenet5")
    bb = {"levels": [0.1, 0.5], "at_levels": {"score": {"a": [1.0, None]}, "decision": {"b": [11.0, None]}},
          "best": {"score": [1.0, None], "decision": [11.0, None]}, "max_queries": 10000, "eps": 3.0, "examples": 30,
          "intervals": {"score": {"queries": [1.0, 20000.0], "low": [1.0, 20000.0], "high": [3.0, 20000.0]}}}
    e15 = evasion.evidence_f15(bb, accuracy=0.99, **who)
    assert e15["budget"] == {"score": 10000, "decision": 10000} and e15["queries"] is bb["at_levels"]
    assert (e15["eps_l2"], e15["examples"], e15["levels"]) == (3.0, 30, [0.1, 0.5])
    assert judge["F15"](e15).numbers["score-based queries 95% interval"] == {"low": [1.0, 20000.0],
                                                                            "high": [3.0, 20000.0]}
    e16 = evasion.evidence_f16({"untargeted": [0.2, 0.45], "targeted": [0.05, 0.08]}, [0.2, 0.3], noise=[0.01, 0.1],
                               accuracy=0.99, **who)
    assert (e16["untargeted_at_0.3"], e16["targeted_at_0.3"], e16["noise"]) == (0.45, 0.08, [0.01, 0.1])
    assert judge["F16"](e16).numbers["noise success"] == 0.1
    fooled = {k: {"untransformed": 0.0, "mean_over_draws": m, "fooled_in_most_draws": f}
              for k, m, f in (("clean", 0.1, 0.0), ("plain", 0.5, 0.4), ("eot", 0.9, 0.8))}
    t = RandomTransform(["noise"], noise_std=0.1)
    eot_run = {"fooled": fooled, "threshold": 0.9, "draws": 20, "eps": 0.2, "transform": t, "confidence": 0.0}
    rule = {"eps": 0.2, "reached": True, "success": [0.5, 0.8, 0.85, 0.93]}
    kw17 = dict(eps_rule=rule, stable={"candidates": 1000, "stable": 950}, clean_accuracy=0.99,
                clean_accuracy_under_transform=0.97, **who)
    e17 = evasion.evidence_f17(eot_run, **kw17)
    assert e17["fooled_in_90pct"] == {"clean": 0.0, "plain": 0.4, "eot": 0.8}
    assert e17["mean_over_draws"]["eot"] == 0.9 and e17["transform"] == repr(t) and e17["loss"] == "margin"
    assert (e17["clean_accuracy_under_transform"], e17["clean_accuracy"]) == (0.97, 0.99)
    defense = {"standard": {"clean": 0.99, "pgd": 0.0, "worst_case": 0.0},
               "adversarial training": {"clean": 0.97, "pgd": 0.8, "worst_case": 0.7},
               "input quantization": {"clean": 0.99, "pgd": 0.6, "bpda": 0.0}}
    # PGD-7 costs 8 forward passes per step by construction (the judge checks that identity)
    cost = {"forward_per_step": 8.0, "backward_per_step": 8.0, "optimizer_steps": 5000}
    e18 = evasion.evidence_f18(defense, cost, eps=0.3, n_attack=500, **who)
    assert (e18["robust_at"], e18["robust_undefended"], e18["clean_at"], e18["worst_case_at"]) == (0.8, 0.0, 0.97, 0.7)
    assert (e18["masked_plain_robust"], e18["masked_adaptive_robust"]) == (0.6, 0.0)
    assert (e18["train_passes_at"], e18["train_passes_standard"], e18["optimizer_steps"]) == (8.0, 1.0, 5000)
    assert judge["F17"](e17).status == "supported" and judge["F18"](e18).status == "supported"
    assert judge["F18"]({**e18, "train_passes_at": 6.0}).status == "inconclusive"  # cost identity broken
    with pytest.raises(ConfigError, match=r"blackbox lacks \['examples'\]"):
        evasion.evidence_f15({k: v for k, v in bb.items() if k != "examples"}, accuracy=0.99, **who)
    with pytest.raises(ConfigError, match="transfer_eps=.* must be a list including 0.3"):
        evasion.evidence_f16({"untargeted": [0.2], "targeted": [0.1]}, [0.2])
    with pytest.raises(ConfigError, match="threshold=0.8: F17 counts examples fooled in >= 90 %"):
        evasion.evidence_f17({**eot_run, "threshold": 0.8}, **kw17)
    with pytest.raises(ConfigError, match=r"defense lacks \['input quantization'\]"):
        evasion.evidence_f18({k: defense[k] for k in ("standard", "adversarial training")}, cost, eps=0.3,
                             n_attack=500, **who)
