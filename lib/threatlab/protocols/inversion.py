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
* `dp_epsilons`: the DP-SGD budget from our RDP accountant and Opacus' PRV accountant.
* `invert_classes` (F07): Fredrikson inversion of every class, judged by an evaluation
  classifier and by correlation with the classes' mean training images.
* `leakage_sweep` (F08): DLG per client over batch sizes and gradient-noise levels.

Opacus belongs to the notebooks' dependency group: it is imported inside
`dp_epsilons` only, never by the kernels.

    >>> rows = overfit_sweep(x_tr, y_tr, x_te, y_te, sizes=[4000, 1000, 250], ...)
    >>> pools = membership_pools(x_tr[-2 * n:], y_tr[-2 * n:], n_candidates=n, n_models=16, ...)
    >>> scores, truth = membership_scores(pools, n_targets=4)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import attacks, ensemble, metrics, models, validate
from ..attacks import inversion
from ..errors import ConfigError
from ..oracle import BlackBox

__all__ = ["MembershipPools", "membership_pools", "membership_scores", "membership_table", "overfit_sweep",
           "dp_epsilons", "invert_classes", "leakage_sweep", "SHADOW_FREE", "ATTACKS"]

#: Attacks that need no shadow model of the target (the first three need nothing at all;
#: the class-conditional threshold needs only thresholds fitted on the attacker's data).
SHADOW_FREE = ("loss", "confidence", "entropy", "class_loss")
#: Every attack `membership_scores` runs, in table / figure order.
ATTACKS = SHADOW_FREE + ("shadow", "lira", "lira_offline", "label_only")


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
    candidate; the shadow attack and the class-conditional threshold are fitted on the
    shadow ensemble's answers on the attacker's rows B (ids checked disjoint from A);
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


def dp_epsilons(q: float, sigma: float, steps: int, delta: float) -> dict[str, float]:
    """The DP-SGD budget three ways: {"rdp": ours (integer orders, `defenses.dp_sgd`),
    "rdp_opacus": Opacus' RDP accountant (its default orders), "prv": Opacus' PRV
    accountant (Gopi, Lee, Wutschitz 2021, arXiv 2106.02848: numerically composed
    privacy-loss distributions, tighter than RDP)}. Imports Opacus (notebooks group)."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    from ..defenses import dp_sgd

    validate.fraction("q", q)
    validate.positive("sigma", sigma)
    validate.positive("steps", steps, integer=True)
    validate.number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    rdp = RDPAccountant()
    rdp.history = [(float(sigma), float(q), int(steps))]
    prv = PRVAccountant()
    prv.history = [(float(sigma), float(q), int(steps))]
    return {"rdp": dp_sgd.dp_epsilon(q, sigma, steps, delta)[0], "rdp_opacus": float(rdp.get_epsilon(delta=delta)),
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


def leakage_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, clients: int,
                  batch_sizes: Sequence[int], noise: Sequence[float], clip: float, steps: int, restarts: int,
                  seed: int) -> dict[str, Any]:
    """F08: DLG against `clients` client batches at each batch size (no clipping, no
    noise), and at batch 1 with per-example clipping to `clip` plus each noise
    multiplier of `noise`. The clients' data are the first clients * b rows of x.

    Returns {"psnr_vs_batch": [mean PSNR per batch size], "psnr_vs_noise": [mean PSNR
    per multiplier], "label_acc_batch1": fraction of labels iDLG recovered at batch 1,
    "images": {"original": x[:clients], "sigma=<s>": reconstructions}}.
    """
    validate.positive("clients", clients, integer=True)
    if x.shape[0] < clients * max(batch_sizes):
        raise ConfigError(f"x has {x.shape[0]} rows; clients * max(batch_sizes) = {clients * max(batch_sizes)} needed")
    dlg = attacks.get("dlg")
    psnr_b, label_acc = [], None
    for b in batch_sizes:
        xl, yl = x[:clients * b], y[:clients * b]
        res = dlg(model, xl, yl, batch_size=b, steps=steps, restarts=restarts,
                  generator=torch.Generator().manual_seed(seed))
        psnr_b.append(float(inversion.match_psnr(res.x_rec, xl, batch_size=b).mean()))
        if b == 1:
            label_acc = float((res.y_rec.cpu() == yl.cpu()).double().mean())
    xl, yl = x[:clients], y[:clients]
    psnr_n, images = [], {"original": xl.cpu()}
    for s in noise:
        res = dlg(model, xl, yl, batch_size=1, clip=clip, noise_multiplier=float(s), steps=steps, restarts=restarts,
                  generator=torch.Generator().manual_seed(seed))
        psnr_n.append(float(inversion.match_psnr(res.x_rec, xl, batch_size=1).mean()))
        images[f"sigma={s}"] = res.x_rec.cpu()
    return {"psnr_vs_batch": psnr_b, "psnr_vs_noise": psnr_n, "label_acc_batch1": label_acc, "images": images}
