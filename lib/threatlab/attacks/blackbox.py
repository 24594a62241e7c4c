"""Query-based black-box evasion kernels: score-based and decision-based.

Signature (differs from the white-box kernels in its first argument):

    fn(oracle, x, y, *, max_queries, <hyper-parameters>, generator=None) -> AttackResult

`oracle` is a `threatlab.oracle.BlackBox`; the kernel sees the model only through it.
Score-based kernels (Square, SimBA) need an oracle that returns scores (mode "probs",
"topk" or "rounded"); decision-based kernels (Boundary, HopSkipJump) use only the
predicted label, whatever the mode ("label" is the realistic one). Example i of the
batch is charged to oracle id i; `result.queries` is the increase of the oracle's own
counter for ids 0..n-1 during the call, so it counts every query, never an estimate.
`max_queries` is a per-example budget the kernel never exceeds (nor the oracle's own
`budget`, counting queries charged before the call).

`success` is re-evaluated at the end by the experimenter, not the attacker: from
`oracle.model(x_adv).argmax(1)` without charging a query (untargeted: != y).

Batched without a Python loop over examples. Unlike the white-box kernels, each
iteration reads one mask back to the host: the oracle charges per row, so only the
examples still running are sent, and finished examples are never charged.

`extra["trace"]` records, after every iteration, the per-example state of the attack's
current point: "queries" [T, n] int64 (oracle counts), "adversarial" [T, n] bool,
"l2" / "linf" [T, n] distances to x. `threatlab.protocols.evasion.queries_to_success` turns it
into queries-to-success at a chosen distortion.

    >>> bb = BlackBox(model, mode="probs")
    >>> res = attacks.get("square_linf")(bb, x, y, eps=0.3, max_queries=1000, generator=g)
    >>> res.queries.median(), res.success_rate
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .. import runtime, validate
from ..errors import ConfigError
from ..oracle import BlackBox
from ..pooling import fast_max_pool
from .adversarial import _check_batch, _positive
from .norms import _TINY, L2Ball, LinfBall, _per_example, _rand, flat_norm
from . import checks
from .registry import register
from .result import AttackResult

SCORE_MODES = ("probs", "topk", "rounded")

# ---------------------------------------------------------------------------- helpers


def _check_oracle(oracle, attack: str, modes=None) -> None:
    checks.oracle(oracle, modes=modes, attack=attack)


class _Ledger:
    """Per-example query accounting against the kernel's and the oracle's budgets."""

    def __init__(self, oracle: BlackBox, n: int, max_queries: int):
        self.oracle = oracle
        self.n = n
        q = oracle.queries
        self.start = np.zeros(n, np.int64)
        m = min(n, q.shape[0])
        self.start[:m] = q[:m]
        limit = np.full(n, max_queries, np.int64)
        if oracle.budget is not None:
            limit = np.minimum(limit, oracle.budget - self.start)
        self.limit = limit
        self.steps: list[torch.Tensor] = []

    def used(self) -> np.ndarray:
        q = self.oracle.queries
        out = np.zeros(self.n, np.int64)
        m = min(self.n, q.shape[0])
        out[:m] = q[:m]
        return out - self.start

    def can_afford(self, cost: int) -> torch.Tensor:
        """Bool [n] (host): examples whose budget leaves room for `cost` more queries."""
        return torch.from_numpy(self.used() + cost <= self.limit)

    def ask(self, x_rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.oracle(x_rows, ids=ids)

    def queries(self) -> torch.Tensor:
        return torch.from_numpy(self.used())


class _Trace:
    def __init__(self):
        self.q, self.adv, self.l2, self.linf = [], [], [], []

    def add(self, ledger: _Ledger, x_cur, x, adv) -> None:
        d = (x_cur - x).flatten(1)
        self.q.append(ledger.queries())
        self.adv.append(adv.detach().cpu())
        self.l2.append(d.norm(dim=1).detach().cpu())
        self.linf.append(d.abs().amax(1).detach().cpu())

    def done(self) -> dict[str, torch.Tensor]:
        return {"queries": torch.stack(self.q), "adversarial": torch.stack(self.adv),
                "l2": torch.stack(self.l2), "linf": torch.stack(self.linf)}


def _margin(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p_y - max_{j != y} log p_j (= the logit margin for full probabilities); < 0: fooled."""
    logp = scores.clamp_min(1e-30).log()
    own = logp.gather(1, y[:, None]).squeeze(1)
    other = logp.scatter(1, y[:, None], -math.inf).amax(1)
    return own - other


def _labels(out: torch.Tensor) -> torch.Tensor:
    return out if out.dim() == 1 else out.argmax(1)


@torch.no_grad()
def _final(oracle: BlackBox, x_adv, y, ledger, trace, extra=None) -> AttackResult:
    # The experimenter's check, not the attacker's: uncharged.
    # In row chunks like the oracle's own calls (batch_size=; runtime.row_slices), with the
    # oracle's exact fast pooling (same bits as the model's own).
    with fast_max_pool():
        pred = torch.cat([oracle.model(x_adv[rows]).argmax(1)
                          for rows in runtime.row_slices(x_adv.shape[0], x_adv.device)])
    success = pred != y
    out = {"trace": trace.done()}
    out.update(extra or {})
    return AttackResult(x_adv.detach(), success, ledger.queries(), out)


def _randint(high: int, n: int, generator, device) -> torch.Tensor:
    """n integers in [0, high), drawn on the generator's device, moved to `device`."""
    return runtime.randint(0, max(high, 1), (n,), generator, device=device)


