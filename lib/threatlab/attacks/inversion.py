"""Model inversion and membership inference kernels (family "inversion").

Three questions an attacker asks of a trained model's outputs or gradients:

* membership inference - was this record in the training set? Metric attacks threshold
  the loss / confidence / entropy of the target's answer (Yeom et al. 2018; Salem et
  al. 2019), or the loss against per-class thresholds fitted on shadow data (Song &
  Mittal 2021); the shadow-model attack learns the in/out decision from shadow models
  trained on the attacker's own data, disjoint from the candidates (Shokri et al.
  2017); LiRA calibrates each example against reference models trained with and
  without it, or (offline) only without it (Carlini et al. 2022); the label-only
  attack counts correct labels under augmentations (Choquette-Choo et al. 2021). Kernels are
  ``fn(oracle, x, y, *, ...) -> MembershipResult`` with a score per example (higher =
  more likely a member); every target query goes through `oracle.BlackBox`.
* model inversion - what does a class look like to the model? Fredrikson et al. (2015)
  descend ``1 - f_c(x)`` on the input; here black-box, by antithetic finite
  differences through the oracle, so confidence and label-only APIs are compared with
  the same estimator: ``fredrikson(oracle, x0, target, *, ...) -> InversionResult``;
  `class_mean_correlation` scores reconstructions against the classes' mean images.
* gradient leakage - what did a client train on? Deep leakage from gradients (Zhu et
  al. 2019) with iDLG label recovery (Zhao et al. 2020): ``dlg(model, x, y, *, ...)``
  simulates the client's (optionally clipped and noised, DP-SGD-style) shared gradient
  and reconstructs the batch from it alone.

Shadow / reference models come from `threatlab.ensemble` (trained as one batched
ensemble); the kernels only receive their outputs.

    >>> from threatlab import attacks
    >>> res = attacks.get("mi_loss")(BlackBox(target), x, y)
    >>> metrics.auc(res.scores, is_member)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import gradients, runtime, validate
from ..errors import ConfigError
from ..oracle import BlackBox
from . import checks
from .registry import register

__all__ = ["MembershipResult", "InversionResult", "LeakageResult", "mi_loss", "mi_confidence",
           "mi_entropy", "mi_shadow", "mi_class_loss", "mi_lira", "mi_lira_offline", "mi_label_only",
           "fredrikson", "class_means", "class_mean_correlation", "dlg", "logit_confidence",
           "total_variation", "psnr", "baseline_psnr", "match_psnr"]

_TINY = 1e-30


@dataclass
class MembershipResult:
    """scores: float64 [n] (higher = more likely a member); queries: int64 [n] charged
    by the oracle for these examples; extra: attack-specific values."""

    scores: torch.Tensor
    queries: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class InversionResult:
    """x_rec: reconstructions [n, ...] in [0, 1]; target: class per row [n];
    confidence: the oracle's final answer for the target class (probability, or 1/0
    for label-only) [n]; queries: int64 [n]; diverged: int64 [n], the descent steps
    whose gradient estimate was non-finite and was skipped (the row did not move)."""

    x_rec: torch.Tensor
    target: torch.Tensor
    confidence: torch.Tensor
    queries: torch.Tensor
    diverged: torch.Tensor | None = None


@dataclass
class LeakageResult:
    """x_rec: reconstructed inputs [n, ...] in [0, 1], grouped like x in client batches
    of `batch_size` (order inside a batch is arbitrary); y_rec: recovered labels [n];
    grad_distance: final gradient-matching loss per client batch [n / batch_size] (of
    the restart kept); iterations: L-BFGS iterations that restart ran, int64
    [n / batch_size]; extra: e.g. "restart_distance" [n / batch_size, restarts].
    diverged: restarts per client batch whose optimisation diverged (non-finite
    distance or iterate, or a line-search step beyond float range), int64
    [n / batch_size]; they are discarded. reconstructed: bool [n / batch_size], False
    where every restart diverged: that batch has no reconstruction, its x_rec rows are
    NaN (never a plausible image), its grad_distance NaN and its iterations 0; its
    labels are still recovered (they come from the shared gradient, not the search)."""

    x_rec: torch.Tensor
    y_rec: torch.Tensor
    grad_distance: torch.Tensor
    iterations: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    diverged: torch.Tensor | None = None
    reconstructed: torch.Tensor | None = None

    @property
    def no_reconstruction(self) -> int:
        """How many client batches have no reconstruction (every restart diverged)."""
        return 0 if self.reconstructed is None else int((~self.reconstructed).sum())


# ---------------------------------------------------------------------------- checks


def _check_oracle(oracle, *, modes=("probs",)) -> None:
    checks.oracle(oracle, modes=modes)


def _check_xy(x, y, name_y="y") -> None:
    checks.images(x, nonempty=True)
    checks.labels(name_y, y, x.shape[0])


def _check_shadows(shadow_probs, shadow_in, x, y) -> None:
    n = x.shape[0]
    if not torch.is_tensor(shadow_probs) or shadow_probs.dim() != 3 or shadow_probs.shape[1] != n:
        shape = tuple(shadow_probs.shape) if torch.is_tensor(shadow_probs) else type(shadow_probs).__name__
        raise ConfigError(f"shadow_probs must be a tensor [M, {n}, classes] (each shadow model's "
                          f"probabilities on x); got {shape}")
    if not torch.is_tensor(shadow_in) or shadow_in.dtype != torch.bool or \
            shadow_in.shape != shadow_probs.shape[:2]:
        shape = tuple(shadow_in.shape) if torch.is_tensor(shadow_in) else type(shadow_in).__name__
        raise ConfigError(f"shadow_in must be a bool tensor {tuple(shadow_probs.shape[:2])} (True where x[i] "
                          f"was in shadow m's training set); got {shape}")
    if int(y.max()) >= shadow_probs.shape[2]:
        raise ConfigError(f"y has class {int(y.max())} but shadow_probs has {shadow_probs.shape[2]} classes")


_positive = validate.positive


def _queries(oracle: BlackBox, n: int) -> torch.Tensor:
    return oracle.count(torch.arange(n))


# --------------------------------------------------------------- membership: metrics


def logit_confidence(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LiRA's statistic: log p_y - log(sum of the other probabilities), float64 [..., n].

    The sum of the others is taken directly, not as 1 - p_y, so that a confident
    float32 answer (p_y rounds to 1) still gives a finite value.
    """
    p = probs.to(torch.float64)
    idx = y.view(*([1] * (p.dim() - 2)), -1, 1).expand(*p.shape[:-1], 1)
    py = p.gather(-1, idx).squeeze(-1)
    rest = p.sum(-1) - py
    others = p.scatter(-1, idx, 0.0).sum(-1)
    rest = torch.where(others > 0, others, rest)
    return py.clamp_min(_TINY).log() - rest.clamp_min(_TINY).log()


