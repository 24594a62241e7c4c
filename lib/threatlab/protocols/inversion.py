"""Measuring inversion and membership attacks: who trains on what, which rows are scored.

Notebook 02 is a short sequence of calls into this module; the data bookkeeping that
decides the numbers lives here, tested (tests/test_protocols_inversion.py):

* `overfit_sweep` (F05): targets trained on fewer and fewer rows, each scored by the
  loss attack on its own members and on held-out rows of the same split.
* `membership_pools` + `membership_scores` (F06): Shokri et al.'s protocol. The pool is
  split once (`ensemble.shadow_splits`) into the candidate side A and the attacker's
  own rows B. LiRA's reference ensemble trains on random halves of A (its members take
  turns as the target; the others are the online references); the shadow ensemble
  trains on random halves of B only, and fits the shadow attack model and the
  class-conditional thresholds on its own rows of B. The shadow ensemble's answers on
  A are offline LiRA's references: models that never saw a candidate.
* `membership_comparison` (F06): both of the above plus the attack table, in one call.
* `dp_epsilons`: the DP-SGD budget from our RDP accountant and Opacus' PRV accountant.
* `dp_membership`: reference target 0 retrained with DP-SGD, both scored by the loss
  attack and LiRA on the same candidates.
* `invert_classes` (F07): Fredrikson inversion of every class, judged by an evaluation
  classifier and by correlation with the classes' mean training images;
  `class_inversion` trains the targets and the evaluator first.
* `leakage_sweep` (F08): DLG per client over batch sizes and gradient-noise levels;
  `gradient_leakage` trains F08's two targets, sweeps both and adds the trivial baselines.
* `check_split_fits`: notebook 02's row ranges fit in the training split.

Opacus belongs to the notebooks' dependency group: it is imported inside
`dp_epsilons` only, never by the kernels.

    >>> rows = overfit_sweep(x_tr, y_tr, x_te, y_te, sizes=[4000, 1000, 250], ...)
    >>> pools = membership_pools(x_tr[-2 * n:], y_tr[-2 * n:], n_candidates=n, n_models=16, ...)
    >>> scores, truth = membership_scores(pools, n_targets=4)
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import attacks, ensemble, metrics, models, validate
from ..attacks import inversion
from ..errors import ConfigError
from ..oracle import BlackBox

__all__ = ["MembershipPools", "membership_pools", "membership_scores", "membership_table", "overfit_sweep",
           "MembershipComparison", "membership_comparison", "DPMembership", "dp_membership",
           "dp_epsilons", "invert_classes", "ClassInversion", "class_inversion", "leakage_sweep",
           "GradientLeakage", "gradient_leakage", "check_split_fits", "SHADOW_FREE", "SHADOW_BASED", "ATTACKS",
           "INVERSION_TARGETS", "LEAKAGE_TARGETS"]

#: F06: attacks that train no model (the first three need nothing at all;
#: the population-calibrated class threshold needs only the target's answers on the
#: attacker's own rows, known non-members).
SHADOW_FREE = ("loss", "confidence", "entropy", "class_threshold")
#: F06: attacks calibrated on shadow models' outputs (Shokri's attack model,
#: and the class thresholds fitted on shadow in/out labels).
SHADOW_BASED = ("shadow", "class_loss")
#: Every attack `membership_scores` runs, in table / figure order.
ATTACKS = SHADOW_FREE + SHADOW_BASED + ("lira", "lira_offline", "label_only")
#: F07's targets: MLP hidden widths per name (a softmax regression, Fredrikson et al.'s
#: model class, and a deeper MLP).
INVERSION_TARGETS: Mapping[str, Mapping[str, Any]] = {"shallow": {"hidden": []}, "deep": {"hidden": [512, 512]}}
#: F08's targets, in table / figure order: the sigmoid LeNet DLG attacks and a ReLU MLP.
LEAKAGE_TARGETS = ("sigmoid_lenet", "relu_mlp")


def check_split_fits(n_rows: int, *, overfit_sizes: Sequence[int], n_eval: int, n_pool: int, inv_train: int,
                     leak_train: int, dataset: str) -> None:
    """Notebook 02's row ranges fit in a training split of `n_rows` rows: the F05 targets
    and their held-out rows plus the F06 pool (max(overfit_sizes) + n_eval + 2 * n_pool
    rows, disjoint), the F07 targets' and evaluator's halves (2 * inv_train) and the F08
    targets' rows (leak_train). ConfigError naming all three otherwise; returns None.
    """
    validate.non_negative("n_rows", n_rows, integer=True)
    need = max(overfit_sizes) + n_eval + 2 * n_pool
    if need > n_rows or 2 * inv_train > n_rows or leak_train > n_rows:
        raise ConfigError(f"max(overfit_sizes) + n_eval + 2 * n_pool = {need}, 2 * inv_train = {2 * inv_train} and "
                          f"leak_train = {leak_train} must be <= {n_rows} ({dataset} training split)")


def overfit_sweep(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                  sizes: Sequence[int], epochs: int, n_eval: int, holdout: tuple[int, int], dataset: str,
                  seed: int, arch_params: Mapping[str, Any], num_classes: int,
                  device: torch.device | str = "cpu", timings: dict | None = None) -> list[dict[str, Any]]:
    """F05: one MLP per training-set size (the first `size` rows of x_train), each
    scored by the loss attack on min(n_eval, size) of its members and as many held-out
    rows ``x_train[holdout[0]:holdout[1]]`` (never trained on by any target).

    Returns one row per size: n_train, train_acc, test_acc, gap, auc, balanced_acc,
    tpr_at_1%. `timings` (optional dict) receives "train_s/overfit_<size>".
    """
    validate.positive("epochs", epochs, integer=True)
    validate.positive("n_eval", n_eval, integer=True)
    lo, hi = holdout
    if not (0 <= lo < hi <= x_train.shape[0]) or max(sizes) > lo:
        raise ConfigError(f"holdout={holdout!r} must be a row range after the largest training set "
                          f"(max(sizes)={max(sizes)}) inside x_train ({x_train.shape[0]} rows)")
    rows = []
    for size in sizes:
        validate.positive("sizes", size, integer=True)
        xs, ys = x_train[:size], y_train[:size]
        net, info = models.cached("mlp", dataset, xs, ys, train_params=dict(epochs=epochs, batch_size=64),
                                  seed=seed, arch_params=dict(arch_params), num_classes=num_classes)
        net = net.to(device)
        if timings is not None and info.get("train_seconds") is not None:
            timings[f"train_s/overfit_{size}"] = info["train_seconds"]
        k = min(n_eval, size, hi - lo)
        xe = torch.cat([xs[:k], x_train[lo:lo + k]]).to(device)
        ye = torch.cat([ys[:k], y_train[lo:lo + k]]).to(device)
        is_m = torch.arange(2 * k) < k
        res = attacks.get("mi_loss")(BlackBox(net), xe, ye)
        tr, te = models.accuracy(net, xs, ys), models.accuracy(net, x_test, y_test)
        rows.append({"n_train": size, "train_acc": tr, "test_acc": te, "gap": tr - te,
                     "auc": metrics.auc(res.scores, is_m), "balanced_acc": metrics.balanced_accuracy(res.scores, is_m),
                     "tpr_at_1%": metrics.tpr_at_fpr(res.scores, is_m, 0.01)})
    return rows


@dataclass
class MembershipPools:
    """Everything F06's attacks need, with the row bookkeeping that makes them honest.

    x, y: the pool (all rows, on the attack device). splits: `ensemble.ShadowSplits`
    (candidates A, attacker rows B, shadow_in over B). reference: LiRA's ensemble on
    halves of A; reference_in: bool [M_ref, |A|] (True where candidate j trained model m).
    shadows: the shadow ensemble on halves of B (rows splits.shadow_indices()).
    """

    x: torch.Tensor
    y: torch.Tensor
    splits: ensemble.ShadowSplits
    reference: ensemble.Ensemble
    reference_in: torch.Tensor
    shadows: ensemble.Ensemble


def membership_pools(x: torch.Tensor, y: torch.Tensor, *, n_candidates: int, n_models: int, epochs: int,
                     arch_params: Mapping[str, Any], num_classes: int, seed: int, batch_size: int = 64,
                     lr: float = 1e-3, device: torch.device | str = "cpu") -> MembershipPools:
    """Split the pool (A = n_candidates rows, B = the rest) and train both ensembles.

    Reference ensemble: n_models + 1 MLPs on random halves of A (seeds seed*1000 + m).
    Shadow ensemble: n_models MLPs on random halves of B (seeds seed*1000 + 500 + m),
    each the size of a reference model's training set when |B| = |A|.
    """
    validate.number("n_models", n_models, low=2, integer=True)
    splits = ensemble.shadow_splits(x.shape[0], n_candidates=n_candidates, n_shadows=n_models,
                                    generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    ref_in = ensemble.half_splits(n_candidates, n_models + 1, generator=g)
    ref_rows = torch.stack([splits.candidates[r] for r in ref_in])
    kw = dict(epochs=epochs, batch_size=batch_size, lr=lr, arch_params=dict(arch_params), num_classes=num_classes,
              device=device)
    ref = ensemble.train_ensemble("mlp", x, y, ref_rows, seeds=[seed * 1000 + m for m in range(n_models + 1)], **kw)
    sh = ensemble.train_ensemble("mlp", x, y, splits.shadow_indices(),
                                 seeds=[seed * 1000 + 500 + m for m in range(n_models)], **kw)
    return MembershipPools(x.to(device), y.to(device), splits, ref, ref_in, sh)


def membership_scores(pools: MembershipPools, *, n_targets: int, label_shift: int = 1, label_noise: int = 0,
                      label_sigma: float = 0.1, seed: int = 0,
                      targets: Sequence[torch.nn.Module] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run every attack of `ATTACKS` against reference models 0..n_targets-1 in turn
    (or against the given `targets`, each scored with reference model t's membership),
    pooling the scores of all turns, as LiRA's protocol does.

    Per target t: the metric attacks and the label-only attack (through a label-mode
    oracle) query t once (label-only: 4 label_shift + 1 + label_noise times) per
    candidate; the population-calibrated class threshold also asks t about the
    attacker's rows B (known non-members of t); the shadow attack and the shadow-fitted
    class thresholds are fitted on the shadow ensemble's answers on B (ids checked disjoint from A);
    online LiRA uses the other reference models; offline LiRA the shadow ensemble's
    answers on A (no shadow saw a candidate). Returns ({attack: float64 scores
    [n_targets * |A|]}, truth bool [n_targets * |A|]).
    """
    validate.number("n_targets", n_targets, low=1, high=pools.reference.size - 1, integer=True)
    sp = pools.splits
    xa, ya = pools.x[sp.candidates], pools.y[sp.candidates]
    xb, yb = pools.x[sp.attacker], pools.y[sp.attacker]
    ref_probs = pools.reference.logits(xa).softmax(-1)                  # [M+1, |A|, C]
    sh_on_b = pools.shadows.logits(xb).softmax(-1)                      # [M, |B|, C]
    sh_on_a = pools.shadows.logits(xa).softmax(-1)                      # [M, |A|, C]
    shadow_kw = dict(shadow_probs=sh_on_b, shadow_in=sp.shadow_in, shadow_y=yb, shadow_ids=sp.attacker,
                     candidate_ids=sp.candidates)
    scores: dict[str, list[torch.Tensor]] = {k: [] for k in ATTACKS}
    truth = []
    for t in range(n_targets):
        net = pools.reference.model(t).to(xa.device) if targets is None else targets[t]
        oracle = BlackBox(net)
        for name in ("loss", "confidence", "entropy"):
            scores[name].append(attacks.get(f"mi_{name}")(oracle, xa, ya).scores)
        scores["class_threshold"].append(inversion.mi_class_threshold(oracle, xa, ya, x_ref=xb, y_ref=yb).scores)
        scores["class_loss"].append(inversion.mi_class_loss(oracle, xa, ya, **shadow_kw).scores)
        scores["shadow"].append(inversion.mi_shadow(oracle, xa, ya, generator=torch.Generator().manual_seed(seed),
                                                    **shadow_kw).scores)
        others = torch.tensor([m for m in range(pools.reference.size) if m != t])
        scores["lira"].append(inversion.mi_lira(oracle, xa, ya, shadow_probs=ref_probs[others],
                                                shadow_in=pools.reference_in[others]).scores)
        scores["lira_offline"].append(inversion.mi_lira_offline(oracle, xa, ya, shadow_probs=sh_on_a).scores)
        scores["label_only"].append(inversion.mi_label_only(
            BlackBox(net, mode="label"), xa, ya, max_shift=label_shift, noise_samples=label_noise,
            noise_sigma=label_sigma, generator=torch.Generator().manual_seed(seed + t)).scores)
        truth.append(pools.reference_in[t])
    return {k: torch.cat(v) for k, v in scores.items()}, torch.cat(truth)