def _window(r, c, s, h, w):
    """Bool [n, 1, h, w]: the s x s square with top-left corner (r, c), per example."""
    rows = torch.arange(h, device=r.device)
    cols = torch.arange(w, device=r.device)
    in_r = (rows[None] >= r[:, None]) & (rows[None] < r[:, None] + s)
    in_c = (cols[None] >= c[:, None]) & (cols[None] < c[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _common(oracle, x, y, max_queries, attack, modes=None):
    _check_oracle(oracle, attack, modes)
    _positive("max_queries", max_queries, integer=True)
    _check_batch(x, y, False, None, attack=attack)
    if x.dim() != 4:
        raise ConfigError(f"x must be images [n, C, H, W] for {attack}; got shape {tuple(x.shape)}")


def _p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """Square's fraction of pixels per window, halved at fixed points of the run
    (reference code of Andriushchenko et al., rescaled to 10000 iterations)."""
    it = int(it / n_iters * 10000)
    for k, bound in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if it <= bound:
            return p_init / 2 ** k
    return p_init / 512


# ------------------------------------------------------------------------- Square


def _square(oracle, x, y, *, eps, norm, max_queries, p_init, generator):
    n, c, h, w = x.shape
    dev = x.device
    ledger, trace = _Ledger(oracle, n, max_queries), _Trace()
    if norm == "linf":
        # Vertical stripes of +-eps: the paper's initialisation.
        signs = torch.where(_rand("uniform", x, generator, (n, c, 1, w)) < 0.5, -1.0, 1.0)
        delta = eps * signs.expand(n, c, h, w)
    else:
        delta = eps * _rand("normal", x, generator) / math.sqrt(c * h * w)
        delta = delta * _per_example(eps / flat_norm(delta).clamp_min(_TINY), x)
    x_cur = torch.clamp(x + delta, 0, 1)
    go = ledger.can_afford(1)
    margin = torch.full((n,), math.inf, device=dev, dtype=x.dtype)
    idx = go.nonzero().squeeze(1).to(dev)
    if idx.numel():
        margin[idx] = _margin(ledger.ask(x_cur[idx], idx), y[idx])
    trace.add(ledger, x_cur, x, margin < 0)
    n_iters = max_queries - 1
    for it in range(n_iters):
        active = (margin >= 0).cpu() & ledger.can_afford(1)
        if not bool(active.any()):
            break
        p = _p_schedule(p_init, it, n_iters)
        s = int(min(max(round(math.sqrt(p * h * w)), 1), h - 1))
        # Every draw is made for all n rows, running or not, so a row's squares and
        # signs do not depend on which other rows still run; the arithmetic then runs
        # on the running rows only (on a clean model most rows stop early).
        r = _randint(h - s + 1, n, generator, dev)
        col = _randint(w - s + 1, n, generator, dev)
        idx = active.nonzero().squeeze(1).to(dev)
        x_i, delta = x[idx], x_cur[idx] - x[idx]
        if norm == "linf":
            signs = _rand("uniform", x, generator, (n, c, 1, 1))[idx]
            win = _window(r[idx], col[idx], s, h, w)
            new = eps * torch.where(signs < 0.5, -1.0, 1.0)
            cand_delta = torch.where(win, new.expand(idx.numel(), c, h, w), delta)
        else:
            win = _window(r, col, s, h, w)
            cand_delta = _square_l2_update(x_cur - x, win, r, col, s, eps, generator)[idx]
        cand = torch.clamp(x_i + cand_delta, 0, 1)
        m_new = _margin(ledger.ask(cand, idx), y[idx])
        m_old = margin[idx]
        better = m_new < m_old
        # In place on the kernel's own tensors: rows outside idx are untouched.
        margin[idx] = torch.where(better, m_new, m_old)
        x_cur[idx] = torch.where(_per_example(better, cand), cand, x_cur[idx])
        trace.add(ledger, x_cur, x, margin < 0)
    return _final(oracle, x_cur, y, ledger, trace)


def _pseudo_gaussian(a: int, b: int, device, dtype) -> torch.Tensor:
    """Square-L2's a x b bump: nested rectangles weighted 1/(k+1)^2, unit L2 norm."""
    d = torch.zeros(a, b, device=device, dtype=dtype)
    xc, yc = a // 2 + 1, b // 2 + 1
    r0, c0 = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        d[max(r0, 0):min(r0 + 2 * k + 1, a), max(c0, 0):min(c0 + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r0, c0 = r0 - 1, c0 - 1
    return d / d.norm().clamp_min(_TINY)


@functools.lru_cache(maxsize=64)
def _meta_bump(s: int, device, dtype) -> torch.Tensor:
    """Two opposite-sign pseudo-Gaussian halves (the paper's "meta" perturbation).
    Cached per size: it is rebuilt by Python loops otherwise, every iteration. Callers
    never modify it in place."""
    d = torch.zeros(s, s, device=device, dtype=dtype)
    if s // 2:
        d[: s // 2] = _pseudo_gaussian(s // 2, s, device, dtype)
    d[s // 2:] = -_pseudo_gaussian(s - s // 2, s, device, dtype)
    return d / d.norm().clamp_min(_TINY)


def _square_l2_update(delta, win, r, col, s, eps, generator):
    """One Square-L2 proposal (Andriushchenko et al., Alg. 3): move the energy of a
    second window into the first one with a fresh signed bump, keep ||delta||_2 = eps."""
    n, c, h, w = delta.shape
    dev = delta.device
    r2 = _randint(h - s + 1, n, generator, dev)
    c2 = _randint(w - s + 1, n, generator, dev)
    win2 = _window(r2, c2, s, h, w)
    both = win | win2
    bump = _meta_bump(s, dev, delta.dtype)
    transpose = _rand("uniform", delta, generator, (n,)) < 0.5
    bumps = torch.where(transpose[:, None, None], bump.t()[None], bump[None])  # [n, s, s]
    rows = (torch.arange(h, device=dev)[None] - r[:, None]).clamp(0, s - 1)  # [n, h]
    cols = (torch.arange(w, device=dev)[None] - col[:, None]).clamp(0, s - 1)
    placed = bumps[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    sign = torch.where(_rand("uniform", delta, generator, (n, c, 1, 1)) < 0.5, -1.0, 1.0)
    new = torch.where(win, placed[:, None] * sign, torch.zeros_like(delta))
    # Norms per channel over the image plane, as in the reference code.
    ch = lambda t: t.flatten(2).norm(dim=2)[:, :, None, None]  # noqa: E731
    norm_img = flat_norm(delta)
    old = delta * win / ch(delta * win).clamp_min(1e-10)
    new = torch.where(win, new + old, new)
    target = torch.sqrt((eps ** 2 - norm_img ** 2).clamp_min(0)[:, None, None, None] / c
                        + ch(delta * both) ** 2)
    new = new / ch(new).clamp_min(_TINY) * target
    out = torch.where(both, torch.zeros_like(delta), delta)
    out = torch.where(win, new, out)
    # Keep exactly on the eps-sphere (the reference rescales the same way).
    return out * _per_example(eps / flat_norm(out).clamp_min(_TINY), out)


@register("adversarial", "square_linf")
def square_linf(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps: float, max_queries: int = 1000,
                p_init: float = 0.05, generator: torch.Generator | None = None) -> AttackResult:
    """Square attack, L-inf: random square updates of +-eps accepted when the margin drops.

    Andriushchenko, Croce, Flammarion, Hein (2020), "Square Attack: a query-efficient
    black-box adversarial attack via random search", arXiv 1912.00049. Threat model:
    score-based black box (probabilities), untargeted, L-inf ball of radius eps; the
    loss is the margin log p_y - max_{j != y} log p_j (equal to the logit margin).

    Args:
        oracle: BlackBox in mode "probs", "topk" or "rounded".
        eps: L-inf budget in input units, > 0. Required.
        max_queries: per-example query budget (int > 0), default 1000; one query for the
            start, one per iteration while the example is not yet fooled.
        p_init: initial fraction of pixels per square window, in (0, 1], default 0.05.
        generator: torch.Generator for every random choice.
    Shapes: x [n, C, H, W] in [0, 1], y [n] Long -> x_adv like x with
        ||x_adv - x||_inf <= eps, success [n] bool, queries [n] int64, extra["trace"].

    Example:
        >>> bb = BlackBox(model, mode="probs")
        >>> res = square_linf(bb, x, y, eps=0.3, max_queries=1000, generator=g)
        >>> res.queries[res.success].median()
    """
    _positive("eps", eps)
    validate.number("p_init", p_init, low=0, high=1, low_open=True)
    _common(oracle, x, y, max_queries, "square_linf", SCORE_MODES)
    return _square(oracle, x, y, eps=float(eps), norm="linf", max_queries=max_queries,
                   p_init=p_init, generator=generator)


@register("adversarial", "square_l2")
def square_l2(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps: float, max_queries: int = 1000,
              p_init: float = 0.1, generator: torch.Generator | None = None) -> AttackResult:
    """Square attack, L2: windows of signed pseudo-Gaussian bumps on the eps-sphere.

    Andriushchenko, Croce, Flammarion, Hein (2020), "Square Attack: a query-efficient
    black-box adversarial attack via random search", arXiv 1912.00049 (Algorithm 3).
    Threat model: score-based black box, untargeted, L2 ball of radius eps. Each proposal
    moves the perturbation's energy from a second window into the first one with a fresh
    bump, then rescales to ||delta||_2 = eps (before clipping to [0, 1], which only
    shrinks it).

    Args:
        oracle: BlackBox in mode "probs", "topk" or "rounded".
        eps: L2 budget in input units, > 0. Required.
        max_queries: per-example query budget (int > 0), default 1000.
        p_init: initial fraction of pixels per window, in (0, 1], default 0.1.
        generator: torch.Generator for every random choice.
    Shapes: as `square_linf`, with ||x_adv - x||_2 <= eps.

    Example:
        >>> res = square_l2(BlackBox(model), x, y, eps=3.0, max_queries=1000, generator=g)
        >>> (res.x_adv - x).flatten(1).norm(dim=1).max() <= 3.0
        >>> res.success_rate
    """
    _positive("eps", eps)
    validate.number("p_init", p_init, low=0, high=1, low_open=True)
    _common(oracle, x, y, max_queries, "square_l2", SCORE_MODES)
    return _square(oracle, x, y, eps=float(eps), norm="l2", max_queries=max_queries,
                   p_init=p_init, generator=generator)


# -------------------------------------------------------------------------- SimBA


@register("adversarial", "simba")
def simba(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps: float = 3.0, step: float = 0.2,
          max_queries: int = 1000, generator: torch.Generator | None = None) -> AttackResult:
    """SimBA (pixel basis): try +-step along random coordinates, keep what lowers p_y.

    Guo, Gardner, You, Wilson, Weinberger (2019), "Simple Black-box Adversarial
    Attacks", arXiv 1905.07121. Threat model: score-based black box, untargeted. Each
    example walks its own random order of coordinates (without repetition, cycling);
    a candidate costs one query for +step and, if that does not lower p_y, one for
    -step. The walk is kept in the L2 ball of radius `eps` (a candidate that leaves it
    is projected back), so distortion is comparable with Square-L2.

    Args:
        oracle: BlackBox in mode "probs", "topk" or "rounded".
        eps: L2 budget in input units, > 0, default 3.0.
        step: change per coordinate in input units, in (0, 1], default 0.2.
        max_queries: per-example query budget (int > 0), default 1000.
        generator: torch.Generator for the coordinate orders.
    Shapes: as `square_linf`, with ||x_adv - x||_2 <= eps.

    Example:
        >>> res = simba(BlackBox(model), x, y, eps=3.0, step=0.2, max_queries=1000, generator=g)
        >>> res.queries.max() <= 1000
        >>> res.success_rate
    """
    _positive("eps", eps)
    validate.number("step", step, low=0, high=1, low_open=True)
    _common(oracle, x, y, max_queries, "simba", SCORE_MODES)
    n = x.shape[0]
    d = x[0].numel()
    dev = x.device
    ledger, trace = _Ledger(oracle, n, max_queries), _Trace()
    order = torch.argsort(_rand("uniform", x, generator, (n, d)), dim=1)
    x_cur = x.clone()
    go = ledger.can_afford(1)
    p_y = torch.full((n,), math.inf, device=dev, dtype=x.dtype)
    fooled = torch.zeros(n, dtype=torch.bool, device=dev)
    idx = go.nonzero().squeeze(1).to(dev)
    if idx.numel():
        out = ledger.ask(x_cur[idx], idx)
        p_y[idx] = out.gather(1, y[idx, None]).squeeze(1)
        fooled[idx] = out.argmax(1) != y[idx]
    trace.add(ledger, x_cur, x, fooled)
    rows = torch.arange(n, device=dev)

    def project(cand):
        delta = cand - x
        scale = (eps / flat_norm(delta).clamp_min(_TINY)).clamp(max=1.0)
        return torch.clamp(x + delta * _per_example(scale, delta), 0, 1)

    for it in range(max_queries):
        active = (~fooled).cpu() & ledger.can_afford(1)
        if not bool(active.any()):
            break
        coord = order[:, it % d]
        basis = torch.zeros(n, d, device=dev, dtype=x.dtype)
        basis[rows, coord] = step
        basis = basis.reshape(x.shape)
        tried = torch.zeros(n, dtype=torch.bool, device=dev)
        for sgn in (-1.0, 1.0):
            cand = project(x_cur + sgn * basis)
            if sgn > 0:  # second try only where the first did not help and budget remains
                active = active & ~tried.cpu() & ledger.can_afford(1)
                if not bool(active.any()):
                    break
            idx = active.nonzero().squeeze(1).to(dev)
            out = ledger.ask(cand[idx], idx)
            p_new = out.gather(1, y[idx, None]).squeeze(1)
            better = torch.zeros(n, dtype=torch.bool, device=dev)
            better[idx] = p_new < p_y[idx]
            p_y = torch.where(better, torch.zeros_like(p_y).index_put((idx,), p_new), p_y)
            f_new = torch.zeros(n, dtype=torch.bool, device=dev)
            f_new[idx] = out.argmax(1) != y[idx]
            fooled = fooled | (better & f_new)
            x_cur = torch.where(_per_example(better, x), cand, x_cur)
            tried = tried | better
        trace.add(ledger, x_cur, x, fooled)
    return _final(oracle, x_cur, y, ledger, trace)


# ---------------------------------------------------------------------------- NES


def _nes(oracle, x, y, *, eps, norm, max_queries, samples, sigma, step_size, generator):
    n = x.shape[0]
    dev = x.device
    half = samples // 2
    ledger, trace = _Ledger(oracle, n, max_queries), _Trace()
    ball = LinfBall(eps) if norm == "linf" else L2Ball(eps)
    x_cur = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=dev)
    go = ledger.can_afford(1)
    idx = go.nonzero().squeeze(1).to(dev)
    if idx.numel():
        fooled[idx] = _labels(ledger.ask(x_cur[idx], idx)) != y[idx]
    trace.add(ledger, x_cur, x, fooled)
    cost = 2 * half + 1  # the antithetic pairs, then the new point
    while True:
        # One host read per iteration: the rows still running that can pay for one.
        active = (~fooled).cpu() & ledger.can_afford(cost)
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1).to(dev)
        m = idx.numel()
        xa = x_cur[idx]
        u = _rand("normal", x, generator, (m, half, *x.shape[1:]))
        probes = torch.cat([xa[:, None] + sigma * u, xa[:, None] - sigma * u], 1)
        # Probes are clipped to [0, 1], since an API takes only images; at a pixel on the
        # edge of the box the pair then differs on one side only (a smaller estimate).
        probes = probes.reshape(m * 2 * half, *x.shape[1:]).clamp(0, 1)
        ids = idx.repeat_interleave(2 * half)
        loss = _margin(ledger.ask(probes, ids), y[ids]).reshape(m, 2 * half)
        diff = (loss[:, :half] - loss[:, half:])  # [m, half]
        # Antithetic estimate of grad E[margin]: sum_i (L(x + s u_i) - L(x - s u_i)) u_i / (2 s half).
        grad = (diff.reshape(m, half, *([1] * (x.dim() - 1))) * u).sum(1) / (2 * sigma * half)
        # Descend the margin (log p_y - max other log p): PGD on the estimate.
        stepped = ball.project(ball.step(xa, -grad, step_size), x[idx])
        x_new = x_cur.clone()
        x_new[idx] = stepped
        x_cur = x_new
        out = ledger.ask(x_cur[idx], idx)
        f = torch.zeros(n, dtype=torch.bool, device=dev)
        f[idx] = _labels(out) != y[idx]
        fooled = fooled | f
        trace.add(ledger, x_cur, x, fooled)
    return _final(oracle, x_cur, y, ledger, trace)


_NES_DOC = """

    Ilyas, Engstrom, Athalye, Lin (2018), "Black-box Adversarial Attacks with Limited
    Queries and Information", arXiv 1804.08598 (NES gradient estimation + PGD). Threat
    model: score-based black box (probabilities), untargeted, {ball}. Each
    iteration estimates the gradient of the margin log p_y - max_(j != y) log p_j at
    the current point from `samples` antithetic Gaussian probes x +- sigma u_i
    (samples / 2 draws, two queries each), takes one PGD step of size `step_size`
    against it ({step}), projects to the ball, and queries the new point
    (1 query) to see whether it is fooled; fooled examples stop. An iteration costs
    samples + 1 queries and runs only where the budget covers it; the start costs 1.

    Args:
        oracle: BlackBox in mode "probs", "topk" or "rounded".
        eps: {unit} budget in input units, > 0. Required.
        max_queries: per-example query budget (int > 0), default 10000.
        samples: probes per estimate, even int >= 2, default 50 (the paper's).
        sigma: probe scale in input units, > 0, default 0.001 (the paper's).
        step_size: PGD step in input units, > 0; default eps / 10.
        generator: torch.Generator for the probes.
    Shapes: as `square_linf`, with ||x_adv - x||_{p} <= eps.
"""


def _check_nes(oracle, x, y, eps, max_queries, samples, sigma, step_size, attack):
    _positive("eps", eps)
    validate.number("samples", samples, low=2, integer=True)
    if samples % 2:
        raise ConfigError(f"samples={samples} must be even (antithetic pairs)")
    _positive("sigma", sigma)
    if step_size is not None:
        _positive("step_size", step_size)
    _common(oracle, x, y, max_queries, attack, SCORE_MODES)
    return float(eps) / 10 if step_size is None else float(step_size)


@register("adversarial", "nes_linf")
def nes_linf(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps: float, max_queries: int = 10000,
             samples: int = 50, sigma: float = 0.001, step_size: float | None = None,
             generator: torch.Generator | None = None) -> AttackResult:
    step_size = _check_nes(oracle, x, y, eps, max_queries, samples, sigma, step_size, "nes_linf")
    return _nes(oracle, x, y, eps=float(eps), norm="linf", max_queries=max_queries, samples=samples,
                sigma=float(sigma), step_size=step_size, generator=generator)


@register("adversarial", "nes_l2")
def nes_l2(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, eps: float, max_queries: int = 10000,
           samples: int = 50, sigma: float = 0.001, step_size: float | None = None,
           generator: torch.Generator | None = None) -> AttackResult:
    step_size = _check_nes(oracle, x, y, eps, max_queries, samples, sigma, step_size, "nes_l2")
    return _nes(oracle, x, y, eps=float(eps), norm="l2", max_queries=max_queries, samples=samples,
                sigma=float(sigma), step_size=step_size, generator=generator)


nes_linf.__doc__ = "NES-L-inf: PGD on an antithetic finite-difference gradient estimate." + _NES_DOC.format(
    ball="L-inf ball of radius eps", step="sign of the estimate", unit="L-inf", p="inf") + """
    Example:
        >>> res = nes_linf(BlackBox(model), x, y, eps=0.3, max_queries=10000, generator=g)
        >>> res.queries[res.success].median()
""" + nes_linf.__doc__  # the registry's note on eval mode and batch_size=
nes_l2.__doc__ = "NES-L2: PGD on an antithetic finite-difference gradient estimate." + _NES_DOC.format(
    ball="L2 ball of radius eps", step="normalized estimate", unit="L2", p="2") + """
    Example:
        >>> res = nes_l2(BlackBox(model), x, y, eps=3.0, max_queries=10000, generator=g)
        >>> res.success_rate
""" + nes_l2.__doc__


# -------------------------------------------------------------- decision-based start


def _is_adv(ledger, rows, ids, y):
    return _labels(ledger.ask(rows, ids)) != y[ids]


def _init_adversarial(ledger, x, y, *, tries, generator):
    """Uniform-noise starting points that the oracle already misclassifies (masked
    retries); examples without one after `tries` draws stay at x, not adversarial."""
    n, dev = x.shape[0], x.device
    x_adv = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    for _ in range(tries):
        want = (~found).cpu() & ledger.can_afford(1)
        if not bool(want.any()):
            break
        noise = _rand("uniform", x, generator)
        idx = want.nonzero().squeeze(1).to(dev)
        ok = torch.zeros(n, dtype=torch.bool, device=dev)
        ok[idx] = _is_adv(ledger, noise[idx], idx, y)
        x_adv = torch.where(_per_example(ok, x), noise, x_adv)
        found |= ok
    return x_adv, found


def _binary_search(ledger, x, x_adv, y, active, *, steps):
    """Bisect the segment x -> x_adv to the boundary (adversarial side kept), `steps`
    queries per active example."""
    n, dev = x.shape[0], x.device
    lo = torch.zeros(n, device=dev, dtype=x.dtype)  # blend weight on x_adv known clean
    hi = torch.ones(n, device=dev, dtype=x.dtype)   # known adversarial
    for _ in range(steps):
        act = active.cpu() & ledger.can_afford(1)
        if not bool(act.any()):
            break
        mid = (lo + hi) / 2
        cand = x + _per_example(mid, x) * (x_adv - x)
        idx = act.nonzero().squeeze(1).to(dev)
        adv = torch.zeros(n, dtype=torch.bool, device=dev)
        adv[idx] = _is_adv(ledger, cand[idx], idx, y)
        asked = torch.zeros(n, dtype=torch.bool, device=dev)
        asked[idx] = True
        hi = torch.where(asked & adv, mid, hi)
        lo = torch.where(asked & ~adv, mid, lo)
    return x + _per_example(hi, x) * (x_adv - x)


def _far(x_adv, x, eps):
    """Bool [n] (host): still farther than eps in L2 (all True when eps is None)."""
    if eps is None:
        return torch.ones(x.shape[0], dtype=torch.bool)
    return (flat_norm(x_adv - x) > eps).cpu()


# ------------------------------------------------------------------------ Boundary


class _Window:
    """Per-example ring buffers of the last `size` outcomes (Foolbox's deques).

    `record` appends for the rows in `rows`; `rate` is the mean of a full window (nan
    while filling); `clear` empties the windows of the rows whose step just changed,
    so the next decision uses outcomes of the new step size only.
    """

    def __init__(self, n: int, size: int, device):
        self.size = size
        self.buf = torch.zeros(n, size, device=device)
        self.fill = torch.zeros(n, dtype=torch.long, device=device)
        self.pos = torch.zeros(n, dtype=torch.long, device=device)

    def record(self, rows: torch.Tensor, outcome: torch.Tensor) -> None:
        self.buf[rows, self.pos[rows]] = outcome.to(self.buf.dtype)
        self.pos[rows] = (self.pos[rows] + 1) % self.size
        self.fill[rows] = torch.clamp(self.fill[rows] + 1, max=self.size)

    def full(self) -> torch.Tensor:
        return self.fill == self.size

    def rate(self) -> torch.Tensor:
        return self.buf.mean(1)

    def clear(self, rows_mask: torch.Tensor) -> None:
        self.fill = torch.where(rows_mask, torch.zeros_like(self.fill), self.fill)
        self.pos = torch.where(rows_mask, torch.zeros_like(self.pos), self.pos)
        self.buf = torch.where(rows_mask[:, None], torch.zeros_like(self.buf), self.buf)


#: Step floors of the Boundary attack (relative to the current distance). The reference
#: code declares convergence when the source step falls below 1e-7; here the steps
#: stop shrinking there instead (the example keeps walking with the smallest steps).
BOUNDARY_MIN_STEP = 1e-7
BOUNDARY_MAX_STEP = 1.0


def _boundary_proposals(x, x_adv, sph, src, generator):
    """Brendel et al.'s proposal, as in Foolbox: an orthogonal step of relative size
    `sph` on the sphere around x through x_adv, then a step of relative size `src`
    towards x (corrected for the sphere's deviation after clipping). Returns
    (spherical candidate, combined candidate), both clipped to [0, 1], and
    ||x - x_adv||_2 per row."""
    diff = x - x_adv
    dist_raw = flat_norm(diff)
    dist = dist_raw.clamp_min(_TINY)
    unit = diff / _per_example(dist, x)
    eta = _rand("normal", x, generator)
    eta = eta - unit * _per_example((eta * unit).flatten(1).sum(1), x)
    eta = eta * _per_example(sph * dist / flat_norm(eta).clamp_min(_TINY), x)
    # x_adv + eta lies sqrt(1 + sph^2) * dist from x: scale back onto the sphere.
    shrink = 1.0 / torch.sqrt(1.0 + sph ** 2)
    spherical = torch.clamp(x + _per_example(shrink, x) * (eta - diff), 0, 1)
    to_x = x - spherical
    to_x_norm = flat_norm(to_x).clamp_min(_TINY)
    length = (src * dist + (to_x_norm - dist)).clamp_min(0) / to_x_norm
    combined = torch.clamp(spherical + _per_example(length, x) * to_x, 0, 1)
    return spherical, combined, dist_raw


@register("adversarial", "boundary")
def boundary(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, max_queries: int = 5000, eps: float | None = None,
             spherical_step: float = 0.01, source_step: float = 0.01, step_adaptation: float = 1.5,
             candidates: int = 1, stats_every: int = 10, spherical_window: int = 100, step_window: int = 30,
             init_tries: int = 10, generator: torch.Generator | None = None) -> AttackResult:
    """Boundary attack: a random walk along the decision boundary towards x.

    Brendel, Rauber, Bethge (2018), "Decision-Based Adversarial Attacks: Reliable
    Attacks Against Black-Box Machine Learning Models", arXiv 1712.04248, with the
    step-size control of the reference implementation (bethgelab/foolbox
    attacks/boundary_attack.py). Threat model: decision-based black box (labels only),
    untargeted, minimises L2. Starts from uniform noise the oracle misclassifies,
    bisected towards x. Each iteration draws `candidates` proposals per example, each
    an orthogonal (spherical) step of relative size `spherical_step` on the sphere
    around x followed by a step of relative size `source_step` towards x, asks the
    oracle about all of them in one call (`candidates` queries) and keeps the first
    that is adversarial and closer (the reference's batch of directions). Every
    `stats_every`-th iteration the spherical candidates alone are also queried, and
    two per-example statistics are recorded: whether each spherical candidate was
    adversarial (window `spherical_window`) and whether each combined one was
    (window `step_window`). When a window is full: a spherical success rate
    above 0.5 multiplies both steps by `step_adaptation` (the boundary is locally
    flat), below 0.2 divides both; a combined success rate above 0.5 multiplies the
    source step alone, below 0.2 divides it; a window whose rule fired is cleared.
    Steps stay within [BOUNDARY_MIN_STEP, BOUNDARY_MAX_STEP] = [1e-7, 1] (the
    reference stops at a source step below 1e-7; here the walk continues at the floor).

    Args:
        oracle: BlackBox (any mode; only the arg-max label is used).
        max_queries: per-example budget (int > 0), default 5000.
        eps: optional L2 distance (> 0) at which an example stops (goal reached,
            Foolbox's "epsilon" criterion); default None = use the whole budget.
        spherical_step, source_step: initial relative step sizes, in (0, 1), default 0.01.
        step_adaptation: factor (> 1) of the step-size adaptation, default 1.5.
        candidates: proposals per example per iteration (int > 0), default 1. More
            spend the same queries in fewer, larger oracle calls (what makes 10^4
            queries per example affordable on a CPU); each one is charged.
        stats_every: iterations between spherical probes (int > 0), default 10.
        spherical_window, step_window: outcomes per decision (ints > 0), defaults
            100 and 30 (Foolbox's).
        init_tries: noise draws to find an adversarial start (int > 0), default 10.
        generator: torch.Generator for the noise and the proposals.
    Shapes: x [n, C, H, W] in [0, 1], y [n] Long -> x_adv like x (x itself where no
        adversarial start was found), success [n] bool, queries [n] int64,
        extra["trace"], extra["spherical_step"] / extra["source_step"] [n] (final).

    Example:
        >>> bb = BlackBox(model, mode="label")
        >>> res = boundary(bb, x, y, max_queries=5000, generator=g)
        >>> (res.x_adv - x).flatten(1).norm(dim=1)[res.success].median()
    """
    _common(oracle, x, y, max_queries, "boundary")
    if eps is not None:
        _positive("eps", eps)
    validate.number("spherical_step", spherical_step, low=0, high=1, low_open=True, high_open=True)
    validate.number("source_step", source_step, low=0, high=1, low_open=True, high_open=True)
    validate.number("step_adaptation", step_adaptation, low=1, low_open=True, high=math.inf, high_open=True)
    _positive("candidates", candidates, integer=True)
    _positive("stats_every", stats_every, integer=True)
    _positive("spherical_window", spherical_window, integer=True)
    _positive("step_window", step_window, integer=True)
    _positive("init_tries", init_tries, integer=True)
    n, dev, dt = x.shape[0], x.device, x.dtype
    ledger, trace = _Ledger(oracle, n, max_queries), _Trace()
    x_adv, found = _init_adversarial(ledger, x, y, tries=init_tries, generator=generator)
    x_adv = _binary_search(ledger, x, x_adv, y, found, steps=10)
    trace.add(ledger, x_adv, x, found)
    sph = torch.full((n,), float(spherical_step), device=dev, dtype=dt)
    src = torch.full((n,), float(source_step), device=dev, dtype=dt)
    sph_stats = _Window(n, spherical_window, dev)
    step_stats = _Window(n, step_window, dev)
    k = candidates
    it = 0
    while True:
        it += 1
        probe = it % stats_every == 0
        # One host read per iteration (the mask of examples still running).
        active = found.cpu() & _far(x_adv, x, eps) & ledger.can_afford(2 * k if probe else k)
        if not bool(active.any()):
            # Out of budget for a probe iteration may still leave room for a plain one.
            if probe:
                active = found.cpu() & _far(x_adv, x, eps) & ledger.can_afford(k)
                probe = False
            if not bool(active.any()):
                break
        idx = active.nonzero().squeeze(1).to(dev)
        m = idx.numel()
        # [m * k, ...], candidate-minor; each row gathered once per iteration.
        rep = (lambda t: t[idx]) if k == 1 else (lambda t: t[idx].repeat_interleave(k, 0))  # noqa: E731
        x_r, a_r = rep(x), x_adv[idx]
        spherical, cand, dist = _boundary_proposals(x_r, a_r if k == 1 else a_r.repeat_interleave(k, 0),
                                                    rep(sph), rep(src), generator)
        ids = idx if k == 1 else idx.repeat_interleave(k)
        ok = _is_adv(ledger, cand, ids, y).reshape(m, k)
        closer = (flat_norm(cand - x_r) < dist).reshape(m, k)
        good = ok & closer
        first = good.to(torch.int8).argmax(1)  # the first good candidate (0 if none)
        picked = cand if k == 1 else cand.reshape(m, k, *x.shape[1:])[torch.arange(m, device=dev), first]
        # In place on the kernel's own tensor: rows outside idx are untouched.
        x_adv[idx] = torch.where(_per_example(good.any(1), a_r), picked, a_r)
        if probe:
            sph_ok = _is_adv(ledger, spherical, ids, y).reshape(m, k)
            for j in range(k):  # a loop over the few candidates, not over examples
                sph_stats.record(idx, sph_ok[:, j])
                step_stats.record(idx, ok[:, j])
            one = torch.ones_like(sph)
            up = torch.full_like(sph, step_adaptation)
            down = torch.full_like(sph, 1.0 / step_adaptation)
            # Spherical success rate drives both steps ...
            full, rate = sph_stats.full(), sph_stats.rate()
            f = torch.where(full & (rate > 0.5), up, torch.where(full & (rate < 0.2), down, one))
            sph_stats.clear(f != 1)
            sph, src = sph * f, src * f
            # ... the combined (spherical + source) success rate drives the source step.
            full, rate = step_stats.full(), step_stats.rate()
            g = torch.where(full & (rate > 0.5), up, torch.where(full & (rate < 0.2), down, one))
            step_stats.clear(g != 1)
            src = src * g
            sph = sph.clamp(BOUNDARY_MIN_STEP, BOUNDARY_MAX_STEP)
            src = src.clamp(BOUNDARY_MIN_STEP, BOUNDARY_MAX_STEP)
        trace.add(ledger, x_adv, x, found)
    return _final(oracle, x_adv, y, ledger, trace, {"spherical_step": sph, "source_step": src})


# --------------------------------------------------------------------- HopSkipJump


@register("adversarial", "hopskipjump")
def hopskipjump(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, max_queries: int = 5000,
                eps: float | None = None, init_evals: int = 100, max_evals: int = 1000, gamma: float = 1.0,
                binary_steps: int = 12, init_tries: int = 10,
                generator: torch.Generator | None = None) -> AttackResult:
    """HopSkipJump (L2): boundary gradient estimation from labels, geometric steps, bisection.

    Chen, Jordan, Wainwright (2020), "HopSkipJumpAttack: A Query-Efficient
    Decision-Based Attack", arXiv 1904.02144. Threat model: decision-based black box
    (labels only), untargeted, minimises L2. Iteration t: estimate the boundary's
    normal at the current point from B_t = min(init_evals * sqrt(t), max_evals)
    labelled random perturbations (a Monte-Carlo sign estimate with the mean as
    baseline), step along it with size ||x_t - x|| / sqrt(t) halved until adversarial
    (at most 10 halvings), then bisect back to the boundary (`binary_steps` queries).
    An iteration runs for an example only if its budget covers its worst case.

    Args:
        oracle: BlackBox (any mode; only the arg-max label is used).
        max_queries: per-example budget (int > 0), default 5000.
        eps: optional L2 distance (> 0) at which an example stops; default None.
        init_evals, max_evals: gradient-estimation samples (ints > 0), defaults 100, 1000.
        gamma: sets the estimation radius delta = sqrt(d) * gamma / d^(3/2) * ||x_t - x||
            as in the paper (> 0), default 1.0.
        binary_steps: bisection queries per iteration (int > 0), default 12.
        init_tries: noise draws to find an adversarial start (int > 0), default 10.
        generator: torch.Generator for the noise and the probes.
    Shapes: as `boundary`.

    Example:
        >>> res = hopskipjump(BlackBox(model, mode="label"), x, y, max_queries=5000, generator=g)
        >>> res.queries.max() <= 5000
        >>> res.success_rate
    """
    _common(oracle, x, y, max_queries, "hopskipjump")
    if eps is not None:
        _positive("eps", eps)
    _positive("init_evals", init_evals, integer=True)
    _positive("max_evals", max_evals, integer=True)
    _positive("gamma", gamma)
    _positive("binary_steps", binary_steps, integer=True)
    _positive("init_tries", init_tries, integer=True)
    n, dev, dt = x.shape[0], x.device, x.dtype
    d = x[0].numel()
    ledger, trace = _Ledger(oracle, n, max_queries), _Trace()
    x_adv, found = _init_adversarial(ledger, x, y, tries=init_tries, generator=generator)
    x_adv = _binary_search(ledger, x, x_adv, y, found, steps=binary_steps)
    trace.add(ledger, x_adv, x, found)
    halvings = 10
    t = 0
    while True:
        t += 1
        b = int(min(init_evals * math.sqrt(t), max_evals))
        active = found.cpu() & _far(x_adv, x, eps) & ledger.can_afford(b + halvings + binary_steps)
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1).to(dev)
        m = idx.numel()
        xa, x0, y0 = x_adv[idx], x[idx], y[idx]
        dist = flat_norm(xa - x0)
        delta = math.sqrt(d) * (gamma / d ** 1.5) * dist
        u = _rand("normal", x, generator, (m, b, *x.shape[1:]))
        u = u / flat_norm(u.reshape(m * b, -1)).reshape(m, b, *([1] * (x.dim() - 1))).clamp_min(_TINY)
        probes = torch.clamp(xa[:, None] + delta.reshape(m, 1, *([1] * (x.dim() - 1))) * u, 0, 1)
        # The effective direction after clipping, as in the reference code.
        u = (probes - xa[:, None]) / delta.reshape(m, 1, *([1] * (x.dim() - 1))).clamp_min(_TINY)
        phi = _is_adv(ledger, probes.reshape(m * b, *x.shape[1:]), idx.repeat_interleave(b), y)
        phi = phi.to(dt).reshape(m, b) * 2 - 1
        mean = phi.mean(1, keepdim=True)
        # Baseline only when the probes disagree (otherwise the estimate would vanish).
        centred = torch.where(mean.abs() == 1, phi, phi - mean)
        grad = (centred.reshape(m, b, *([1] * (x.dim() - 1))) * u).mean(1)
        grad = grad / _per_example(flat_norm(grad).clamp_min(_TINY), grad)
        # Geometric step search: halve until the step lands on the adversarial side.
        xi = dist / math.sqrt(t)
        done = torch.zeros(m, dtype=torch.bool, device=dev)
        step_pt = xa.clone()
        for _ in range(halvings):
            cand = torch.clamp(xa + _per_example(xi, xa) * grad, 0, 1)
            pending = (~done).nonzero().squeeze(1)
            if pending.numel() == 0:
                break
            ok = torch.zeros(m, dtype=torch.bool, device=dev)
            ok[pending] = _is_adv(ledger, cand[pending], idx[pending], y)
            step_pt = torch.where(_per_example(ok, xa), cand, step_pt)
            done |= ok
            xi = torch.where(done, xi, xi / 2)
        full = torch.zeros(n, dtype=torch.bool, device=dev)
        full[idx] = True
        moved = x_adv.clone()
        moved[idx] = step_pt
        x_new = _binary_search(ledger, x, moved, y, full, steps=binary_steps)
        # Bisection from a point that did not move keeps the old one (it is adversarial).
        x_adv = torch.where(_per_example(full, x), x_new, x_adv)
        trace.add(ledger, x_adv, x, found)
        del y0
    return _final(oracle, x_adv, y, ledger, trace)


# ---------------------------------------------------------------------- Pointwise


def _salt_and_pepper_start(ask, ledger, x, *, steps, generator):
    """Per example, the lowest salt-and-pepper level that the oracle misclassifies.

    Level k of `steps` (k = 1..steps) sets a fraction p = k / steps of the features
    to 0 or 1 (half each, drawn afresh per level and feature); the clean x (level 0)
    is asked first, so an example the model already gets wrong starts (and stays) at
    x. Each level asks only the examples still without a start (one host read per
    level; `ask(rows, ids)` -> bool [rows]: the oracle misclassifies). Returns
    (start, found [n] bool, level [n]: p of the start, inf if none).
    """
    n, dev = x.shape[0], x.device
    start = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    level = torch.full((n,), math.inf, device=dev, dtype=x.dtype)
    for k in range(steps + 1):
        want = (~found).cpu() & ledger.can_afford(1)
        if not bool(want.any()):
            break
        p = k / steps
        if k == 0:
            noisy = x
        else:
            # Drawn for the whole batch, so a row's noise does not depend on which
            # other rows are still searching.
            u = _rand("uniform", x, generator)
            noisy = torch.where(u >= 1 - p / 2, torch.ones_like(x), torch.where(u < p / 2, torch.zeros_like(x), x))
        idx = want.nonzero().squeeze(1).to(dev)
        ok = torch.zeros(n, dtype=torch.bool, device=dev)
        ok[idx] = ask(noisy[idx], idx)
        start = torch.where(_per_example(ok, x), noisy, start)
        level = torch.where(ok, torch.full_like(level, p), level)
        found |= ok
    return start, found, level


@register("adversarial", "pointwise")
def pointwise(oracle: BlackBox, x: torch.Tensor, y: torch.Tensor, *, max_queries: int = 5000, init_steps: int = 100,
              generator: torch.Generator | None = None) -> AttackResult:
    """Pointwise attack: a salt-and-pepper adversarial, then reset features one at a
    time while the label stays wrong (minimal L0, decision-based).

    Schott, Rauber, Bethge, Brendel (2019), "Towards the first adversarially robust
    neural network model on MNIST", arXiv 1805.09190 (Appendix: the pointwise attack);
    read against the reference bethgelab/foolbox `attacks/pointwise.py` and
    `attacks/saltandpepper.py`. Threat model: decision-based black box (labels only),
    untargeted, minimises L0 (features changed, all non-batch elements counted, as
    for JSMA). Start: the lowest of `init_steps` salt-and-pepper levels that the
    oracle misclassifies (`_salt_and_pepper_start`). Then passes: each pass visits
    the example's changed features in a fresh random order and resets each to its
    clean value if the oracle still misclassifies the result (one query per try;
    one batched oracle call per position, across examples); an example stops after a
    pass that reset nothing, so no single feature of the result can be reset (the
    reference's end state; it restarts its shuffle after each success instead of
    finishing the pass). The reference's second phase, a per-feature binary search
    towards the clean value, lowers L2 but not L0 and is left out.

    Never returns a non-adversarial success: every accepted point was adversarial
    for the oracle, and `success` is re-evaluated on the model. An example without
    an adversarial start stays at x with success False and extra["l0"] = inf.

    Args:
        oracle: BlackBox (any mode; only the arg-max label is used).
        max_queries: per-example budget (int > 0), default 5000; an example that
            runs out keeps its current (adversarial) point.
        init_steps: salt-and-pepper levels tried, p = 1/init_steps .. 1 (int > 0),
            default 100.
        generator: torch.Generator for the noise and the reset orders.
    Shapes: x [n, C, H, W] in [0, 1], y [n] Long -> x_adv like x, success [n] bool,
        queries [n] int64 (forward passes of each example, from the oracle's counter);
        extra["l0"] [n] float (features changed, inf on failure), extra["noise_level"]
        [n] (salt-and-pepper fraction of the start, inf if none), extra["passes"] [n],
        extra["oracle_calls"] (batched oracle calls, int), extra["trace"].

    Example:
        >>> res = pointwise(BlackBox(model, mode="label"), x, y, generator=g)
        >>> res.extra["l0"][res.success].median()
        >>> res.queries.float().mean()
    """
    _common(oracle, x, y, max_queries, "pointwise")
    _positive("init_steps", init_steps, integer=True)
    n, dev = x.shape[0], x.device
    d = x[0].numel()
    ledger, trace = _Ledger(oracle, n, max_queries), _Trace()
    calls = [0]

    def ask(rows, ids):
        calls[0] += 1
        return _is_adv(ledger, rows, ids, y)

    x_adv, found, level = _salt_and_pepper_start(ask, ledger, x, steps=init_steps, generator=generator)
    trace.add(ledger, x_adv, x, found)
    xf = x.reshape(n, d)
    af = x_adv.reshape(n, d).clone()
    passes = torch.zeros(n, dtype=torch.long, device=dev)
    active = found.clone()
    rows = torch.arange(n, device=dev)
    while True:
        differ = af != xf
        count = differ.sum(1)
        # One host read per pass: who runs, and how many changed features each has.
        run = (active & (count > 0)).cpu() & ledger.can_afford(1)
        if not bool(run.any()):
            break
        count_host = count.cpu()
        keys = _rand("uniform", x, generator, shape=(n, d))
        order = torch.where(differ, keys, torch.full_like(keys, 2.0)).argsort(1)  # changed first
        improved = torch.zeros(n, dtype=torch.bool, device=dev)
        for j in range(int(count_host[run].max())):  # a loop over positions, not examples
            want = run & (count_host > j) & ledger.can_afford(1)
            if not bool(want.any()):
                break
            idx = want.nonzero().squeeze(1).to(dev)
            pos = order[idx, j]
            cand = af[idx].clone()
            cand[rows[: idx.numel()], pos] = xf[idx, pos]
            ok = ask(cand.reshape(-1, *x.shape[1:]), idx)
            af[idx] = torch.where(ok[:, None], cand, af[idx])
            improved[idx] |= ok
        ran = run.to(dev)
        passes += ran.long()
        # A pass that reset nothing leaves a point no single reset keeps adversarial.
        active = ran & improved
        trace.add(ledger, af.reshape(x.shape), x, found)
    x_adv = af.reshape(x.shape)
    res = _final(oracle, x_adv, y, ledger, trace, {"noise_level": level, "passes": passes})
    l0 = (x_adv != x).reshape(n, d).sum(1).to(x.dtype)
    res.extra["l0"] = torch.where(res.success, l0, torch.full_like(l0, math.inf))
    res.extra["oracle_calls"] = calls[0]
    return res