@register("inversion", "mi_loss")
def mi_loss(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *,
            generator: torch.Generator | None = None) -> MembershipResult:
    """Loss-threshold membership inference: members have low loss.

    Yeom, Giacomelli, Fredrikson, Jha (2018), "Privacy Risk in Machine Learning:
    Analyzing the Connection to Overfitting", arXiv 1709.01604. Threat model:
    black-box, probability outputs, one query per example, the true label known.

    Args:
        oracle: `BlackBox` in mode "probs". generator: unused (deterministic).
    Shapes: x [n, ...] in [0, 1], y [n] Long -> scores [n] = log p_y (= -cross-entropy).

    Example:
        >>> res = mi_loss(BlackBox(target), x, y)
        >>> metrics.auc(res.scores, member_mask)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    p = oracle(x).to(torch.float64)
    scores = p.gather(1, y.view(-1, 1)).squeeze(1).clamp_min(_TINY).log()
    return MembershipResult(scores.cpu(), _queries(oracle, x.shape[0]))


@register("inversion", "mi_confidence")
def mi_confidence(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> MembershipResult:
    """Confidence-threshold membership inference: members get confident answers.

    Salem, Zhang, Humbert, Berrang, Fritz, Backes (2019), "ML-Leaks: Model and Data
    Independent Membership Inference Attacks", arXiv 1806.01246 (their adversary 3:
    the top probability, no label, no shadow model). Threat model: black-box probs.

    Shapes: x [n, ...], y [n] (unused by the score) -> scores [n] = max_j p_j.

    Example:
        >>> res = mi_confidence(BlackBox(target), x, y)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    p = oracle(x).to(torch.float64)
    return MembershipResult(p.amax(1).cpu(), _queries(oracle, x.shape[0]))