def membership_table(scores: Mapping[str, torch.Tensor], truth: torch.Tensor) -> list[dict[str, Any]]:
    """One row per attack: auc, balanced_acc, tpr_at_1%, tpr_at_0.1% (exact ROC)."""
    return [{"attack": k, "auc": metrics.auc(s, truth), "balanced_acc": metrics.balanced_accuracy(s, truth),
             "tpr_at_1%": metrics.tpr_at_fpr(s, truth, 0.01), "tpr_at_0.1%": metrics.tpr_at_fpr(s, truth, 0.001)}
            for k, s in scores.items()]


@dataclass
class MembershipComparison:
    """F06's measurement: the pools (`MembershipPools`), every attack's pooled scores and
    the truth they are judged against (`membership_scores`), the table
    (`membership_table`), whether the attacker's rows B are disjoint from the candidates
    A (checked on the row ids), and the wall seconds spent training both ensembles."""

    pools: MembershipPools
    scores: dict[str, torch.Tensor]
    truth: torch.Tensor
    rows: list[dict[str, Any]]
    shadow_disjoint: bool
    seconds: float


def membership_comparison(x_pool: torch.Tensor, y_pool: torch.Tensor, *, n_candidates: int, n_models: int,
                          epochs: int, n_targets: int, arch_params: Mapping[str, Any], num_classes: int, seed: int,
                          label_shift: int = 1, label_noise: int = 0,
                          device: torch.device | str = "cpu") -> MembershipComparison:
    """F06 in one call: Shokri et al.'s protocol (arXiv 1610.05820) with LiRA online and
    offline (Carlini et al. 2022, arXiv 2112.03570), the metric attacks and the
    label-only attack (Choquette-Choo et al. 2021, arXiv 2007.14321) on the same candidates.

    `membership_pools(x_pool, y_pool, n_candidates=, n_models=, epochs=, ...)` trains
    the n_models + 1 reference and n_models shadow MLPs; `membership_scores` attacks
    reference models 0..n_targets-1 in turn (label-only: translations by up to
    `label_shift` pixels plus `label_noise` noisy queries per candidate) and pools the
    turns; `membership_table` summarises each attack. Returns a `MembershipComparison`
    (scores float64 [n_targets * n_candidates] per attack, truth bool of that length).
    Every parameter is checked before any model trains.
    """
    validate.number("n_models", n_models, low=2, integer=True)
    validate.number("n_targets", n_targets, low=1, high=n_models, integer=True)
    validate.positive("epochs", epochs, integer=True)
    validate.non_negative("label_shift", label_shift, integer=True)
    validate.non_negative("label_noise", label_noise, integer=True)
    if not torch.is_tensor(x_pool) or not torch.is_tensor(y_pool) or x_pool.shape[0] != y_pool.shape[0]:
        raise ConfigError("x_pool and y_pool must be tensors with the same number of rows")
    validate.number("n_candidates", n_candidates, low=1, high=x_pool.shape[0] - 2, integer=True)
    t0 = time.perf_counter()
    pools = membership_pools(x_pool, y_pool, n_candidates=n_candidates, n_models=n_models, epochs=epochs,
                             arch_params=arch_params, num_classes=num_classes, seed=seed, device=device)
    seconds = time.perf_counter() - t0
    disjoint = set(pools.splits.candidates.tolist()).isdisjoint(pools.splits.attacker.tolist())
    scores, truth = membership_scores(pools, n_targets=n_targets, label_shift=label_shift, label_noise=label_noise,
                                      seed=seed)
    return MembershipComparison(pools, scores, truth, membership_table(scores, truth), disjoint, seconds)


