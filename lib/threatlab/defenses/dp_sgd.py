"""DP-SGD training with a Rényi-DP accountant, a defense against membership inference.

DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang 2016, "Deep Learning
with Differential Privacy", arXiv 1607.00133): every step samples a lot by Poisson
sampling (each example independently with probability q = lot_size / n), clips each
example's gradient to L2 norm `clip`, sums, adds N(0, (noise_multiplier * clip)^2) and
divides by the expected lot size. Per-example gradients come from torch.func
(`threatlab.gradients`), no Opacus.

The privacy budget is computed with the Rényi-DP accountant of the sampled Gaussian
mechanism (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled
Gaussian Mechanism", arXiv 1908.10530), for integer orders alpha = 2..256 (the exact
binomial expansion of their Section 3.3), composed over steps, and converted to
(epsilon, delta) with the conversion of Balle et al. 2020 (arXiv 2004.00010, Thm. 21)
- the same accounting Opacus' and TF-Privacy's RDP accountants do, restricted to
integer orders (so epsilon is at most slightly larger than theirs: conservative).

    >>> from threatlab.defenses import dp_sgd      # the registered defense: dp_sgd_train
    >>> hist = dp_sgd(model, x, y, epochs=10, lot_size=256, lr=0.1,
    ...               clip=1.0, noise_multiplier=1.1, delta=1e-5, seed=0)
    >>> hist["epsilon"]
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import gradients, runtime, validate
from ..errors import ConfigError
from ..runtime import progress_disabled

__all__ = ["ORDERS", "rdp_sampled_gaussian", "dp_epsilon", "dp_sgd_train"]

#: Integer Rényi orders the accountant minimises over.
ORDERS: tuple[int, ...] = tuple(range(2, 257))


def _log_add(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def _rdp_one(q: float, sigma: float, alpha: int) -> float:
    """RDP of one step of the sampled Gaussian mechanism at integer order alpha.

    log A_alpha = log sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 sigma^2)),
    RDP = log A_alpha / (alpha - 1)   (Mironov et al. 2019, Sec. 3.3).
    """
    if q == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if q == 1.0:
        return alpha / (2 * sigma**2)
    log_a = -math.inf
    for k in range(alpha + 1):
        log_coef = math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
        term = log_coef + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
        log_a = _log_add(log_a, term)
    return log_a / (alpha - 1)


def rdp_sampled_gaussian(q: float, sigma: float, steps: int,
                         orders: Sequence[int] = ORDERS) -> np.ndarray:
    """Rényi DP of `steps` compositions of the sampled Gaussian mechanism, per order.

    Args:
        q: sampling rate in [0, 1]. sigma: noise multiplier (>= 0). steps: >= 0.
        orders: integer orders >= 2.
    Returns float64 [len(orders)].
    """
    validate.fraction("q", q)
    validate.non_negative("sigma", sigma)
    validate.non_negative("steps", steps, integer=True)
    for a in orders:
        validate.number("orders", a, low=2, integer=True)
    return np.array([steps * _rdp_one(float(q), float(sigma), int(a)) for a in orders])


def dp_epsilon(q: float, sigma: float, steps: int, delta: float,
               orders: Sequence[int] = ORDERS) -> tuple[float, int]:
    """(epsilon, best order) for `steps` steps of DP-SGD at sampling rate q, noise sigma.

    Conversion (Balle et al. 2020, Thm. 21):
    eps = rdp + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1),
    minimised over the orders. Returns (inf, 0) when sigma == 0 and steps > 0.
    """
    validate.number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    rdp = rdp_sampled_gaussian(q, sigma, steps, orders)
    a = np.asarray(orders, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        eps = rdp + np.log((a - 1) / a) - (np.log(delta) + np.log(a)) / (a - 1)
    eps = np.where(np.isnan(eps), np.inf, eps)
    i = int(np.argmin(eps))
    return float(max(eps[i], 0.0)), int(orders[i])


def dp_sgd_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 1, lot_size: int = 128,
                 lr: float = 0.1, clip: float = 1.0, noise_multiplier: float = 1.0, delta: float = 1e-5,
                 momentum: float = 0.0, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train `model` in place with DP-SGD; return the history including epsilon.

    Args:
        model: maps x to logits; trained on its own device.
        x, y: training data [n, ...] in [0, 1] and labels [n].
        epochs: passes (> 0); each pass is round(n / lot_size) steps.
        lot_size: expected lot size L (> 0, <= n); sampling rate q = L / n.
        lr: SGD learning rate (> 0). momentum: SGD momentum in [0, 1) (post-processing,
            costs no privacy).
        clip: per-example L2 clipping norm C (> 0).
        noise_multiplier: sigma >= 0; the noise per coordinate is N(0, (sigma C)^2).
            sigma = 0 trains with clipping only (epsilon = inf).
        delta: target delta in (0, 1) (use < 1/n).
        seed: seeds this call's generator for Poisson sampling and noise.
    Returns {"loss": [mean over the epoch's lots], "epsilon", "delta", "order", "steps",
    "q", "seconds"}; the model is left in eval mode.

    Example:
        >>> model = models.build("mlp", in_shape=(1, 28, 28), num_classes=10, seed=0)
        >>> hist = defenses.dp_sgd(model, x_train, y_train, epochs=5, lot_size=256, noise_multiplier=1.1)
        >>> hist["epsilon"], hist["delta"]
    """
    validate.positive("epochs", epochs, integer=True)
    validate.positive("lot_size", lot_size, integer=True)
    validate.positive("lr", lr)
    validate.positive("clip", clip)
    validate.non_negative("noise_multiplier", noise_multiplier)
    validate.number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    validate.number("momentum", momentum, low=0, high=1, high_open=True)
    validate.non_negative("seed", seed, integer=True)
    if not torch.is_tensor(x) or not torch.is_tensor(y) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError("x and y must be tensors with the same number n > 0 of rows")
    validate.batch(model, x, y, device=False)  # finite, [0, 1], the model's shape/dtype/classes
    n = x.shape[0]
    if lot_size > n:
        raise ConfigError(f"lot_size={lot_size} must be <= the number of examples n={n}")
    device = next(model.parameters()).device
    q = lot_size / n
    steps_per_epoch = max(1, round(n / lot_size))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum)
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    history: dict[str, Any] = {"loss": []}
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc="DP-SGD", unit="lot",
               disable=(not progress) or progress_disabled(), leave=False)
    try:
        for _ in range(epochs):
            loss_sum = torch.zeros((), device=device)
            for _ in range(steps_per_epoch):
                # Poisson sampling: what the RDP analysis of the sampled Gaussian assumes.
                take = (runtime.rand((n,), gen) < q).nonzero().squeeze(1)
                if take.numel():
                    xb, yb = x[take].to(device), y[take].to(device)
                    g = gradients.per_example(model, xb, yb)
                    with torch.no_grad():
                        loss_sum += F.cross_entropy(model(xb), yb, reduction="sum")
                else:
                    g = {k: torch.zeros((0, *p.shape), device=device) for k, p in model.named_parameters()
                         if p.requires_grad}
                noisy = gradients.clip_and_noise(g, clip=clip, noise_multiplier=noise_multiplier,
                                                 generator=gen)
                opt.zero_grad(set_to_none=True)
                for k, p in model.named_parameters():
                    if k in names:
                        p.grad = (noisy[k] / lot_size).to(p.dtype)
                opt.step()
                bar.update(1)
            history["loss"].append(loss_sum.item() / (q * n * steps_per_epoch))
    finally:
        bar.close()
        model.eval()
    steps = epochs * steps_per_epoch
    eps, order = dp_epsilon(q, noise_multiplier, steps, delta) if noise_multiplier > 0 else (math.inf, 0)
    history.update({"epsilon": eps, "delta": delta, "order": order, "steps": steps, "q": q,
                    "seconds": time.perf_counter() - t0})
    return history
