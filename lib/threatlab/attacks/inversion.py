"""Model inversion and membership inference kernels (family "inversion").

Three questions an attacker asks of a trained model's outputs or gradients:

* membership inference - was this record in the training set? Metric attacks threshold
  the loss / confidence / entropy of the target's answer (Yeom et al. 2018; Salem et
  al. 2019); the shadow-model attack learns the in/out decision from shadow models
  (Shokri et al. 2017); LiRA calibrates each example against reference models trained
  with and without it (Carlini et al. 2022). Kernels are
  ``fn(oracle, x, y, *, ...) -> MembershipResult`` with a score per example (higher =
  more likely a member); every target query goes through `oracle.BlackBox`.
* model inversion - what does a class look like to the model? Fredrikson et al. (2015)
  descend ``1 - f_c(x)`` on the input; here black-box, by antithetic finite
  differences through the oracle, so confidence and label-only APIs are compared with
  the same estimator: ``fredrikson(oracle, x0, target, *, ...) -> InversionResult``.
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

from .. import gradients, validate
from ..errors import ConfigError
from ..oracle import BlackBox
from . import checks
from .registry import register

__all__ = ["MembershipResult", "InversionResult", "LeakageResult", "mi_loss", "mi_confidence",
           "mi_entropy", "mi_shadow", "mi_lira", "fredrikson", "dlg", "logit_confidence",
           "total_variation", "match_psnr"]

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
    for label-only) [n]; queries: int64 [n]."""

    x_rec: torch.Tensor
    target: torch.Tensor
    confidence: torch.Tensor
    queries: torch.Tensor


@dataclass
class LeakageResult:
    """x_rec: reconstructed inputs [n, ...] in [0, 1], grouped like x in client batches
    of `batch_size` (order inside a batch is arbitrary); y_rec: recovered labels [n];
    grad_distance: final gradient-matching loss per client batch [n / batch_size]."""

    x_rec: torch.Tensor
    y_rec: torch.Tensor
    grad_distance: torch.Tensor


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
def mi_loss(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, generator=None) -> MembershipResult:
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
def mi_confidence(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, generator=None) -> MembershipResult:
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
def mi_entropy(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, generator=None) -> MembershipResult:
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


# -------------------------------------------------------------- membership: shadows