@dataclass
class DPMembership:
    """The DP-SGD target (`model`), one row per target ("non-private" = reference model
    0, "DP-SGD"), the DP target's budget (`dp_epsilons`) and its DP-SGD training seconds."""

    model: torch.nn.Module
    rows: list[dict[str, Any]]
    epsilon: dict[str, float]
    seconds: float


def dp_membership(pools: MembershipPools, x_test: torch.Tensor, y_test: torch.Tensor, *,
                  arch_params: Mapping[str, Any], num_classes: int, epochs: int, lot_size: int, lr: float,
                  clip: float, noise_multiplier: float, delta: float, seed: int,
                  device: torch.device | str = "cpu") -> DPMembership:
    """DP-SGD (Abadi et al. 2016, arXiv 1607.00133) as a defense against membership
    inference: reference model 0's architecture (seed ``seed * 1000``) retrained with
    DP-SGD on reference model 0's half of the candidates (Poisson lots of expected size
    `lot_size`, clipping to `clip`, noise N(0, (noise_multiplier * clip)^2)), then the
    non-private reference model 0 and the DP-SGD model each attacked as the only target
    (`membership_scores`, n_targets=1: LiRA keeps the non-private references, the
    attacker does not know how the target trained).

    Rows: target, epsilon_rdp / epsilon_rdp_opacus / epsilon_prv (the DP row only; None
    for the non-private one), delta, test_acc on (x_test, y_test), auc_loss,
    tpr_at_0.1%_loss, tpr_at_0.1%_lira (truth: reference model 0's membership).
    """
    validate.positive("epochs", epochs, integer=True)
    validate.positive("lot_size", lot_size, integer=True)
    validate.positive("lr", lr)
    validate.positive("clip", clip)
    validate.positive("noise_multiplier", noise_multiplier)
    validate.number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    validate.non_negative("seed", seed, integer=True)
    from ..defenses.dp_sgd import dp_sgd_train

    member = pools.reference_in[0]
    n_member = int(member.sum())
    if lot_size > n_member:
        raise ConfigError(f"lot_size={lot_size} must be <= {n_member} (reference model 0's training rows)")
    cand = pools.splits.candidates
    xa, ya = pools.x[cand].cpu(), pools.y[cand].cpu()
    net = models.build("mlp", in_shape=tuple(xa.shape[1:]), num_classes=num_classes, seed=seed * 1000,
                       **arch_params).to(device)
    hist = dp_sgd_train(net, xa[member], ya[member], epochs=epochs, lot_size=lot_size, lr=lr, clip=clip,
                               noise_multiplier=noise_multiplier, delta=delta, seed=seed)
    eps = dp_epsilons(hist["q"], noise_multiplier, hist["steps"], delta)
    targets = (("non-private", pools.reference.model(0).to(device)), ("DP-SGD", net))
    scores = {label: membership_scores(pools, n_targets=1, seed=seed, targets=[m])[0] for label, m in targets}
    rows = [{"target": label, "epsilon_rdp": eps["rdp"] if label == "DP-SGD" else None,
             "epsilon_rdp_opacus": eps["rdp_opacus"] if label == "DP-SGD" else None,
             "epsilon_prv": eps["prv"] if label == "DP-SGD" else None, "delta": delta,
             "test_acc": models.accuracy(m, x_test, y_test),
             "auc_loss": metrics.auc(scores[label]["loss"], member),
             "tpr_at_0.1%_loss": metrics.tpr_at_fpr(scores[label]["loss"], member, 0.001),
             "tpr_at_0.1%_lira": metrics.tpr_at_fpr(scores[label]["lira"], member, 0.001)}
            for label, m in targets]
    return DPMembership(net, rows, eps, hist["seconds"])