@register("inversion", "mi_entropy")
def mi_entropy(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *,
               generator: torch.Generator | None = None) -> MembershipResult:
    """Entropy-threshold membership inference: members get low-entropy answers.

    Salem et al. (2019), arXiv 1806.01246 (adversary 3, entropy variant). Threat
    model: black-box probs, no label needed.

    Shapes: x [n, ...], y [n] (unused) -> scores [n] = -H(p) (nats).

    Example:
        >>> res = mi_entropy(BlackBox(target), x, y)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    p = oracle(x).to(torch.float64)
    h = -(p * p.clamp_min(_TINY).log()).sum(1)
    return MembershipResult((-h).cpu(), _queries(oracle, x.shape[0]))


def _normal(shape, generator, device, dtype) -> torch.Tensor:
    # Drawn on the generator's device, then moved: a CPU generator serves CUDA data and
    # one seed gives the same numbers on every device.
    return runtime.randn(shape, generator, device=device, dtype=dtype)


def _uniform(shape, generator, device, dtype) -> torch.Tensor:
    return runtime.rand(shape, generator, device=device, dtype=dtype)


# -------------------------------------------------------------- membership: shadows


def _check_shadow_data(shadow_probs, shadow_in, shadow_y, shadow_ids, candidate_ids, x, y) -> None:
    # The attacker's own labelled data and its shadow models' answers on it (Shokri's
    # protocol), or, with shadow_y None, the shadows' answers on the candidates x.
    if shadow_y is None:
        _check_shadows(shadow_probs, shadow_in, x, y)
        if shadow_ids is not None:
            raise ConfigError("shadow_ids needs shadow_y (ids of the attacker's own rows, not of the candidates)")
        return
    if not torch.is_tensor(shadow_y) or shadow_y.dim() != 1 or shadow_y.is_floating_point() \
            or shadow_y.dtype == torch.bool or shadow_y.numel() == 0:
        raise ConfigError("shadow_y must be an integer tensor [n_s] (labels of the attacker's shadow data); got "
                          f"{tuple(shadow_y.shape) if torch.is_tensor(shadow_y) else type(shadow_y).__name__}")
    n_s = shadow_y.shape[0]
    if not torch.is_tensor(shadow_probs) or shadow_probs.dim() != 3 or shadow_probs.shape[1] != n_s:
        shape = tuple(shadow_probs.shape) if torch.is_tensor(shadow_probs) else type(shadow_probs).__name__
        raise ConfigError(f"shadow_probs must be a tensor [M, {n_s}, classes] (each shadow model's "
                          f"probabilities on the attacker's {n_s} shadow rows); got {shape}")
    if not torch.is_tensor(shadow_in) or shadow_in.dtype != torch.bool or shadow_in.shape != shadow_probs.shape[:2]:
        shape = tuple(shadow_in.shape) if torch.is_tensor(shadow_in) else type(shadow_in).__name__
        raise ConfigError(f"shadow_in must be a bool tensor {tuple(shadow_probs.shape[:2])} (True where shadow "
                          f"row j was in shadow m's training set); got {shape}")
    if not bool(torch.isfinite(shadow_probs).all()):
        raise ConfigError("shadow_probs holds NaN or inf")
    c = shadow_probs.shape[2]
    if int(shadow_y.min()) < 0 or int(shadow_y.max()) >= c or int(y.max()) >= c:
        raise ConfigError(f"labels must lie in [0, {c - 1}] (shadow_probs has {c} classes)")
    if (shadow_ids is None) != (candidate_ids is None):
        raise ConfigError("shadow_ids and candidate_ids go together (both None, or both given to be checked)")
    if shadow_ids is not None:
        for name, ids, n in (("shadow_ids", shadow_ids, n_s), ("candidate_ids", candidate_ids, x.shape[0])):
            checks.labels(name, ids, n)
        overlap = torch.isin(candidate_ids.cpu(), shadow_ids.cpu())
        if bool(overlap.any()):
            raise ConfigError(
                f"shadow_ids and candidate_ids share {int(overlap.sum())} row(s) (e.g. row "
                f"{int(candidate_ids[overlap][0])}): the attack would be fitted on shadow outputs for the very "
                "records it scores; Shokri et al.'s protocol needs the attacker's data disjoint from the candidates")


def _attack_features(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Shokri et al. train one attack model per class on the probability vector; one
    # network fed the label as a one-hot does the same job in a single batched fit.
    # Log-probabilities spread the 0.99..1.0 region where members and non-members differ.
    logp = probs.to(torch.float32).clamp_min(1e-30).log().clamp_min(-30.0) / 30.0
    return torch.cat([logp, F.one_hot(y, probs.shape[-1]).to(logp.dtype)], dim=-1)


@register("inversion", "mi_shadow")
def mi_shadow(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, shadow_probs: torch.Tensor,
              shadow_in: torch.Tensor, shadow_y: torch.Tensor | None = None,
              shadow_ids: torch.Tensor | None = None, candidate_ids: torch.Tensor | None = None,
              hidden: int = 64, steps: int = 300, lr: float = 1e-2,
              generator: torch.Generator | None = None) -> MembershipResult:
    """Shadow-model membership inference: an attack classifier learns in/out from shadows.

    Shokri, Stronati, Song, Shmatikov (2017), "Membership Inference Attacks against
    Machine Learning Models", arXiv 1610.05820. Threat model: black-box probs; the
    attacker owns labelled data from the target's distribution, disjoint from the
    records it will score, trains shadow models of the target's architecture on parts
    of it, and fits the attack model on the shadows' answers on their own in- and
    out-of-training rows. Only then is the target queried, once per candidate.

    Shokri's protocol: pass the attacker's data as ``shadow_y`` (labels of its n_s rows)
    with ``shadow_probs`` / ``shadow_in`` over those rows; ``shadow_ids`` and
    ``candidate_ids`` (row numbers in one common pool) make the call check that the two
    sets are disjoint (ConfigError otherwise) and record what the attack trained on in
    ``extra["attack_train_ids"]``. Without ``shadow_y`` the shadows' answers are on the
    candidates x themselves (LiRA's shared pool; the attack model then sees every
    candidate's shadow outputs, which leaks per-record information; kept for the
    benchmarks' like-for-like comparison with ART).

    Args:
        oracle: `BlackBox` (mode "probs") around the target.
        shadow_probs: float [M, n_s, classes], shadow m's probabilities on row j.
        shadow_in: bool [M, n_s], True where row j was in shadow m's training set.
        shadow_y: Long [n_s], labels of the shadow rows; None: the rows are x (n_s = n).
        shadow_ids, candidate_ids: Long [n_s], [n] pool row numbers (both or neither).
        hidden: width of the attack MLP (one hidden layer, > 0), default 64.
        steps: full-batch Adam steps fitting the attack model (> 0), default 300.
        lr: its learning rate (> 0), default 1e-2.
        generator: initialises the attack MLP (CPU generator).
    Shapes: x [n, ...], y [n] -> scores [n] (attack logit on the target's answer).

    Example:
        >>> probs = shadow_ens.logits(x_att).softmax(-1)         # [M, n_s, C]
        >>> res = mi_shadow(BlackBox(target), x, y, shadow_probs=probs, shadow_in=mask, shadow_y=y_att,
        ...                 shadow_ids=att_rows, candidate_ids=cand_rows)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    _check_shadow_data(shadow_probs, shadow_in, shadow_y, shadow_ids, candidate_ids, x, y)
    _positive("hidden", hidden, integer=True)
    _positive("steps", steps, integer=True)
    _positive("lr", lr)
    dev = x.device
    m, n_s, c = shadow_probs.shape
    ys = (y if shadow_y is None else shadow_y).to(dev)
    feats = _attack_features(shadow_probs.to(dev), ys.expand(m, n_s)).reshape(m * n_s, -1)
    labels = shadow_in.to(dev).reshape(-1).to(torch.float32)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    d = feats.shape[1]
    w1 = (_normal((d, hidden), g, dev, torch.float32) / math.sqrt(d)).requires_grad_(True)
    b1 = torch.zeros(hidden, device=dev, requires_grad=True)
    w2 = (_normal((hidden, 1), g, dev, torch.float32) / math.sqrt(hidden)).requires_grad_(True)
    b2 = torch.zeros(1, device=dev, requires_grad=True)
    net = lambda f: (torch.relu(f @ w1 + b1) @ w2 + b2).squeeze(-1)  # noqa: E731
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(net(feats), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    # The target is queried only now, after the attack model is fixed.
    with torch.no_grad():
        scores = net(_attack_features(oracle(x), y)).to(torch.float64)
    extra = {"attack_train_loss": float(loss.detach()), "attack_train_rows": m * n_s,
             "attack_train_ids": None if shadow_ids is None else shadow_ids.detach().cpu().clone()}
    return MembershipResult(scores.cpu(), _queries(oracle, x.shape[0]), extra)


def _youden_threshold(v: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """The threshold t maximising TPR - FPR of "member iff v >= t" (= the best balanced
    accuracy) on labelled values; NaN when one of the two groups is empty."""
    pos, neg = int(member.sum()), int((~member).sum())
    if pos == 0 or neg == 0:
        return torch.tensor(math.nan, dtype=torch.float64)
    order = v.argsort(descending=True)
    vs, ms = v[order], member[order]
    j = (ms.cumsum(0) / pos) - ((~ms).cumsum(0) / neg)
    # Only the last row of a run of equal values is a realisable cut.
    last = torch.ones_like(ms)
    last[:-1] = vs[1:] != vs[:-1]
    j = torch.where(last, j, torch.full_like(j, -math.inf))
    return vs[int(j.argmax())]


@register("inversion", "mi_class_loss")
def mi_class_loss(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, shadow_probs: torch.Tensor,
                  shadow_in: torch.Tensor, shadow_y: torch.Tensor | None = None,
                  shadow_ids: torch.Tensor | None = None, candidate_ids: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> MembershipResult:
    """Class-conditional loss threshold: one threshold per class, fitted on shadow data.

    Song, Mittal (2021), "Systematic Evaluation of Privacy Risks of Machine Learning
    Models", arXiv 2003.10595 (their class-dependent thresholds). Threat model: black-box
    probs, the label known, shadow models on the attacker's own data (as `mi_shadow`,
    same arguments and the same disjointness check). Some classes are easier than
    others, so one global loss threshold misplaces whole classes; per class c the
    threshold tau_c maximising the shadows' TPR - FPR (their threshold-optimal attack
    accuracy on balanced in/out data) is fitted on the shadows' log p_y of class-c rows,
    and a candidate scores log p_y - tau_y (higher = member). A class with no in or no
    out shadow row falls back to the threshold fitted on all classes together.

    Args: as `mi_shadow` (no attack model to fit; generator unused).
    Shapes: x [n, ...], y [n] -> scores [n]; extra["thresholds"] float64 [classes].

    Example:
        >>> res = mi_class_loss(BlackBox(target), x, y, shadow_probs=p_att, shadow_in=mask, shadow_y=y_att)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    _check_shadow_data(shadow_probs, shadow_in, shadow_y, shadow_ids, candidate_ids, x, y)
    m, n_s, c = shadow_probs.shape
    ys = (y if shadow_y is None else shadow_y).cpu()
    p = shadow_probs.detach().cpu().to(torch.float64)
    s_shadow = p.gather(2, ys.view(1, -1, 1).expand(m, n_s, 1)).squeeze(2).clamp_min(_TINY).log()   # [M, n_s]
    member = shadow_in.cpu()
    flat_cls = ys.expand(m, n_s).reshape(-1)
    flat_v, flat_m = s_shadow.reshape(-1), member.reshape(-1)
    overall = _youden_threshold(flat_v, flat_m)
    # One fit per class (C small); each is a sort of that class's shadow values.
    tau = torch.stack([_youden_threshold(flat_v[flat_cls == k], flat_m[flat_cls == k]) for k in range(c)])
    tau = torch.where(torch.isnan(tau), overall, tau)
    pt = oracle(x).to(torch.float64).cpu()
    s = pt.gather(1, y.cpu().view(-1, 1)).squeeze(1).clamp_min(_TINY).log()
    return MembershipResult(s - tau[y.cpu()], _queries(oracle, x.shape[0]),
                            {"thresholds": tau, "global_threshold": float(overall)})


def _lira_stats(phi_s: torch.Tensor, w: torch.Tensor, fix_variance: bool):
    """Per-example median and population standard deviation of the reference phis
    selected by the bool mask w [M, n] (the reference implementation's statistics);
    with fix_variance one standard deviation over all selected values."""
    cnt = w.sum(0)
    masked = torch.where(w, phi_s, torch.full_like(phi_s, math.nan))
    # numpy's median of an even count averages the two middle values; torch's
    # nanmedian returns the lower one, so take both middles explicitly.
    srt = masked.sort(0).values                                  # NaNs sort last
    lo = ((cnt - 1).clamp_min(0) // 2).view(1, -1)
    hi = (cnt // 2).clamp_max(phi_s.shape[0] - 1).view(1, -1)
    med = 0.5 * (srt.gather(0, lo) + srt.gather(0, hi)).squeeze(0)
    have = cnt > 0
    fallback = med[have].mean() if bool(have.any()) else torch.zeros((), dtype=phi_s.dtype)
    med = torch.where(have, med, fallback)
    if fix_variance:
        vals = phi_s[w]
        std = vals.std(correction=0) if vals.numel() else torch.zeros((), dtype=phi_s.dtype)
        std = std.expand_as(med)
    else:
        mean = torch.where(w, phi_s, torch.zeros_like(phi_s)).sum(0) / cnt.clamp_min(1)
        var = (torch.where(w, phi_s - mean, torch.zeros_like(phi_s)) ** 2).sum(0) / cnt.clamp_min(1)
        pooled = phi_s[w].std(correction=0) if bool(w.any()) else torch.ones((), dtype=phi_s.dtype)
        std = torch.where(cnt > 1, var.sqrt(), pooled)
    return med, std


def _normal_logpdf(v, mu, std):
    # scipy.stats.norm.logpdf(v, mu, std + 1e-30), as the reference evaluates it.
    s = std + 1e-30
    return -0.5 * ((v - mu) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)


@register("inversion", "mi_lira")
def mi_lira(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, shadow_probs: torch.Tensor,
            shadow_in: torch.Tensor, fix_variance: bool = True,
            generator: torch.Generator | None = None) -> MembershipResult:
    """Likelihood-ratio attack (online LiRA): per-example Gaussians from reference models.

    Carlini, Chien, Nasr, Song, Terzis, Tramèr (2022), "Membership Inference Attacks
    From First Principles", arXiv 2112.03570. Threat model: black-box probs; the
    attacker trains reference (shadow) models on random halves of a pool that contains
    the candidates, so each x[i] is IN some of them and OUT of the others.

    For each example, phi = log p_y - log(sum of the other probabilities) of the target
    is compared with the phis of the IN and OUT reference models: score =
    log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2), mu the median and s the
    population standard deviation of the example's IN (OUT) phis, as in the authors'
    code (tensorflow/privacy research/mi_lira_2021, score.py and plot.py; cross-checked
    in tests/test_inversion.py). Two departures, both documented there: the reference
    keeps only the first min-over-examples count of IN (OUT) models of every example
    (an artifact of stacking arrays) where this uses all of them, and with
    fix_variance it takes the IN spread for both Gaussians where this uses each side's
    own. One query per example (no augmentations). An example with no IN (OUT) model
    uses the mean of the other examples' medians.

    Args:
        oracle: `BlackBox` (mode "probs") around the target.
        shadow_probs: float [M, n, classes], reference m's probabilities on x.
        shadow_in: bool [M, n], True where x[i] was in reference m's training set.
        fix_variance: one global s_in and s_out instead of per-example spreads. Default
            True: Carlini et al. recommend it below ~64 reference models (per-example
            spreads from 8 IN values are noisy), which covers every profile here.
        generator: unused (deterministic).
    Shapes: x [n, ...], y [n] -> scores [n] (log-likelihood ratio).

    Example:
        >>> res = mi_lira(BlackBox(target), x, y, shadow_probs=probs, shadow_in=mask)
        >>> metrics.tpr_at_fpr(res.scores, member_mask, 0.001)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    _check_shadows(shadow_probs, shadow_in, x, y)
    validate.of_type("fix_variance", fix_variance, bool)
    dev = x.device
    phi_s = logit_confidence(shadow_probs.to(dev), y.to(dev))         # [M, n]
    ins = shadow_in.to(dev)
    mu_in, s_in = _lira_stats(phi_s, ins, fix_variance)
    mu_out, s_out = _lira_stats(phi_s, ~ins, fix_variance)
    phi = logit_confidence(oracle(x), y)
    scores = _normal_logpdf(phi, mu_in, s_in) - _normal_logpdf(phi, mu_out, s_out)
    return MembershipResult(scores.cpu(), _queries(oracle, x.shape[0]),
                            {"phi": phi.cpu(), "mu_in": mu_in.cpu(), "mu_out": mu_out.cpu()})


@register("inversion", "mi_lira_offline")
def mi_lira_offline(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, shadow_probs: torch.Tensor,
                    shadow_in: torch.Tensor | None = None, fix_variance: bool = True, two_sided: bool = False,
                    generator: torch.Generator | None = None) -> MembershipResult:
    """Offline LiRA: calibrate each example against reference models that never saw it.

    Carlini et al. (2022), arXiv 2112.03570, offline variant: no model is trained after
    the candidates are known, so only OUT statistics exist. The paper's test is
    one-sided, Lambda = Pr[Z < phi] with Z ~ N(mu_out, s_out^2); its monotone equivalent
    (phi - mu_out) / s_out is returned, which keeps resolution where Lambda rounds to 1.
    ``two_sided=True`` returns what the authors' plot.py ranks by instead,
    -log N(phi; mu_out, s_out^2) (large when phi is far from the OUT mean either way).
    mu / s as in `mi_lira` (median, population standard deviation, all OUT models).

    Args:
        oracle: `BlackBox` (mode "probs") around the target.
        shadow_probs: float [M, n, classes], reference m's probabilities on x.
        shadow_in: bool [M, n] or None (= no reference saw any candidate: all OUT); rows
            marked IN are ignored.
        fix_variance: one global s_out (default True, as `mi_lira`). two_sided: see
            above. generator: unused.
    Shapes: x [n, ...], y [n] -> scores [n] (higher = more likely a member).

    Example:
        >>> res = mi_lira_offline(BlackBox(target), x, y, shadow_probs=disjoint_shadows(x).softmax(-1))
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    if shadow_in is None and torch.is_tensor(shadow_probs) and shadow_probs.dim() == 3:
        shadow_in = torch.zeros(shadow_probs.shape[:2], dtype=torch.bool)
    _check_shadows(shadow_probs, shadow_in, x, y)
    validate.of_type("fix_variance", fix_variance, bool)
    validate.of_type("two_sided", two_sided, bool)
    dev = x.device
    phi_s = logit_confidence(shadow_probs.to(dev), y.to(dev))
    mu_out, s_out = _lira_stats(phi_s, ~shadow_in.to(dev), fix_variance)
    phi = logit_confidence(oracle(x), y)
    if two_sided:
        scores = -_normal_logpdf(phi, mu_out, s_out)
    else:
        scores = (phi - mu_out) / (s_out + 1e-30)
    return MembershipResult(scores.cpu(), _queries(oracle, x.shape[0]), {"phi": phi.cpu(), "mu_out": mu_out.cpu()})


# ----------------------------------------------------------- membership: label only


def _shifts(d: int) -> list[tuple[int, int]]:
    # Choquette-Choo et al.'s translation set: the image itself and every shift with
    # |dx| + |dy| = d (4d + 1 images).
    out = [(0, 0)]
    for dx in range(-d, d + 1):
        r = d - abs(dx)
        out += [(dx, r), (dx, -r)] if r else [(dx, 0)]
    return out


def _translate(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    # Integer shift with zero fill (black, the MNIST background).
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


@register("inversion", "mi_label_only")
def mi_label_only(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, max_shift: int = 1,
                  noise_samples: int = 0, noise_sigma: float = 0.1,
                  generator: torch.Generator | None = None) -> MembershipResult:
    """Label-only membership inference by robustness to augmentation.

    Choquette-Choo, Tramèr, Carlini, Papernot (2021), "Label-Only Membership Inference
    Attacks", arXiv 2007.14321 (their data-augmentation attack, plus optional Gaussian
    noise as a cheap proxy of their boundary distance). Threat model: black-box,
    the API returns the predicted label only; the true label is known. A training
    example stays correctly classified under small changes more often than a fresh one,
    so the score is the fraction of correct answers over the example itself, its
    translations with |dx| + |dy| = max_shift (4 max_shift + 1 images), and
    `noise_samples` copies with N(0, noise_sigma^2) pixel noise (clipped to [0, 1]).
    Every query goes through the oracle and is counted there.

    Args:
        oracle: `BlackBox` in mode "label" (any mode works; labels are what is used).
        max_shift: translation d in pixels (>= 0; 0 = only the image itself), default 1.
        noise_samples: noisy copies per example (>= 0), default 0.
        noise_sigma: their pixel-noise standard deviation (> 0), default 0.1.
        generator: draws the noise (CPU generator).
    Shapes: x [n, C, H, W], y [n] -> scores [n] in [0, 1], queries [n] = 4d + 1 + noise_samples.

    Example:
        >>> res = mi_label_only(BlackBox(target, mode="label"), x, y, max_shift=2, noise_samples=20)
        >>> metrics.tpr_at_fpr(res.scores, member_mask, 0.001)
    """
    _check_oracle(oracle, modes=("label", "probs", "topk", "rounded"))
    _check_xy(x, y)
    validate.non_negative("max_shift", max_shift, integer=True)
    validate.non_negative("noise_samples", noise_samples, integer=True)
    _positive("noise_sigma", noise_sigma)
    if x.dim() != 4:
        raise ConfigError(f"x must be images [n, C, H, W] for translations; got {tuple(x.shape)}")
    if max_shift >= min(x.shape[-2:]):
        raise ConfigError(f"max_shift={max_shift} must be smaller than the image ({tuple(x.shape[-2:])})")
    n = x.shape[0]
    views = [_translate(x, dx, dy) for dx, dy in _shifts(max_shift)]
    if noise_samples:
        noise = _normal((noise_samples, *x.shape), generator, x.device, x.dtype)
        views += list((x.unsqueeze(0) + noise_sigma * noise).clamp(0, 1))
    batch = torch.cat(views)                                             # [V * n, ...]
    ids = torch.arange(n, device=x.device).repeat(len(views))
    out = oracle(batch, ids)
    pred = out if oracle.mode == "label" else out.argmax(1)
    correct = (pred.view(len(views), n) == y.to(pred.device)).to(torch.float64)
    return MembershipResult(correct.mean(0).cpu(), _queries(oracle, n), {"views": len(views)})


# ------------------------------------------------------------------- model inversion


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image (sum of absolute neighbour differences): [n]."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    return dh + dw


def _tv_grad(x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(total_variation(xr).sum(), xr)
    return g


@register("inversion", "fredrikson")
def fredrikson(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, steps: int = 100, lr: float = 0.1,
               samples: int = 16, sigma: float = 0.1, tv_weight: float = 0.0,
               generator: torch.Generator | None = None) -> InversionResult:
    """Model inversion (MI-Face): gradient descent on the input towards a class.

    Fredrikson, Jha, Ristenpart (2015), "Model Inversion Attacks that Exploit
    Confidence Information and Basic Countermeasures", ACM CCS (no arXiv id). Threat
    model: black-box; the attacker knows the input shape and a class id and sees the
    oracle's answers. The paper descends c(x) = 1 - f_c(x) by gradient descent; here the
    gradient is estimated by antithetic Gaussian finite differences through the oracle
    (2 * samples queries per row per step), so a confidence API ("probs", "rounded",
    "topk": descend -log f_c, same minimiser as 1 - f_c, larger gradients where f_c is
    tiny) and a label-only API ("label": ascend the smoothed indicator [label == c])
    are attacked with the same estimator. Each step moves every row by `lr` (L2, pixel
    units) along the normalised estimate plus `tv_weight` times the local
    total-variation gradient (the attacker's own image prior), then clips to [0, 1].

    Args:
        oracle: `BlackBox` around the target, any output mode.
        x: starting images [n, ...] in [0, 1] (e.g. zeros, as in the paper).
        y: the class each row inverts, Long [n] (batch all classes at once).
        steps: descent steps (> 0), default 100.
        lr: L2 step length per step in pixel units (> 0), default 0.1 (a step moves a
            28x28 image by ~0.004 per pixel on average).
        samples: antithetic pairs per row per step (> 0), default 16.
        sigma: finite-difference smoothing, pixel units (> 0), default 0.1.
        tv_weight: weight of the total-variation prior (>= 0), default 0.
        generator: draws the finite-difference directions (on x's device).
    A row whose estimate is non-finite (an oracle answering NaN or inf) skips that
    step and it is counted in `diverged`: one bad answer must not turn the row NaN.
    Shapes: x [n, ...], y [n] -> x_rec [n, ...], confidence [n], queries [n], diverged [n].

    Example:
        >>> classes = torch.arange(10).repeat_interleave(4)
        >>> res = fredrikson(BlackBox(target), torch.zeros(40, 1, 28, 28), classes, steps=100)
        >>> evaluation_model(res.x_rec).argmax(1) == classes
    """
    _check_oracle(oracle, modes=("probs", "topk", "rounded", "label"))
    _check_xy(x, y)
    _positive("steps", steps, integer=True)
    _positive("lr", lr)
    _positive("samples", samples, integer=True)
    _positive("sigma", sigma)
    validate.number("tv_weight", tv_weight, low=0, high=math.inf, high_open=True)
    n, shape = x.shape[0], x.shape[1:]
    label_only = oracle.mode == "label"
    ids = torch.arange(n, device=x.device).repeat_interleave(2 * samples)
    tgt_rep = y.to(x.device).repeat_interleave(2 * samples)

    def objective(out):
        # What the attacker maximises from one answer: log f_c, or [label == c].
        if label_only:
            return (out == tgt_rep).to(torch.float32)
        return out.gather(1, tgt_rep.view(-1, 1)).squeeze(1).clamp_min(1e-30).log()

    xr = x.detach().clone()
    diverged = torch.zeros(n, dtype=torch.int64, device=x.device)
    for _ in range(steps):
        u = _normal((n, samples, *shape), generator, x.device, x.dtype)
        # Antithetic pairs (x + s u, x - s u) cancel the even terms of the estimate.
        probe = torch.stack([xr.unsqueeze(1) + sigma * u, xr.unsqueeze(1) - sigma * u], 2).clamp(0, 1)
        f = objective(oracle(probe.reshape(-1, *shape), ids)).view(n, samples, 2)
        diff = (f[..., 0] - f[..., 1]).view(n, samples, *[1] * len(shape))
        g = (diff * u).mean(1) / (2 * sigma)
        # Normalised steps: the same lr means the same move whatever the output scale;
        # a zero estimate (label-only far from class c) means no move, and so does a
        # non-finite one (inf / inf would make the row NaN for good), counted per row.
        finite = torch.isfinite(g).flatten(1).all(1)
        diverged += (~finite).long()
        norm = g.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
        step = torch.where((norm > 0) & finite.view_as(norm), g / norm.clamp_min(1e-12), torch.zeros_like(g))
        if tv_weight:
            step = step - tv_weight * _tv_grad(xr) / math.sqrt(xr[0].numel())
        xr = (xr + lr * step).clamp(0, 1)
    final = oracle(xr, torch.arange(n, device=x.device))
    conf = (final == y).to(torch.float32) if label_only else final.gather(1, y.view(-1, 1)).squeeze(1)
    return InversionResult(xr, y, conf.cpu(), _queries(oracle, n), diverged.cpu())


def class_means(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean training image of every class, [num_classes, ...] (float64; a class without
    examples raises ConfigError)."""
    checks.images(x, nonempty=True)
    checks.labels("y", y, x.shape[0])
    validate.number("num_classes", num_classes, low=2, integer=True)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(f"y must lie in [0, {num_classes - 1}]")
    counts = torch.bincount(y.cpu(), minlength=num_classes)
    if bool((counts == 0).any()):
        raise ConfigError(f"class {int((counts == 0).nonzero()[0])} has no examples in x")
    flat = x.detach().cpu().to(torch.float64).flatten(1)
    sums = torch.zeros(num_classes, flat.shape[1], dtype=torch.float64).index_add_(0, y.cpu(), flat)
    return (sums / counts.view(-1, 1)).view(num_classes, *x.shape[1:])


def class_mean_correlation(x_rec: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every reconstruction with every class's mean image, [n, C].

    A recognisability check independent of any classifier (Fredrikson et al.'s
    reconstructions should look like their class's prototype; an adversarial-looking
    pattern can satisfy an evaluation classifier but does not correlate with the mean
    image). ``corr.argmax(1) == target`` is the best-correlated-class match. A constant
    image has no correlation with anything: its row is 0.
    """
    checks.images(x_rec, nonempty=True, unit_range=False)
    if not torch.is_tensor(means) or means.shape[1:] != x_rec.shape[1:]:
        raise ConfigError(f"means must be [C, {', '.join(map(str, x_rec.shape[1:]))}] (class_means); got "
                          f"{tuple(means.shape) if torch.is_tensor(means) else type(means).__name__}")
    a = x_rec.detach().cpu().to(torch.float64).flatten(1)
    b = means.detach().cpu().to(torch.float64).flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    return (a @ b.T) / (na * nb.T).clamp_min(1e-30)



# ------------------------------------------------------------------ gradient leakage


def _infer_labels(head_bias_grad: torch.Tensor, batch_size: int) -> torch.Tensor:
    # iDLG: d CE / d bias_j = p_j - [j == y] summed over the batch. It is negative only
    # for labels present in the batch, so the most negative entries are the labels
    # (exact for batch 1; for larger batches, exact when the labels are distinct).
    return head_bias_grad.argsort(dim=-1)[..., :batch_size]


@register("inversion", "dlg")
def dlg(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1,
        clip: float | None = None, noise_multiplier: float = 0.0, steps: int = 100, restarts: int = 1,
        init: str = "uniform", generator: torch.Generator | None = None) -> LeakageResult:
    """Deep leakage from gradients: rebuild a client's batch from its shared gradient.

    Zhu, Liu, Han (2019), "Deep Leakage from Gradients", arXiv 1906.08935; label
    recovery from the last-layer bias gradient as in iDLG (Zhao, Mopuri, Bilen 2020,
    arXiv 2001.02610). Threat model: honest-but-curious server in federated learning:
    it knows the model (white-box) and receives each client's gradient of the summed
    cross-entropy of one batch, optionally DP-SGD-style clipped per example to `clip`
    and noised with N(0, (noise_multiplier * clip)^2); the clip is public, so the
    attacker applies the same clipping to its dummy gradients.

    x is split into consecutive client batches of `batch_size`. For every client the
    shared gradient is computed (the only thing the attacker uses), its labels are
    inferred from it, and `restarts` dummy batches are each optimised with their own
    L-BFGS (strong Wolfe line search, as in the paper) to minimise the squared L2
    distance between dummy and shared gradients; the restart with the smallest final
    distance is kept. A restart that diverges (its L-BFGS line search extrapolates past
    float range, which torch reports as a RuntimeError, or it ends on a non-finite
    distance or iterate) is discarded and counted (`diverged`); tiny last-bit
    differences between CPUs' float kernels are enough to tip a strong-Wolfe search
    into that, so one bad restart must not end the attack. A client whose every
    restart diverged has no reconstruction (`reconstructed` False, NaN rows); the
    kernel never raises for it. Clients and restarts run one after another: L-BFGS's curvature
    pairs and line search belong to one problem, and a joint optimisation over all
    clients lets the hardest client set everybody's step. Each run does exactly `steps`
    iterations unless the dummy stops moving (tolerances 0; `iterations` says how many
    ran), so `steps` is the budget it names.

    Args:
        model: the shared model (logits); its parameters are read, never changed. DLG
            needs a twice-differentiable model (e.g. models.build("lenet_sigmoid")):
            through ReLUs the gradient of the gradient is piecewise constant.
        x, y: the clients' private data [n, ...] in [0, 1] and labels [n];
            n must be a multiple of batch_size.
        batch_size: examples per client batch (> 0), default 1.
        clip: per-example L2 clipping norm (> 0) or None (no clipping), default None.
        noise_multiplier: DP noise sigma (>= 0), default 0; needs clip unless 0.
        steps: L-BFGS iterations per restart (> 0), default 100.
        restarts: independent random starts per client (> 0), default 1.
        init: dummy start, "uniform" (U[0,1]) or "half" (all 0.5; restarts are then equal).
        generator: draws the DP noise and the dummy starts (CPU generator), client by
            client: noise first, then the starts of its restarts.
    Shapes: x [n, ...], y [n] -> x_rec [n, ...], y_rec [n], grad_distance [n // batch_size],
    iterations [n // batch_size], diverged [n // batch_size], reconstructed
    [n // batch_size]; extra["restart_distance"] [n // batch_size, restarts] (NaN for a
    diverged restart).

    Example:
        >>> net = models.build("lenet_sigmoid", seed=0)
        >>> res = dlg(net, x[:4], y[:4], batch_size=1, steps=300, restarts=2)
        >>> match_psnr(res.x_rec, x[:4], batch_size=1)
    """
    _check_xy(x, y)
    _positive("batch_size", batch_size, integer=True)
    if clip is not None:
        _positive("clip", clip)
    validate.number("noise_multiplier", noise_multiplier, low=0, high=math.inf, high_open=True)
    if noise_multiplier > 0 and clip is None:
        raise ConfigError(f"noise_multiplier={noise_multiplier!r} needs clip= (the noise is "
                          "noise_multiplier * clip per coordinate)")
    _positive("steps", steps, integer=True)
    _positive("restarts", restarts, integer=True)
    validate.choice("init", init, ("uniform", "half"))
    n, shape = x.shape[0], x.shape[1:]
    if n % batch_size:
        raise ConfigError(f"batch_size={batch_size} must divide the number of examples n={n}")
    heads = [k for k, _ in model.named_parameters() if k.endswith("bias")]
    if not heads:
        raise ConfigError("dlg needs a model whose last layer has a bias (label recovery reads it)")
    k_clients = n // batch_size
    params = {k: v.detach() for k, v in model.named_parameters()}
    xb = x.view(k_clients, batch_size, *shape)
    yb = y.view(k_clients, batch_size)
    best_x, y_rec, best_d, iters, all_d, diverged = [], [], [], [], [], []
    for c in range(k_clients):  # a handful of clients: each its own optimisation problem
        with torch.no_grad():
            true = gradients.clip_and_noise(gradients.per_example(model, xb[c], yb[c], params=params), clip=clip,
                                            noise_multiplier=noise_multiplier, generator=generator)
        labels = _infer_labels(true[heads[-1]], batch_size)
        # Every restart draws its start before it runs, so a diverged one leaves the
        # generator exactly where a finished one would: the others are unchanged.
        runs = [_dlg_one(model, params, true, labels, clip, steps, init, (batch_size, *shape), x, generator)
                for _ in range(restarts)]
        kept = [r for r in runs if r is not None]
        nan = torch.tensor(math.nan, dtype=x.dtype, device=x.device)
        dists = torch.stack([nan if r is None else r[1] for r in runs])
        diverged.append(restarts - len(kept))
        if kept:
            j = min(range(len(kept)), key=lambda i: float(kept[i][1]))  # a few restarts: host reads are fine
            best_x.append(kept[j][0])
            best_d.append(kept[j][1])
            iters.append(kept[j][2])
        else:
            best_x.append(torch.full((batch_size, *shape), math.nan, dtype=x.dtype, device=x.device))
            best_d.append(nan)
            iters.append(0)
        all_d.append(dists)
        y_rec.append(labels)
    diverged = torch.tensor(diverged, dtype=torch.int64)
    return LeakageResult(torch.cat(best_x).clamp(0, 1), torch.cat(y_rec), torch.stack(best_d).cpu(),
                         torch.tensor(iters, dtype=torch.int64), {"restart_distance": torch.stack(all_d).cpu()},
                         diverged=diverged, reconstructed=diverged < restarts)


#: How torch's L-BFGS reports a strong-Wolfe step that left float range: the step
#: length, a Python float, cannot become the float32 `alpha` of `_add_grad`.
_LINE_SEARCH_OVERFLOW = "cannot be converted to type float without overflow"


def _dlg_one(model, params, true, labels, clip, steps, init, shape, like, generator):
    """One L-BFGS run of DLG for one client: (x_rec, final distance, iterations), or
    None when the run diverged (see `dlg`)."""
    if init == "uniform":
        start = _uniform(shape, generator, like.device, like.dtype)
    else:
        start = torch.full(shape, 0.5, dtype=like.dtype, device=like.device)
    dummy = start.requires_grad_(True)
    # max_eval bounds closure calls, not iterations: the strong-Wolfe line search takes
    # several per iteration, and torch's default (1.25 x max_iter) ends runs early. Zero
    # tolerances: stop only when the budget is spent or the step vanishes.
    opt = torch.optim.LBFGS([dummy], lr=1.0, max_iter=steps, max_eval=20 * steps, history_size=100,
                            line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)

    def distance():
        g = _clip_sum(gradients.per_example(model, dummy, labels, params=params), clip)
        return sum((g[k] - true[k]).pow(2).sum() for k in g)

    def closure():
        opt.zero_grad()
        with torch.enable_grad():
            loss = distance()
            loss.backward()
        return loss

    # Non-finite trial points inside a line search are not judged here: strong Wolfe
    # brackets an inf back to a finite step, and doing so is how a run recovers. Only
    # the two ways a run cannot recover count as divergence: the search extrapolating
    # (a NaN loss never satisfies its tests) until the step overflows float, or a run
    # that ends non-finite.
    try:
        opt.step(closure)
    except RuntimeError as e:
        if _LINE_SEARCH_OVERFLOW not in str(e):
            raise
        return None
    with torch.no_grad():
        d = distance().detach()
        finite = torch.isfinite(d) & torch.isfinite(dummy).all()
    # One host read per run, after it: whether it ended finite, and the iteration count.
    if not bool(finite):
        return None
    it = int(opt.state[dummy].get("n_iter", 0))
    return dummy.detach(), d, it


def _clip_sum(g: dict[str, torch.Tensor], clip: float | None) -> dict[str, torch.Tensor]:
    return gradients.clip_and_noise(g, clip=clip, noise_multiplier=0.0)


def psnr(x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 1) of each reconstruction against its original, float64 [n];
    an MSE below 1e-12 counts as 1e-12 (120 dB)."""
    if x_rec.shape != x.shape:
        raise ConfigError(f"x_rec {tuple(x_rec.shape)} and x {tuple(x.shape)} must have equal shapes")
    mse = (x_rec.detach().to(torch.float64).cpu() - x.detach().to(torch.float64).cpu()).flatten(1).pow(2).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def baseline_psnr(x: torch.Tensor, x_train: torch.Tensor) -> dict[str, float]:
    """Mean PSNR of the trivial reconstructions F08 compares DLG with: the
    all-black image and the training-set mean image, scored against the originals x
    exactly like a reconstruction. Returns {"black": dB, "mean_image": dB}."""
    checks.images(x, nonempty=True)
    checks.images(x_train, nonempty=True)
    black = torch.zeros_like(x)
    mean = x_train.detach().to(torch.float64).mean(0, keepdim=True).to(x.dtype).expand_as(x).cpu()
    return {"black": float(psnr(black, x).mean()), "mean_image": float(psnr(mean, x.cpu()).mean())}


def match_psnr(x_rec: torch.Tensor, x: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """PSNR (dB) of each original against its best-matching reconstruction of the same
    client batch (a batch's gradient does not fix the order of its examples): [n].

    Matching is a minimum-MSE assignment per batch (Hungarian, scipy).
    """
    from scipy.optimize import linear_sum_assignment

    _positive("batch_size", batch_size, integer=True)
    if x_rec.shape != x.shape or x.shape[0] % batch_size:
        raise ConfigError(f"x_rec {tuple(x_rec.shape)} and x {tuple(x.shape)} must have equal shapes "
                          f"with n a multiple of batch_size={batch_size}")
    k = x.shape[0] // batch_size
    a = x_rec.detach().to(torch.float64).cpu().reshape(k, batch_size, -1)
    b = x.detach().to(torch.float64).cpu().reshape(k, batch_size, -1)
    mse = ((a[:, :, None] - b[:, None, :]) ** 2).mean(-1).numpy()     # [K, rec, orig]
    out = np.empty((k, batch_size))
    for i in range(k):  # tiny assignment problems after all compute is done
        r, c = linear_sum_assignment(mse[i])
        out[i, c] = 10 * np.log10(1.0 / np.maximum(mse[i][r, c], 1e-12))
    return torch.from_numpy(out.reshape(-1))


# ------------------------------------------- membership: population-calibrated


def class_medians(values: torch.Tensor, classes: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Median of `values` per class, batched: (medians float64 [num_classes], counts int64
    [num_classes]). The median of an even count is the mean of the two middle values
    (numpy's convention); a class with no row gets NaN (the caller decides the fallback).

    The rows are scattered into a [classes, largest count] table padded with NaN and
    `torch.nanquantile` reads every row's median at once: no loop over classes.
    """
    v = values.detach().to(torch.float64)
    c = classes.detach().to(v.device).long()
    counts = torch.bincount(c, minlength=num_classes)
    width = int(counts.max()) if c.numel() else 0       # one host sync, before any compute
    table = torch.full((num_classes, max(width, 1)), math.nan, dtype=torch.float64, device=v.device)
    if c.numel():
        order = torch.sort(c, stable=True).indices
        cs = c[order]
        start = counts.cumsum(0) - counts
        pos = torch.arange(c.numel(), device=v.device) - start[cs]
        table[cs, pos] = v[order]
    return torch.nanquantile(table, 0.5, dim=1), counts


@register("inversion", "mi_class_threshold")
def mi_class_threshold(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, x_ref: torch.Tensor,
                       y_ref: torch.Tensor, generator: torch.Generator | None = None) -> MembershipResult:
    """Population-calibrated class threshold: the loss attack with a per-class offset read
    off the target's answers on records the attacker knows are not members.

    F06's fourth shadow-free attack. The calibration is attack P of Ye,
    Maddi, Murakonda, Bindschaedler, Shokri (2022), "Enhanced Membership Inference
    Attacks against Machine Learning Models", CCS, arXiv 2111.09679 (thresholds from the
    target's signal on population data, no shadow model), made class-dependent as in
    Song, Mittal (2021), arXiv 2003.10595. Threat model: black-box probs, the label known,
    the attacker owns labelled rows from the target's distribution that the target did
    not train on (x_ref, y_ref), and trains no model at all. Per class c,
    q_c = median of log p_y(x') over the attacker's rows of class c (known non-members),
    and a candidate scores log p_y(x) - q_y (higher = member). Unlike `mi_class_loss`,
    nothing is fitted on in/out labels: the median of non-members is the only statistic.
    A class with no reference row falls back to the median over all reference rows
    (listed in extra["fallback_classes"]).

    Queries: one per candidate (charged to ids 0..n-1, as the other metric attacks) and
    one per reference row (charged to ids n..n + n_ref - 1, so the candidates' counts stay
    theirs; extra["reference_queries"] = n_ref). The target is asked about the
    reference rows first.

    Args:
        oracle: `BlackBox` in mode "probs" around the target.
        x_ref: the attacker's own rows [n_ref, ...] in [0, 1] (non-members), x's shape.
        y_ref: their labels, Long [n_ref].
        generator: unused (deterministic).
    Shapes: x [n, ...], y [n] -> scores float64 [n]; extra["thresholds"] float64
    [classes] (the q_c), extra["reference_counts"] int64 [classes].

    Example:
        >>> res = mi_class_threshold(BlackBox(target), x, y, x_ref=x_att, y_ref=y_att)
        >>> metrics.auc(res.scores, member_mask)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    model = checks.model_of(oracle)
    validate.images("x_ref", x_ref, nonempty=True)
    validate.model_input(model, x_ref, name="x_ref")
    if tuple(x_ref.shape[1:]) != tuple(x.shape[1:]) or x_ref.device != x.device:
        raise ConfigError(f"x_ref {tuple(x_ref.shape)} on {x_ref.device} must have x's row shape "
                          f"{tuple(x.shape[1:])} and device {x.device}")
    validate.labels("y_ref", y_ref, x_ref.shape[0], num_classes=validate.model_facts(model)["num_classes"])
    n, n_ref = x.shape[0], x_ref.shape[0]
    p_ref = oracle(x_ref, ids=torch.arange(n, n + n_ref)).to(torch.float64)
    c = p_ref.shape[1]
    if int(y_ref.max()) >= c or int(y.max()) >= c:
        raise ConfigError(f"labels must lie in [0, {c - 1}] (the target answers {c} classes)")
    v_ref = p_ref.gather(1, y_ref.to(p_ref.device).view(-1, 1)).squeeze(1).clamp_min(_TINY).log()
    q, counts = class_medians(v_ref, y_ref, c)
    q = torch.where(counts > 0, q, v_ref.quantile(0.5))
    p = oracle(x).to(torch.float64)
    s = p.gather(1, y.view(-1, 1)).squeeze(1).clamp_min(_TINY).log()
    scores = s - q.to(s.device)[y]
    return MembershipResult(scores.cpu(), _queries(oracle, n),
                            {"thresholds": q.cpu(), "reference_counts": counts.cpu(),
                             "fallback_classes": (counts == 0).nonzero().squeeze(1).cpu().tolist(),
                             "reference_queries": n_ref})


__all__ += ["class_medians", "mi_class_threshold"]