def _attack_features(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Shokri et al. train one attack model per class on the probability vector; one
    # network fed the label as a one-hot does the same job in a single batched fit.
    # Log-probabilities spread the 0.99..1.0 region where members and non-members differ.
    logp = probs.to(torch.float32).clamp_min(1e-30).log().clamp_min(-30.0) / 30.0
    return torch.cat([logp, F.one_hot(y, probs.shape[-1]).to(logp.dtype)], dim=-1)


@register("inversion", "mi_shadow")
def mi_shadow(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, shadow_probs: torch.Tensor,
              shadow_in: torch.Tensor, hidden: int = 64, steps: int = 300, lr: float = 1e-2,
              generator: torch.Generator | None = None) -> MembershipResult:
    """Shadow-model membership inference: an attack classifier learns in/out from shadows.

    Shokri, Stronati, Song, Shmatikov (2017), "Membership Inference Attacks against
    Machine Learning Models", arXiv 1610.05820. Threat model: black-box probs; the
    attacker trains shadow models of the target's architecture on data from the same
    distribution (here: random halves of the pool x, i.e. LiRA's setting) and knows for
    each shadow which records it was trained on.

    Args:
        oracle: `BlackBox` (mode "probs") around the target.
        shadow_probs: float [M, n, classes], shadow m's probabilities on x.
        shadow_in: bool [M, n], True where x[i] was in shadow m's training set.
        hidden: width of the attack MLP (one hidden layer, > 0), default 64.
        steps: full-batch Adam steps fitting the attack model (> 0), default 300.
        lr: its learning rate (> 0), default 1e-2.
        generator: initialises the attack MLP (CPU generator).
    Shapes: x [n, ...], y [n] -> scores [n] (attack logit on the target's answer).

    Example:
        >>> probs = ens.logits(x).softmax(-1)          # [M, n, C] from threatlab.ensemble
        >>> res = mi_shadow(BlackBox(target), x, y, shadow_probs=probs, shadow_in=mask)
    """
    _check_oracle(oracle)
    _check_xy(x, y)
    _check_shadows(shadow_probs, shadow_in, x, y)
    _positive("hidden", hidden, integer=True)
    _positive("steps", steps, integer=True)
    _positive("lr", lr)
    dev = x.device
    m, n, c = shadow_probs.shape
    feats = _attack_features(shadow_probs.to(dev), y.to(dev).expand(m, n)).reshape(m * n, -1)
    labels = shadow_in.to(dev).reshape(-1).to(torch.float32)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    d = feats.shape[1]
    w1 = (torch.randn(d, hidden, generator=g) / math.sqrt(d)).to(dev).requires_grad_(True)
    b1 = torch.zeros(hidden, device=dev, requires_grad=True)
    w2 = (torch.randn(hidden, 1, generator=g) / math.sqrt(hidden)).to(dev).requires_grad_(True)
    b2 = torch.zeros(1, device=dev, requires_grad=True)
    net = lambda f: (torch.relu(f @ w1 + b1) @ w2 + b2).squeeze(-1)  # noqa: E731
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(net(feats), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        scores = net(_attack_features(oracle(x), y)).to(torch.float64)
    return MembershipResult(scores.cpu(), _queries(oracle, n), {"attack_train_loss": float(loss.detach())})


@register("inversion", "mi_lira")
def mi_lira(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, shadow_probs: torch.Tensor,
            shadow_in: torch.Tensor, fix_variance: bool = True, generator=None) -> MembershipResult:
    """Likelihood-ratio attack (online LiRA): per-example Gaussians from reference models.

    Carlini, Chien, Nasr, Song, Terzis, Tramèr (2022), "Membership Inference Attacks
    From First Principles", arXiv 2112.03570. Threat model: black-box probs; the
    attacker trains reference (shadow) models on random halves of a pool that contains
    the candidates, so each x[i] is IN some of them and OUT of the others.

    For each example, phi = log p_y - log(1 - p_y) of the target is compared with the
    phi of the IN and OUT reference models: score = log N(phi; mu_in, s_in^2) -
    log N(phi; mu_out, s_out^2). An example with no IN (or OUT) model uses the mean of
    all examples' IN (OUT) means.

    Args:
        oracle: `BlackBox` (mode "probs") around the target.
        shadow_probs: float [M, n, classes]; shadow_in: bool [M, n] (see `mi_shadow`).
        fix_variance: one global s_in and s_out (Carlini et al. recommend it below ~64
            reference models) instead of per-example variances. Default True.
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
    ins = shadow_in.to(dev).to(torch.float64)
    outs = 1.0 - ins

    def stats(w):
        cnt = w.sum(0)
        mu = (phi_s * w).sum(0) / cnt.clamp_min(1)
        mu = torch.where(cnt > 0, mu, mu[cnt > 0].mean() if bool((cnt > 0).any()) else torch.zeros(()))
        var_i = ((phi_s - mu) ** 2 * w).sum(0) / (cnt - 1).clamp_min(1)
        if fix_variance:
            var = ((phi_s - mu) ** 2 * w).sum() / (w.sum() - 1).clamp_min(1)
            var = var.expand_as(mu)
        else:
            var = torch.where(cnt > 1, var_i, ((phi_s - mu) ** 2 * w).sum() / w.sum().clamp_min(1))
        return mu, var.clamp_min(1e-6)

    mu_in, var_in = stats(ins)
    mu_out, var_out = stats(outs)
    phi = logit_confidence(oracle(x), y)

    def logpdf(v, mu, var):
        return -0.5 * ((v - mu) ** 2 / var + var.log())

    scores = logpdf(phi, mu_in, var_in) - logpdf(phi, mu_out, var_out)
    return MembershipResult(scores.cpu(), _queries(oracle, x.shape[0]),
                            {"phi": phi.cpu(), "mu_in": mu_in.cpu(), "mu_out": mu_out.cpu()})


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
    Shapes: x [n, ...], y [n] -> x_rec [n, ...], confidence [n], queries [n].

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
    for _ in range(steps):
        u = torch.randn((n, samples, *shape), generator=generator, device=x.device, dtype=x.dtype)
        # Antithetic pairs (x + s u, x - s u) cancel the even terms of the estimate.
        probe = torch.stack([xr.unsqueeze(1) + sigma * u, xr.unsqueeze(1) - sigma * u], 2).clamp(0, 1)
        f = objective(oracle(probe.reshape(-1, *shape), ids)).view(n, samples, 2)
        diff = (f[..., 0] - f[..., 1]).view(n, samples, *[1] * len(shape))
        g = (diff * u).mean(1) / (2 * sigma)
        # Normalised steps: the same lr means the same move whatever the output scale;
        # a zero estimate (label-only far from class c) means no move.
        norm = g.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
        step = torch.where(norm > 0, g / norm.clamp_min(1e-12), torch.zeros_like(g))
        if tv_weight:
            step = step - tv_weight * _tv_grad(xr) / math.sqrt(xr[0].numel())
        xr = (xr + lr * step).clamp(0, 1)
    final = oracle(xr, torch.arange(n, device=x.device))
    conf = (final == y).to(torch.float32) if label_only else final.gather(1, y.view(-1, 1)).squeeze(1)
    return InversionResult(xr, y, conf.cpu(), _queries(oracle, n))


# ------------------------------------------------------------------ gradient leakage


def _infer_labels(head_bias_grad: torch.Tensor, batch_size: int) -> torch.Tensor:
    # iDLG: d CE / d bias_j = p_j - [j == y] summed over the batch. It is negative only
    # for labels present in the batch, so the most negative entries are the labels
    # (exact for batch 1; for larger batches, exact when the labels are distinct).
    return head_bias_grad.argsort(dim=-1)[..., :batch_size]


@register("inversion", "dlg")
def dlg(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1,
        clip: float | None = None, noise_multiplier: float = 0.0, steps: int = 100,
        init: str = "uniform", generator: torch.Generator | None = None) -> LeakageResult:
    """Deep leakage from gradients: rebuild a client's batch from its shared gradient.

    Zhu, Liu, Han (2019), "Deep Leakage from Gradients", arXiv 1906.08935; label
    recovery from the last-layer bias gradient as in iDLG (Zhao, Mopuri, Bilen 2020,
    arXiv 2001.02610). Threat model: honest-but-curious server in federated learning:
    it knows the model (white-box) and receives each client's gradient of the summed
    cross-entropy of one batch, optionally DP-SGD-style clipped per example to `clip`
    and noised with N(0, (noise_multiplier * clip)^2); the clip is public, so the
    attacker applies the same clipping to its dummy gradients.

    x is split into consecutive client batches of `batch_size`; every client's gradient
    is computed (the only thing the attacker uses), labels are inferred from it, and
    dummy inputs are optimised with L-BFGS (strong Wolfe line search, as in the paper)
    to minimise the squared L2 distance between dummy and shared gradients, all
    clients at once.

    Args:
        model: the shared model (logits); its parameters are read, never changed.
        x, y: the clients' private data [n, ...] in [0, 1] and labels [n];
            n must be a multiple of batch_size.
        batch_size: examples per client batch (> 0), default 1.
        clip: per-example L2 clipping norm (> 0) or None (no clipping), default None.
        noise_multiplier: DP noise sigma (>= 0), default 0; needs clip unless 0.
        steps: L-BFGS iterations (> 0), default 100.
        init: dummy start, "uniform" (U[0,1]) or "half" (all 0.5).
        generator: draws the DP noise and the dummy start (CPU generator).
    Shapes: x [n, ...], y [n] -> x_rec [n, ...], y_rec [n], grad_distance [n // batch_size].

    Example:
        >>> res = dlg(model, x[:4], y[:4], batch_size=1, steps=100)
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

    def shared(px, py):
        # One client's shared gradient; vmapped over clients below.
        g = gradients.per_example(model, px, py, params=params)
        return _clip_sum(g, clip)

    with torch.no_grad():
        true = torch.func.vmap(lambda a, b: shared(a, b))(xb, yb)
    if noise_multiplier > 0:
        true = {k: v + noise_multiplier * clip * torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)
                for k, v in true.items()}
    y_rec = _infer_labels(true[heads[-1]], batch_size)                    # [K, B]
    if init == "uniform":
        start = torch.rand((k_clients, batch_size, *shape), generator=generator, dtype=x.dtype).to(x.device)
    else:
        start = torch.full((k_clients, batch_size, *shape), 0.5, dtype=x.dtype, device=x.device)
    dummy = start.requires_grad_(True)
    # max_eval bounds closure calls, not iterations: the strong-Wolfe line search takes
    # several per iteration, and the default (1.25 x max_iter) ended runs after ~25 steps.
    opt = torch.optim.LBFGS([dummy], lr=1.0, max_iter=steps, max_eval=20 * steps, history_size=50,
                            line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)
    batched = torch.func.vmap(lambda a, b: shared(a, b))

    def per_client_distance():
        g = batched(dummy, y_rec)
        return sum((g[k] - true[k]).flatten(1).pow(2).sum(1) for k in g)

    def closure():
        opt.zero_grad()
        with torch.enable_grad():
            loss = per_client_distance().sum()
            loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        dist = per_client_distance()
    return LeakageResult(dummy.detach().clamp(0, 1).reshape(n, *shape), y_rec.reshape(n), dist.cpu())


def _clip_sum(g: dict[str, torch.Tensor], clip: float | None) -> dict[str, torch.Tensor]:
    return gradients.clip_and_noise(g, clip=clip, noise_multiplier=0.0)


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