def dp_epsilons(q: float, sigma: float, steps: int, delta: float) -> dict[str, float]:
    """The DP-SGD budget three ways: {"rdp": ours (integer orders, `defenses.dp_sgd`),
    "rdp_opacus": Opacus' RDP accountant (its default orders), "prv": Opacus' PRV
    accountant (Gopi, Lee, Wutschitz 2021, arXiv 2106.02848: numerically composed
    privacy-loss distributions, tighter than RDP)}. Imports Opacus (notebooks group)."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    from ..defenses.dp_sgd import dp_epsilon

    validate.fraction("q", q)
    validate.positive("sigma", sigma)
    validate.positive("steps", steps, integer=True)
    validate.number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    rdp = RDPAccountant()
    rdp.history = [(float(sigma), float(q), int(steps))]
    prv = PRVAccountant()
    prv.history = [(float(sigma), float(q), int(steps))]
    return {"rdp": dp_epsilon(q, sigma, steps, delta)[0], "rdp_opacus": float(rdp.get_epsilon(delta=delta)),
            "prv": float(prv.get_epsilon(delta=delta))}


def invert_classes(targets: Mapping[str, torch.nn.Module], evaluator: torch.nn.Module, means: torch.Tensor, *,
                   restarts: int, steps: int, lr: float, samples: int, sigma: float, seed: int,
                   modes: Sequence[str] = ("probs", "label"),
                   device: torch.device | str = "cpu") -> dict[str, dict[str, Any]]:
    """F07: Fredrikson inversion of every class (`restarts` starts each, U[0, 0.1]
    images) through each API mode of each target.

    Returns {"<mode>/<target>": {"evaluator_acc": fraction of reconstructions the
    evaluation classifier labels as their class, "prototype_match": fraction whose
    best-correlated class mean (`class_mean_correlation`) is their class,
    "queries_per_image": int, "images": the first reconstruction of every class [C, ...]}}.
    Mode "probs" is reported as "confidences".
    """
    validate.positive("restarts", restarts, integer=True)
    n_classes = means.shape[0]
    classes = torch.arange(n_classes, device=device).repeat(restarts)
    x0 = inversion._uniform((len(classes), *means.shape[1:]), torch.Generator().manual_seed(seed), device,
                            torch.float32) * 0.1
    out: dict[str, dict[str, Any]] = {}
    for tname, net in targets.items():
        for mode in modes:
            res = attacks.get("fredrikson")(BlackBox(net, mode=mode), x0, classes, steps=steps, lr=lr,
                                            samples=samples, sigma=sigma,
                                            generator=torch.Generator().manual_seed(seed))
            corr = inversion.class_mean_correlation(res.x_rec, means)
            key = f"{'confidences' if mode == 'probs' else mode}/{tname}"
            out[key] = {"evaluator_acc": models.accuracy(evaluator, res.x_rec, classes),
                        "prototype_match": float((corr.argmax(1) == classes.cpu()).double().mean()),
                        "queries_per_image": int(res.queries[0]), "images": res.x_rec[:n_classes].cpu()}
    return out


@dataclass
class ClassInversion:
    """F07's measurement: the targets (on the attack device) and their test accuracy,
    the evaluation classifier and its test accuracy, the class means the reconstructions
    are correlated with, `invert_classes`' results and the table rows."""

    targets: dict[str, torch.nn.Module]
    target_test_acc: dict[str, float]
    evaluator: torch.nn.Module
    evaluator_acc: float
    means: torch.Tensor
    results: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]


def class_inversion(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                    n_train: int, epochs: int, dataset: str, num_classes: int, restarts: int, steps: int, lr: float,
                    samples: int, sigma: float, seed: int,
                    target_params: Mapping[str, Mapping[str, Any]] = INVERSION_TARGETS,
                    early_stop: bool | Mapping[str, Any] | None = None,
                    device: torch.device | str = "cpu") -> ClassInversion:
    """F07: Fredrikson, Jha, Ristenpart (2015), "Model Inversion Attacks that Exploit
    Confidence Information and Basic Countermeasures", ACM CCS: inversion of every class
    of each target, judged by an independent evaluation classifier.

    Each target of `target_params` (name -> MLP arch params, default `INVERSION_TARGETS`)
    trains on the first `n_train` rows of x_train for `epochs` epochs (seed `seed`,
    checkpoint cache); the evaluation classifier (LeNet-5, seed ``seed + 1``) on the next
    `n_train` rows, disjoint. With `early_stop` (True or a dict, `models.cached`), targets
    and evaluator instead train to convergence with early stopping on 1,000 of their
    rows held out (rule G1) and `epochs` is not used. The class means are those of the
    targets' training rows. `invert_classes` then inverts through the probability and
    the label-only API.
    Rows: one per "<api>/<target>" with evaluator_acc, prototype_match, queries_per_image.
    """
    validate.number("n_train", n_train, low=1, high=x_train.shape[0] // 2, integer=True)  # targets + evaluator
    if early_stop:
        models.resolve_early_stop(early_stop)
    else:
        validate.positive("epochs", epochs, integer=True)
    train_kw = dict(train_params={}, early_stop=early_stop) if early_stop else dict(train_params=dict(epochs=epochs))
    for name, value in (("restarts", restarts), ("steps", steps), ("samples", samples)):
        validate.positive(name, value, integer=True)
    validate.positive("lr", lr)
    validate.positive("sigma", sigma)
    if not target_params:
        raise ConfigError(f"target_params={target_params!r} must name at least one target")
    targets, target_acc = {}, {}
    for name, hp in target_params.items():
        net, _ = models.cached("mlp", dataset, x_train[:n_train], y_train[:n_train], seed=seed, arch_params=hp,
                               num_classes=num_classes, **train_kw)
        targets[name] = net.to(device)
        target_acc[name] = models.accuracy(net, x_test, y_test)
    evaluator, _ = models.cached("lenet5", dataset, x_train[n_train:2 * n_train], y_train[n_train:2 * n_train],
                                 seed=seed + 1, num_classes=num_classes, **train_kw)
    evaluator = evaluator.to(device)
    evaluator_acc = models.accuracy(evaluator, x_test, y_test)
    means = inversion.class_means(x_train[:n_train], y_train[:n_train], num_classes)
    inv = invert_classes(targets, evaluator, means, restarts=restarts, steps=steps, lr=lr, samples=samples,
                         sigma=sigma, seed=seed, device=device)
    rows = [{"api/target": k, "evaluator_acc": r["evaluator_acc"], "prototype_match": r["prototype_match"],
             "queries_per_image": r["queries_per_image"]} for k, r in inv.items()]
    return ClassInversion(targets, target_acc, evaluator, evaluator_acc, means, inv, rows)


def leakage_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, clients: int,
                  batch_sizes: Sequence[int], noise: Sequence[float], clip: float, steps: int, restarts: int,
                  seed: int) -> dict[str, Any]:
    """F08: DLG against `clients` client batches at each batch size (no clipping, no
    noise), and at batch 1 with per-example clipping to `clip` plus each noise
    multiplier of `noise`. The clients' data are the first clients * b rows of x.

    Returns {"psnr_vs_batch": [mean PSNR per batch size], "psnr_vs_noise": [mean PSNR
    per multiplier], "label_acc_batch1": fraction of labels iDLG recovered at batch 1,
    "no_reconstruction_vs_batch" / "no_reconstruction_vs_noise": [client batches per
    condition whose every DLG restart diverged], "diverged_vs_batch" /
    "diverged_vs_noise": [restarts per condition that diverged and were discarded],
    "images": {"original": x[:clients], "sigma=<s>": reconstructions}}.

    Rule for a client batch without reconstruction (`LeakageResult.reconstructed`
    False): it is counted in no_reconstruction_* and left out of its condition's mean
    PSNR (its labels still count towards label_acc_batch1: iDLG reads them from the
    shared gradient, not from the search); a condition where no client batch was
    reconstructed records None as its PSNR, and its images are NaN (drawn blank).
    """
    validate.positive("clients", clients, integer=True)
    if x.shape[0] < clients * max(batch_sizes):
        raise ConfigError(f"x has {x.shape[0]} rows; clients * max(batch_sizes) = {clients * max(batch_sizes)} needed")
    dlg = attacks.get("dlg")
    psnr_b, label_acc, lost_b, div_b = [], None, [], []
    for b in batch_sizes:
        xl, yl = x[:clients * b], y[:clients * b]
        res = dlg(model, xl, yl, batch_size=b, steps=steps, restarts=restarts,
                  generator=torch.Generator().manual_seed(seed))
        psnr_b.append(_reconstructed_psnr(res, xl, b))
        lost_b.append(res.no_reconstruction)
        div_b.append(int(res.diverged.sum()))
        if b == 1:
            label_acc = float((res.y_rec.cpu() == yl.cpu()).double().mean())
    xl, yl = x[:clients], y[:clients]
    psnr_n, images, lost_n, div_n = [], {"original": xl.cpu()}, [], []
    for s in noise:
        res = dlg(model, xl, yl, batch_size=1, clip=clip, noise_multiplier=float(s), steps=steps, restarts=restarts,
                  generator=torch.Generator().manual_seed(seed))
        psnr_n.append(_reconstructed_psnr(res, xl, 1))
        lost_n.append(res.no_reconstruction)
        div_n.append(int(res.diverged.sum()))
        images[f"sigma={s}"] = res.x_rec.cpu()
    return {"psnr_vs_batch": psnr_b, "psnr_vs_noise": psnr_n, "label_acc_batch1": label_acc,
            "no_reconstruction_vs_batch": lost_b, "no_reconstruction_vs_noise": lost_n,
            "diverged_vs_batch": div_b, "diverged_vs_noise": div_n, "images": images}


def _reconstructed_psnr(res: inversion.LeakageResult, x: torch.Tensor, batch_size: int) -> float | None:
    """Mean matched PSNR over the client batches DLG reconstructed; None if it reconstructed none."""
    rows = res.reconstructed.cpu().repeat_interleave(batch_size)
    if not bool(rows.any()):
        return None
    return float(inversion.match_psnr(res.x_rec.cpu()[rows], x.cpu()[rows], batch_size=batch_size).mean())


@dataclass
class GradientLeakage:
    """F08's measurement: `leakage_sweep`'s result per target of `LEAKAGE_TARGETS`
    (`sweeps`), the table rows (targets, then the trivial baselines), the baselines'
    PSNR ({"black", "mean_image"}) and each target's sweep wall seconds."""

    sweeps: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    baseline: dict[str, float]
    seconds: dict[str, float]


def gradient_leakage(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                     n_train: int, epochs: int, arch_params: Mapping[str, Any], num_classes: int, clients: int,
                     batch_sizes: Sequence[int], noise: Sequence[float], clip: float, steps: int, restarts: int,
                     seed: int, early_stop: bool | Mapping[str, Any] | None = None,
                     device: torch.device | str = "cpu") -> GradientLeakage:
    """F08: deep leakage from gradients (Zhu, Liu, Han 2019, arXiv 1906.08935, with iDLG's
    label recovery, Zhao et al. 2020, arXiv 2001.02610) against two normally trained
    targets: the sigmoid LeNet of Zhu et al. and the project's ReLU MLP (`arch_params`),
    both seed `seed`, trained on the first `n_train` rows of x_train for `epochs` epochs
    (batch 64). The clients' data are the first rows of x_test; `leakage_sweep` runs the
    batch-size and noise sweeps (`clients`, `batch_sizes`, `noise`, `clip`, `steps`,
    `restarts`). With `early_stop` (True or a dict of `models.EARLY_STOP_DEFAULTS`
    overrides), both targets instead train with `models.train_early_stopping` (rule G1:
    1,000 held-out rows, patience 3, 3-15 epochs, the best epoch kept) and `epochs` is not
    used. Every parameter is checked before any model trains.

    Rows: per target {target, test_acc, epochs_run, psnr_b<b> per batch size, psnr_sigma<s> per
    noise multiplier (None where no client batch was reconstructed, see
    `leakage_sweep`), label_acc_b1, no_reconstruction (client batches without a
    reconstruction, all conditions together)}, then per trivial reconstruction
    (`inversion.baseline_psnr` of the first `clients` test images against the training
    rows' mean) {target: "baseline: <name>", psnr_b<b>: its PSNR at every b}.
    """
    validate.number("n_train", n_train, low=1, high=x_train.shape[0], integer=True)
    es = models.resolve_early_stop(early_stop)
    if es is None:
        validate.positive("epochs", epochs, integer=True)
    elif es["holdout"] >= n_train:
        raise ConfigError(f"n_train={n_train} must exceed the early-stopping holdout of {es['holdout']} rows")
    for name, value in (("clients", clients), ("steps", steps), ("restarts", restarts)):
        validate.positive(name, value, integer=True)
    validate.positive("clip", clip)
    if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
        raise ConfigError(f"batch_sizes={batch_sizes!r} must be a non-empty list of positive integers")
    for i, b in enumerate(batch_sizes):
        validate.positive(f"batch_sizes[{i}]", b, integer=True)
    if isinstance(noise, (str, bytes)) or not isinstance(noise, Sequence) or not noise:
        raise ConfigError(f"noise={noise!r} must be a non-empty list of non-negative numbers")
    for i, s in enumerate(noise):
        validate.non_negative(f"noise[{i}]", s)
    if x_test.shape[0] < clients * max(batch_sizes):
        raise ConfigError(f"clients={clients} x max(batch_sizes)={max(batch_sizes)} must be <= {x_test.shape[0]} "
                          "(rows of x_test, the clients' data)")
    in_shape = tuple(x_train.shape[1:])
    nets = {"sigmoid_lenet": models.build("lenet_sigmoid", in_shape=in_shape, num_classes=num_classes, seed=seed),
            "relu_mlp": models.build("mlp", in_shape=in_shape, num_classes=num_classes, seed=seed, **arch_params)}
    sweeps, rows, seconds = {}, [], {}
    for name, net in nets.items():
        if es is None:
            hist = models.train(net, x_train[:n_train], y_train[:n_train], epochs=epochs, batch_size=64, seed=seed,
                                progress=False)
        else:
            hist = models.train_early_stopping(net, x_train[:n_train], y_train[:n_train], seed=seed, progress=False,
                                               **es)
        net = net.to(device)
        t0 = time.perf_counter()
        sweeps[name] = leakage_sweep(net, x_test.to(device), y_test.to(device), clients=clients,
                                     batch_sizes=batch_sizes, noise=noise, clip=clip, steps=steps, restarts=restarts,
                                     seed=seed)
        seconds[name] = time.perf_counter() - t0
        rows.append({"target": name, "test_acc": models.accuracy(net, x_test, y_test),
                     "epochs_run": hist.get("epochs_run", epochs),
                     **{f"psnr_b{b}": p for b, p in zip(batch_sizes, sweeps[name]["psnr_vs_batch"])},
                     **{f"psnr_sigma{s}": p for s, p in zip(noise, sweeps[name]["psnr_vs_noise"])},
                     "label_acc_b1": sweeps[name]["label_acc_batch1"],
                     "no_reconstruction": sum(sweeps[name]["no_reconstruction_vs_batch"])
                     + sum(sweeps[name]["no_reconstruction_vs_noise"])})
    baseline = inversion.baseline_psnr(x_test[:clients], x_train[:n_train])
    rows += [{"target": f"baseline: {k}", **{f"psnr_b{b}": p for b in batch_sizes}} for k, p in baseline.items()]
    return GradientLeakage(sweeps, rows, baseline, seconds)


# ------------------------------------------------- F06: selection on halves


@dataclass
class HalfSelection:
    """F06's honest choice of each side's best attack (`best_on_half`).

    best:          side -> the attack with the highest AUC on the selection half.
    auc:           side -> that attack's AUC on the reporting half (the number judged).
    selection_auc: side -> {attack: AUC on the selection half} (what the choice saw).
    report_auc:    every attack's AUC on the reporting half (shown, never used to choose).
    report_tpr:    every attack's TPR at `fpr` on the reporting half (exact ROC).
    fpr:           the false-positive rate of report_tpr.
    select_rows, report_rows: Long row indices of the two halves (sorted, disjoint,
                   together every row).
    """

    best: dict[str, str]
    auc: dict[str, float]
    selection_auc: dict[str, dict[str, float]]
    report_auc: dict[str, float]
    report_tpr: dict[str, float]
    fpr: float
    select_rows: torch.Tensor
    report_rows: torch.Tensor


def best_on_half(scores_by_attack: Mapping[str, Any], membership: Any, generator: torch.Generator | None, *,
                 sides: Mapping[str, Sequence[str]] | None = None, fpr: float = 0.001) -> HalfSelection:
    """Choose each side's best attack on a random half of the candidate rows and report
    its AUC on the other half (F06).

    Taking the best of several attacks by the AUC it is then credited with biases the
    maximum upwards (a winner's curse that grows with the number of attacks per side);
    choosing on one half and reporting on the other removes it. The split is stratified:
    half the members (rounded down) and half the non-members go to the selection half,
    the rest to the reporting half, so both halves have both groups and the same
    balance. A row is one (target, candidate) score as `membership_scores` pools them.
    Ties in selection AUC go to the attack listed first in its side.

    Args:
        scores_by_attack: attack name -> scores [n] (tensor or array; higher = member),
            finite (NaN / inf are refused).
        membership: bool [n], True for members; at least 2 members and 2 non-members.
        generator: draws the split (through `threatlab.runtime`).
        sides: side -> attack names, every name a key of scores_by_attack; default
            {"shadow_free": SHADOW_FREE, "shadow_based": SHADOW_BASED}.
        fpr: false-positive rate of `report_tpr`, in (0, 1); default 0.001 (F06's 0.1 %).
    Returns a `HalfSelection`. ConfigError on bad input, before any compute.

    Example:
        >>> sel = best_on_half(scores, truth, torch.Generator().manual_seed(seed))
        >>> sel.best["shadow_free"], sel.auc["shadow_free"] - sel.auc["shadow_based"]
    """
    import numpy as np

    from .. import runtime

    sides = {"shadow_free": SHADOW_FREE, "shadow_based": SHADOW_BASED} if sides is None else sides
    if not isinstance(scores_by_attack, Mapping) or not scores_by_attack:
        raise ConfigError("scores_by_attack must be a non-empty mapping attack name -> scores [n]")
    m = np.asarray(membership.detach().cpu() if torch.is_tensor(membership) else membership)
    if m.ndim != 1 or m.dtype != bool:
        raise ConfigError(f"membership must be a bool vector [n]; got dtype {m.dtype}, shape {m.shape}")
    n_in, n_out = int(m.sum()), int((~m).sum())
    if n_in < 2 or n_out < 2:
        raise ConfigError(f"membership has {n_in} members and {n_out} non-members; each half needs both, "
                          "so at least 2 of each")
    scores = {}
    for name, s in scores_by_attack.items():
        a = np.asarray(s.detach().cpu() if torch.is_tensor(s) else s, dtype=np.float64)
        if a.shape != m.shape:
            raise ConfigError(f"scores of {name!r} have shape {a.shape}; membership has {m.shape}")
        if not np.isfinite(a).all():
            raise ConfigError(f"scores of {name!r} hold NaN or inf")
        scores[name] = a
    if not isinstance(sides, Mapping) or not sides:
        raise ConfigError("sides must be a non-empty mapping side -> attack names")
    for side, names in sides.items():
        if isinstance(names, str) or not names:
            raise ConfigError(f"sides[{side!r}]={names!r} must be a non-empty list of attack names")
        missing = [k for k in names if k not in scores]
        if missing:
            raise ConfigError(f"sides[{side!r}] names {missing}, which have no scores; scored: {sorted(scores)}")
    validate.number("fpr", fpr, low=0, high=1, low_open=True, high_open=True)

    rows_in, rows_out = np.nonzero(m)[0], np.nonzero(~m)[0]
    perm_in = runtime.randperm(n_in, generator).numpy()
    perm_out = runtime.randperm(n_out, generator).numpy()
    select = np.sort(np.r_[rows_in[perm_in[:n_in // 2]], rows_out[perm_out[:n_out // 2]]])
    report = np.setdiff1d(np.arange(m.size), select)
    sel_auc = {side: {k: metrics.auc(scores[k][select], m[select]) for k in names} for side, names in sides.items()}
    best = {side: max(names, key=lambda k: (sel_auc[side][k], -list(names).index(k)))
            for side, names in sides.items()}
    rep_auc = {k: metrics.auc(a[report], m[report]) for k, a in scores.items()}
    rep_tpr = {k: metrics.tpr_at_fpr(a[report], m[report], fpr) for k, a in scores.items()}
    return HalfSelection(best, {side: rep_auc[k] for side, k in best.items()}, sel_auc, rep_auc, rep_tpr,
                         float(fpr), torch.from_numpy(select), torch.from_numpy(report))


__all__ += ["HalfSelection", "best_on_half"]


def shadow_evidence(mi: MembershipComparison, *, n_reference: int, generator: torch.Generator | None,
                    fpr: float = 0.001) -> tuple[dict[str, Any], HalfSelection]:
    """F06's evidence from a `MembershipComparison`.

    Each side's best attack (shadow-free `SHADOW_FREE`, shadow-based `SHADOW_BASED`) is
    chosen on a random stratified half of the pooled (target, candidate) rows and its AUC
    read on the other half (`best_on_half`, split drawn from `generator`). The TPR at
    `fpr` of every attack, LiRA's included, is read on all rows, as the comparison at
    the tail uses the most non-members available (on 2,000 non-members 0.1 % FPR is 2
    false positives; on half of them it would be 1). The full-row AUCs are recorded for
    display. Returns (the evidence dict the F06 judge reads, the `HalfSelection`).
    """
    sel = best_on_half(mi.scores, mi.truth, generator, fpr=fpr)
    by = {r["attack"]: r for r in mi.rows}
    ev = {"sides": {"shadow_free": list(SHADOW_FREE), "shadow_based": list(SHADOW_BASED)},
          "half": {"best": sel.best, "auc": sel.auc, "selection_auc": sel.selection_auc,
                   "report_auc": sel.report_auc, "report_tpr_at_0.1%": sel.report_tpr,
                   "select_rows": int(sel.select_rows.numel()), "report_rows": int(sel.report_rows.numel())},
          "auc": {k: r["auc"] for k, r in by.items()},
          "tpr_at_0.1%": {k: r["tpr_at_0.1%"] for k, r in by.items()},
          "tpr_at_1%": {k: r["tpr_at_1%"] for k, r in by.items()},
          "n_reference": int(n_reference), "members": int(mi.truth.sum()), "candidates": int(mi.truth.numel()),
          "shadow_disjoint": bool(mi.shadow_disjoint)}
    return ev, sel


__all__ += ["shadow_evidence"]
