"""White-box evasion kernels (adversarial examples), one registry name each.

Every kernel is `fn(model, x, y, *, <hyper-parameters>, targeted=False, target=None,
generator=None) -> AttackResult`. `model` maps inputs in [0, 1] of shape [n, ...] to
logits [n, classes]; the registry runs it in eval mode for the call and gives every
submodule its own training flag back afterwards (`runtime.eval_mode`, also on an
exception); kernels never touch its parameters or their `.grad`. ``batch_size=`` (every
kernel here) caps the rows per model call without changing a bit of the result. Work is batched over the first dimension with fixed
iteration counts: examples that are done are masked, not removed, so no Python loop
runs over examples and nothing is read back to the host inside an iteration loop
(DeepFool is the exception: one read per step, to drop rows that have flipped).
On a CPU a batch of more than 128 rows is attacked in even row chunks, one after the
other (attacks/chunks.py: the same result for every example, several times faster).
`success` is always re-evaluated from `model(x_adv).argmax(1)` at the end; FGSM, BIM
and PGD take `evaluate=False` to skip that forward when only the adversarials are
wanted (adversarial training; a third of FGSM's cost), and then return success=None.

    >>> from threatlab import attacks
    >>> res = attacks.get("pgd_linf")(model, x, y, eps=0.3, steps=40, generator=g)
    >>> res.success_rate
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import validate
from ..errors import ConfigError
from .norms import _TINY, L2Ball, LinfBall, _per_example, _rand, flat_norm
from . import checks
from .chunks import in_row_chunks, row_slices
from .registry import register
from .result import AttackResult

# ---------------------------------------------------------------------------- helpers


_positive = validate.positive
_non_negative = validate.non_negative


def _check_batch(x, y, targeted, target, *, attack: str, can_target: bool = True) -> None:
    """Shapes, dtypes and the [0, 1] box, checked once before any attack compute."""
    checks.images(x, unit_range=False)
    for name, t in (("y", y), ("target", target)):
        if t is not None:
            checks.labels(name, t, x.shape[0])
    validate.of_type("targeted", targeted, bool)
    if targeted and not can_target:
        raise ConfigError(f"targeted=True is not allowed for {attack}: it is an untargeted attack")
    if targeted and target is None:
        raise ConfigError("targeted=True needs target= (a Long tensor of class ids, shape [n])")
    if not targeted and target is not None:
        raise ConfigError("target= was given but targeted=False; pass targeted=True to use it")
    checks.images(x)


LOSSES = ("ce", "margin")


def _check_loss(loss, confidence) -> None:
    validate.choice("loss", loss, LOSSES)
    _non_negative("confidence", confidence)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool,
                confidence: float = 0.0) -> torch.Tensor:
    """Per-example margin loss to ascend, capped at `confidence` (Carlini & Wagner 2017,
    arXiv 1608.04644): untargeted max_{j != y} z_j - z_y, targeted z_t - max_{j != t} z_j.

    Unlike cross-entropy it stops pulling once the example is `confidence` past the
    boundary: the cap has zero gradient, so fooled examples (or, in EOT, fooled
    transformed copies) no longer steer the step. Returns [n].
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
    m = own - other if targeted else other - own
    return torch.clamp(m, max=confidence)


def attack_loss(logits, labels, targeted, loss="ce", confidence=0.0) -> torch.Tensor:
    """The summed loss an attack ascends: cross-entropy of y (descended for a target),
    or `margin_loss`. The sum keeps each example's gradient independent of the batch."""
    if loss == "margin":
        return margin_loss(logits, labels, targeted, confidence).sum()
    ce = F.cross_entropy(logits, labels, reduction="sum")
    # Targeted: descend the loss of the target class.
    return -ce if targeted else ce


def _input_grad(model, x_adv: torch.Tensor, labels: torch.Tensor, targeted: bool,
                loss: str = "ce", confidence: float = 0.0) -> torch.Tensor:
    """Gradient of the loss the attack ascends, w.r.t. the input only.

    autograd.grad (not .backward) so parameter .grad fields stay untouched; the sum
    reduction keeps each example's gradient independent of the batch size.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():  # callers often wrap evaluation in no_grad
        value = attack_loss(model(x_adv), labels, targeted, loss, confidence)
        (grad,) = torch.autograd.grad(value, x_adv)
    return grad


@torch.no_grad()
def _success(model, x_adv, y, target, targeted, evaluate=True) -> torch.Tensor | None:
    if not evaluate:
        return None
    pred = torch.cat([model(x_adv[rows]).argmax(1) for rows in row_slices(x_adv)])
    return pred == target if targeted else pred != y


def _step_size(step_size, eps, steps):
    # Madry et al.'s rule of thumb: 2.5 * eps / steps lets a walk cross the ball and back.
    if step_size is None:
        return 2.5 * eps / steps
    return _positive("step_size", step_size)


def _pgd(model, x, y, ball, *, steps, step_size, random_start, targeted, target, generator,
         evaluate, loss="ce", confidence=0.0):
    labels = target if targeted else y
    # The start is drawn for the whole batch, so it does not depend on the chunking.
    start = ball.random_init(x, generator) if random_start else x.clone()
    chunks = []
    for rows in row_slices(x):  # one chunk off the CPU; see attacks/chunks.py
        x0, x_adv, lab = x[rows], start[rows], labels[rows]
        for _ in range(steps):
            grad = _input_grad(model, x_adv, lab, targeted, loss, confidence)
            x_adv = ball.project(ball.step(x_adv, grad, step_size), x0).detach()
        chunks.append(x_adv)
    x_adv = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    return AttackResult(x_adv, _success(model, x_adv, y, target, targeted, evaluate))


# ---------------------------------------------------------------------- gradient sign


@register("adversarial", "fgsm", channels_last=True)
@in_row_chunks
def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, targeted: bool = False,
         target: torch.Tensor | None = None, generator: torch.Generator | None = None,
         evaluate: bool = True) -> AttackResult:
    """Fast gradient sign method: one L-inf step of size eps along sign(grad loss).

    Goodfellow, Shlens, Szegedy (2015), "Explaining and Harnessing Adversarial
    Examples", arXiv 1412.6572. Threat model: white-box, L-inf ball of radius eps.

    Args:
        eps: L-inf budget in input units ([0, 1] scale), > 0. Required.
        targeted, target: if True, step down the cross-entropy of `target` ([n] Long).
        generator: unused (deterministic); accepted for the common signature.
        evaluate: re-evaluate success from model(x_adv) (one forward), default True;
            False returns success=None.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x, success [n] bool.

    Example:
        >>> res = fgsm(model, x, y, eps=0.1)
        >>> (res.x_adv - x).abs().amax() <= 0.1
        >>> res.success_rate
    """
    _positive("eps", eps)
    validate.of_type("evaluate", evaluate, bool)
    _check_batch(x, y, targeted, target, attack="fgsm")
    ball = LinfBall(eps)
    grad = _input_grad(model, x, target if targeted else y, targeted)
    x_adv = ball.project(ball.step(x, grad, eps), x).detach()
    return AttackResult(x_adv, _success(model, x_adv, y, target, targeted, evaluate))


@register("adversarial", "bim", channels_last=True)
def bim(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 40,
        step_size: float | None = None, targeted: bool = False, target: torch.Tensor | None = None,
        generator: torch.Generator | None = None, evaluate: bool = True) -> AttackResult:
    """Basic iterative method: FGSM repeated with small steps, projected to the L-inf ball.

    Kurakin, Goodfellow, Bengio (2016), "Adversarial Examples in the Physical World",
    arXiv 1607.02533. Threat model: white-box, L-inf ball of radius eps. Identical to
    `pgd_linf` with `random_start=False`.

    Args:
        eps: L-inf budget in input units, > 0. Required.
        steps: number of gradient steps (int > 0), default 40.
        step_size: L-inf step per iteration in input units; default 2.5 * eps / steps.
        targeted, target: if True, descend the cross-entropy of `target` ([n] Long).
        generator: unused (deterministic); accepted for the common signature.
        evaluate: re-evaluate success from model(x_adv) (one forward), default True;
            False returns success=None.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x, success [n] bool.

    Example:
        >>> res = bim(model, x, y, eps=0.1, steps=20)
        >>> (res.x_adv - x).abs().amax() <= 0.1
        >>> res.success_rate
    """
    _positive("eps", eps)
    _positive("steps", steps, integer=True)
    step_size = _step_size(step_size, eps, steps)
    validate.of_type("evaluate", evaluate, bool)
    _check_batch(x, y, targeted, target, attack="bim")
    return _pgd(model, x, y, LinfBall(eps), steps=steps, step_size=step_size,
                random_start=False, targeted=targeted, target=target, generator=generator,
                evaluate=evaluate)


# ------------------------------------------------------------------------------- PGD


@register("adversarial", "pgd_linf", channels_last=True)
def pgd_linf(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 40,
             step_size: float | None = None, random_start: bool = True, loss: str = "ce", confidence: float = 0.0,
             targeted: bool = False, target: torch.Tensor | None = None, generator: torch.Generator | None = None,
             evaluate: bool = True) -> AttackResult:
    """Projected gradient descent in the L-inf ball, from a random start.

    Madry, Makelov, Schmidt, Tsipras, Vladu (2018), "Towards Deep Learning Models
    Resistant to Adversarial Attacks", arXiv 1706.06083. Threat model: white-box,
    L-inf ball of radius eps intersected with [0, 1].

    Args:
        eps: L-inf budget in input units, > 0. Required.
        steps: number of sign-gradient steps (int > 0), default 40.
        step_size: L-inf step per iteration in input units; default 2.5 * eps / steps.
        random_start: start uniformly in the ball (drawn from `generator`), default True.
        loss: "ce" (cross-entropy, Madry et al.) or "margin" (`margin_loss`: the logit
            margin capped at `confidence`, so fooled examples stop moving); default "ce".
        confidence: the margin loss's cap kappa (>= 0, logit units), default 0.
        targeted, target: if True, descend the cross-entropy of `target` ([n] Long)
            (or ascend its margin).
        generator: torch.Generator for the random start (any device); None = global RNG.
        evaluate: re-evaluate success from model(x_adv) (one forward), default True;
            False returns success=None.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x, success [n] bool.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> res = pgd_linf(model, x, y, eps=0.3, steps=40, generator=g)
        >>> res.success_rate
    """
    _positive("eps", eps)
    _positive("steps", steps, integer=True)
    step_size = _step_size(step_size, eps, steps)
    validate.of_type("random_start", random_start, bool)
    validate.of_type("evaluate", evaluate, bool)
    _check_loss(loss, confidence)
    _check_batch(x, y, targeted, target, attack="pgd_linf")
    return _pgd(model, x, y, LinfBall(eps), steps=steps, step_size=step_size,
                random_start=random_start, targeted=targeted, target=target,
                generator=generator, evaluate=evaluate, loss=loss, confidence=confidence)


@register("adversarial", "pgd_l2", channels_last=True)
def pgd_l2(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 40,
           step_size: float | None = None, random_start: bool = True, loss: str = "ce", confidence: float = 0.0,
           targeted: bool = False, target: torch.Tensor | None = None, generator: torch.Generator | None = None,
           evaluate: bool = True) -> AttackResult:
    """Projected gradient descent in the L2 ball (normalized-gradient steps).

    Madry, Makelov, Schmidt, Tsipras, Vladu (2018), "Towards Deep Learning Models
    Resistant to Adversarial Attacks", arXiv 1706.06083. Threat model: white-box,
    per-example L2 ball of radius eps (over all non-batch dims) intersected with [0, 1].

    Args:
        eps: L2 budget in input units, > 0. Required.
        steps: number of steps (int > 0), default 40.
        step_size: L2 length of each step in input units; default 2.5 * eps / steps.
        random_start: start uniformly in the ball (drawn from `generator`), default True.
        loss: "ce" (cross-entropy, Madry et al.) or "margin" (`margin_loss`: the logit
            margin capped at `confidence`, so fooled examples stop moving); default "ce".
        confidence: the margin loss's cap kappa (>= 0, logit units), default 0.
        targeted, target: if True, descend the cross-entropy of `target` ([n] Long)
            (or ascend its margin).
        generator: torch.Generator for the random start (any device); None = global RNG.
        evaluate: re-evaluate success from model(x_adv) (one forward), default True;
            False returns success=None.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x, success [n] bool.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> res = pgd_l2(model, x, y, eps=2.0, steps=40, generator=g)
        >>> res.success_rate
    """
    _positive("eps", eps)
    _positive("steps", steps, integer=True)
    step_size = _step_size(step_size, eps, steps)
    validate.of_type("random_start", random_start, bool)
    validate.of_type("evaluate", evaluate, bool)
    _check_loss(loss, confidence)
    _check_batch(x, y, targeted, target, attack="pgd_l2")
    return _pgd(model, x, y, L2Ball(eps), steps=steps, step_size=step_size,
                random_start=random_start, targeted=targeted, target=target,
                generator=generator, evaluate=evaluate, loss=loss, confidence=confidence)


# ------------------------------------------------------------------- Carlini-Wagner


@register("adversarial", "cw_l2", channels_last=True)
@in_row_chunks
def cw_l2(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 100, lr: float = 0.01,
          confidence: float = 0.0, binary_search_steps: int = 9, initial_const: float = 1e-3, targeted: bool = False,
          target: torch.Tensor | None = None, generator: torch.Generator | None = None,
          abort_early: bool = False) -> AttackResult:
    """Carlini-Wagner L2: minimize ||delta||^2 + c * margin loss, c found by binary search.

    Carlini, Wagner (2017), "Towards Evaluating the Robustness of Neural Networks",
    arXiv 1608.04644. Threat model: white-box, minimal L2 perturbation (no budget).
    Optimizes in tanh space (x' = (tanh(w) + 1) / 2, so the box needs no clipping) with
    Adam; each example has its own constant c and keeps its smallest-L2 success.
    As in the reference code, features at exactly 0 or 1 start deep in tanh saturation
    (atanh(1 - 1e-6) ~ 7.3) and move only after many steps: on data with a blank
    background (MNIST, digits) short runs leave them almost fixed, so give more steps.

    Args:
        steps: Adam iterations per binary-search step (int > 0), default 100.
        lr: Adam learning rate in tanh-space units, > 0, default 0.01.
        confidence: kappa, the logit margin a success must have (>= 0), default 0.
        binary_search_steps: outer steps over c (int > 0), default 9.
        initial_const: starting c (> 0), default 1e-3; multiplied by 10 while an
            example has never succeeded, bisected once it has.
        targeted, target: if True, make `target` ([n] Long) win by `confidence`.
        generator: unused (deterministic); accepted for the common signature.
        abort_early: the reference code's ABORT_EARLY (on there by default): every
            steps // 10 Adam steps, an example whose loss has not fallen below 0.9999 x
            its loss at the previous check stops for the rest of that binary-search
            step, and the step ends once every example has stopped (one host read per
            check). The reference checks the summed loss of its batch; here each
            example is checked on its own, so a result never depends on the rows
            beside it. Default False: exactly `steps` steps per round.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x (x itself where no
        success was found), success [n] bool; extra["l2"] [n] (inf on failure),
        extra["const"] [n] (c of the kept adversarial, nan on failure),
        extra["diverged"] [n] int64: binary-search steps in which the example's loss
        or gradient went non-finite (e.g. a model that overflows far from the data).
        From that step on the example stops moving and nothing it reaches is kept; the
        other rows, whose losses are separate terms of the sum, run on unchanged, and
        the next binary-search step starts it afresh from x (a diverged step counts as
        a failure for the search on c). Its best finite result so far is kept.
        extra["steps"] [n] int64: Adam steps each example took over all rounds
        (binary_search_steps x steps unless abort_early stopped it sooner).

    Example:
        >>> res = cw_l2(model, x, y, steps=200, binary_search_steps=6)
        >>> res.extra["l2"][res.success].median()
        >>> res.success_rate
    """
    _positive("steps", steps, integer=True)
    _positive("lr", lr)
    _non_negative("confidence", confidence)
    _positive("binary_search_steps", binary_search_steps, integer=True)
    _positive("initial_const", initial_const)
    validate.of_type("abort_early", abort_early, bool)
    _check_batch(x, y, targeted, target, attack="cw_l2")

    n, dev, dt = x.shape[0], x.device, x.dtype
    labels = target if targeted else y
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    onehot = F.one_hot(labels, num_classes).bool()
    # atanh(+-1) is infinite: pull the start a hair inside the box.
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))

    const = torch.full((n,), float(initial_const), device=dev, dtype=dt)
    lower = torch.zeros(n, device=dev, dtype=dt)
    upper = torch.full((n,), 1e10, device=dev, dtype=dt)
    best_l2 = torch.full((n,), math.inf, device=dev, dtype=dt)
    best_const = torch.full((n,), math.nan, device=dev, dtype=dt)
    best_adv = x.clone()
    diverged = torch.zeros(n, dtype=torch.int64, device=dev)
    steps_taken = torch.zeros(n, dtype=torch.int64, device=dev)
    check_every = max(1, steps // 10)  # the reference's MAX_ITERATIONS // 10

    for _ in range(binary_search_steps):
        # Fresh start per constant, as in the reference code: a run with a too-small c
        # must not bias the next one.
        w = w0.clone()
        adam_m = torch.zeros_like(w)
        adam_v = torch.zeros_like(w)
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        alive = torch.ones(n, dtype=torch.bool, device=dev)  # finite so far in this binary-search step
        moving = torch.ones(n, dtype=torch.bool, device=dev)  # not stopped by abort_early
        prev = torch.full((n,), 1e6, device=dev, dtype=dt)  # the reference's starting "prev"
        for t in range(1, steps + 1):
            w = w.detach().requires_grad_(True)
            with torch.enable_grad():
                x_new = (torch.tanh(w) + 1) / 2
                logits = model(x_new)
                l2sq = (x_new - x).reshape(n, -1).pow(2).sum(1)
                real = logits.gather(1, labels[:, None]).squeeze(1)  # no mask indexing: no sync
                other = logits.masked_fill(onehot, -math.inf).amax(1)
                margin = other - real if targeted else real - other  # < 0 means success
                hinge = torch.clamp(margin + confidence, min=0)
                row_loss = l2sq + const * hinge
                loss = row_loss.sum()  # sum: per-example gradients stay separate
                (grad,) = torch.autograd.grad(loss, w)
            # Bookkeeping on the point just evaluated, before Adam moves it.
            with torch.no_grad():
                # A non-finite loss or gradient freezes that row for the rest of this
                # binary-search step (on the device: no host read); the mask keeps its
                # NaNs out of the other rows' bookkeeping and out of its own Adam state.
                alive &= torch.isfinite(row_loss.detach()) & torch.isfinite(grad).flatten(1).all(1)
                if abort_early and (t - 1) % check_every == 0:
                    # Checked on the loss at the point just evaluated, as the reference does.
                    moving &= ~(row_loss.detach() > prev * 0.9999)
                    prev = torch.where(moving, row_loss.detach(), prev)
                    if not bool((moving & alive).any()):  # the one host read of a check
                        break
                margin = margin.detach()
                # A row abort_early stopped records nothing more (the reference breaks
                # before its bookkeeping), so a frozen point is never taken for a new one.
                succ = (margin < 0) & (margin + confidence <= 0) & alive & moving
                l2 = l2sq.detach().sqrt()
                better = succ & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best_const = torch.where(better, const, best_const)
                best_adv = torch.where(_per_example(better, x), x_new.detach(), best_adv)
                found |= succ
                # Adam (Kingma & Ba defaults), written out: elementwise, so each example
                # is optimized independently, and torch.optim's import cost is avoided.
                steps_taken += (alive & moving).long()
                live = _per_example(alive & moving, w)
                grad = torch.where(live, grad, 0.0)
                # The same ops as before the mask, so live rows keep their exact bits.
                adam_m = torch.where(live, adam_m.mul(0.9).add_(grad, alpha=0.1), adam_m)
                adam_v = torch.where(live, adam_v.mul(0.999).addcmul_(grad, grad, value=0.001), adam_v)
                m_hat = adam_m / (1 - 0.9 ** t)
                v_hat = adam_v / (1 - 0.999 ** t)
                w = torch.where(live, w.detach() - lr * m_hat / (v_hat.sqrt() + 1e-8), w.detach())
        diverged += (~alive).long()
        # Per-example binary search on c: shrink after a success, grow (x10 until an
        # upper bound exists, then bisect) after a failure.
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)

    x_adv = best_adv.detach()
    return AttackResult(x_adv, _success(model, x_adv, y, target, targeted),
                        extra={"l2": best_l2, "const": best_const, "diverged": diverged, "steps": steps_taken})


# ------------------------------------------------------------------------- DeepFool


@register("adversarial", "deepfool", channels_last=True)
@in_row_chunks
def deepfool(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 50, overshoot: float = 0.02,
             num_classes: int | None = None, targeted: bool = False, target: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> AttackResult:
    """DeepFool: walk to the nearest linearized class boundary, repeat until it flips.

    Moosavi-Dezfooli, Fawzi, Frossard (2016), "DeepFool: a simple and accurate method
    to fool deep neural networks", arXiv 1511.04599. Threat model: white-box, minimal L2
    perturbation (no budget); untargeted only. Exact in one step for an affine model.

    Args:
        steps: maximum number of linearization steps (int > 0), default 50.
        overshoot: the summed step is scaled by (1 + overshoot) to cross the
            boundary (>= 0), default 0.02.
        num_classes: how many classes to consider, counting y: y plus the
            num_classes - 1 highest-scoring other classes at x (int in [2, classes]);
            default None = all classes. One backward pass per candidate per step.
        targeted, target: must be False / None (ConfigError otherwise).
        generator: unused (deterministic); accepted for the common signature.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x, success [n] bool.
        Examples already misclassified (or flipped) stop moving and leave the batch
        (unlike the other kernels, which mask): each step costs forward and backward
        passes for the rows still classified as y only, found with one host read per
        step; the loop ends once every example is misclassified. Each step is
        r = (|f| / ||w|| + 1e-4) * w / ||w|| as in the reference code (LTS4/DeepFool):
        the 1e-4 is an L2 length in input units added to the step, not to |f|.
        A batch that shrinks to 1-3 rows is rounded differently by the CPU matrix
        kernel, so row chunking changes results only at float-rounding level.

    Example:
        >>> res = deepfool(model, x, y, steps=50)
        >>> (res.x_adv - x).flatten(1).norm(dim=1)
        >>> res.success_rate
    """
    _positive("steps", steps, integer=True)
    _non_negative("overshoot", overshoot)
    if num_classes is not None:
        validate.number("num_classes", num_classes, low=2, integer=True)
    _check_batch(x, y, targeted, target, attack="deepfool", can_target=False)

    with torch.no_grad():
        logits0 = model(x)
    k_all = logits0.shape[1]
    if num_classes is not None:
        validate.number("num_classes", num_classes, low=2, high=k_all, integer=True)
    m = (k_all if num_classes is None else num_classes) - 1
    # Candidate classes are fixed from the clean logits, as in the reference code.
    candidates = logits0.scatter(1, y[:, None], -math.inf).topk(m, dim=1).indices  # [n, m]

    n = x.shape[0]
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    # Rows still classified as y, as host indices. Flipped rows leave the batch: the
    # (num_classes - 1) backward passes of a step are paid only by rows still moving.
    idx = torch.arange(n, device=x.device)
    for _ in range(steps):
        xa = x_adv[idx].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
        # One host read per step (the documented exception to "no sync in the loop"):
        # which rows still have label y. It is tiny next to the backward passes, and
        # it both ends the loop once every row has flipped and compacts the batch.
        keep = (logits.detach().argmax(1) == y[idx]).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        if keep.numel() < idx.numel():
            # Re-run the forward on the rows that stay: a backward through the old
            # graph would still cost the flipped rows' share, num_classes - 1 times.
            idx = idx[keep]
            xa = x_adv[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xa)
        ya, cand, m_rows = y[idx], candidates[idx], idx.numel()
        with torch.enable_grad():
            z_y = logits.gather(1, ya[:, None]).squeeze(1)
            best_dist = torch.full((m_rows,), math.inf, device=x.device, dtype=x.dtype)
            best_w = torch.zeros_like(xa)
            # Loop over candidate classes (<= classes - 1), never over examples: the
            # gradient of a batch sum is each example's own gradient.
            for k in range(m):
                f_k = logits.gather(1, cand[:, k:k + 1]).squeeze(1) - z_y
                (w_k,) = torch.autograd.grad(f_k.sum(), xa, retain_graph=k < m - 1)
                dist = f_k.detach().abs() / flat_norm(w_k).clamp_min(_TINY)
                closer = dist < best_dist
                best_dist = torch.where(closer, dist, best_dist)
                best_w = torch.where(_per_example(closer, xa), w_k, best_w)
        # As in the reference code (LTS4/DeepFool), 1e-4 is added to the step's length
        # |f| / ||w||, not to |f|: r = (|f| / ||w|| + 1e-4) * w / ||w||, so the step
        # lands 1e-4 (input units, L2) past the linearized boundary at any logit scale.
        w_norm = flat_norm(best_w).clamp_min(_TINY)
        r = best_w * _per_example((best_dist + 1e-4) / w_norm, xa)
        r_tot[idx] = r_tot[idx] + r
        x_adv[idx] = torch.clamp(x[idx] + (1 + overshoot) * r_tot[idx], 0.0, 1.0)

    x_adv = x_adv.detach()
    return AttackResult(x_adv, _success(model, x_adv, y, None, False))


# ----------------------------------------------------------------------------- JSMA


@register("adversarial", "jsma", channels_last=True)
@in_row_chunks
def jsma(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, theta: float = 1.0, gamma: float = 0.1,
         targeted: bool = False, target: torch.Tensor | None = None,
         generator: torch.Generator | None = None) -> AttackResult:
    """Jacobian-based saliency map attack: change the most salient pixel pairs (L0).

    Papernot, McDaniel, Jha, Fredrikson, Celik, Swami (2016), "The Limitations of Deep
    Learning in Adversarial Settings", arXiv 1511.07528. Threat model: white-box, L0
    (at most floor(gamma * d) features changed, d = features per example, i.e. all
    non-batch elements; each feature at most once). Saliency from the logits' Jacobian
    (the "JSMA-Z" variant, as in cleverhans). The paper's attack is targeted; with
    targeted=False the target is, per example, the highest-scoring class other than y
    at x (the second most likely class when x is classified correctly), and the
    attack stops as soon as the prediction leaves y.

    Args:
        theta: change applied to each chosen feature, in input units, in [-1, 1] and
            nonzero; default 1.0 (chosen features go to the maximum, 1). Negative
            theta decreases features (the paper's "decreasing" variant).
        gamma: maximum fraction of features changed, in (0, 1], default 0.1.
        targeted, target: if True, drive the prediction to `target` ([n] Long).
        generator: unused (deterministic); accepted for the common signature.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x, success [n] bool;
        extra["target"] [n], extra["changed"] [n] (features changed), extra["hit_cap"]
        [n] bool (changed the most features the cap allows, 2 * (floor(gamma * d) // 2):
        the budget, not the attack, decided its L0). Memory is
        O(n * d^2) for the pair search (d = 784: about 2.5 MB per example per buffer).

    Example:
        >>> res = jsma(model, x, y, gamma=0.1, targeted=True, target=t)
        >>> res.extra["changed"].max() <= int(0.1 * x[0].numel())
        >>> res.success_rate
    """
    validate.number("theta", theta, low=-1, high=1)
    if theta == 0:
        raise ConfigError("theta=0 is not allowed; use a nonzero value in [-1, 1]")
    validate.number("gamma", gamma, low=0, high=1, low_open=True)
    _check_batch(x, y, targeted, target, attack="jsma")

    n, d = x.shape[0], x[0].numel()
    # Each iteration changes two features, so this many iterations keep the count of
    # changed features at or below floor(gamma * d).
    iterations = math.floor(gamma * d) // 2
    with torch.no_grad():
        logits0 = model(x)
    tgt = target if targeted else logits0.scatter(1, y[:, None], -math.inf).argmax(1)

    increase = theta > 0
    x_flat = x.reshape(n, d).clone()
    # Features already at the bound cannot move; changed ones leave the domain too.
    domain = x_flat < 1 if increase else x_flat > 0
    off_diag = ~torch.eye(d, dtype=torch.bool, device=x.device)
    changed = torch.zeros(n, d, dtype=torch.bool, device=x.device)
    for _ in range(iterations):
        xa = x_flat.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa.reshape(x.shape))
            # Two backward passes instead of the full Jacobian: the paper's beta is
            # the sum over non-target classes = grad(sum of all logits) - alpha.
            (alpha,) = torch.autograd.grad(logits.gather(1, tgt[:, None]).sum(), xa,
                                           retain_graph=True)
            (total,) = torch.autograd.grad(logits.sum(), xa)
        pred = logits.detach().argmax(1)
        active = pred != tgt if targeted else pred == y
        beta = total - alpha
        a = alpha[:, :, None] + alpha[:, None, :]  # [n, d, d] pair sums
        b = beta[:, :, None] + beta[:, None, :]
        if increase:
            ok = (a > 0) & (b < 0)
        else:
            ok = (a < 0) & (b > 0)
        ok &= domain[:, :, None] & domain[:, None, :] & off_diag
        score = torch.where(ok, -(a * b), torch.zeros((), device=x.device, dtype=x.dtype))
        del a, b, ok
        best, idx = score.reshape(n, d * d).max(1)
        # No admissible pair (score 0) -> that example stops instead of changing junk.
        go = active & (best > 0)
        pick = torch.zeros(n, d, dtype=torch.bool, device=x.device)
        pick.scatter_(1, (idx // d)[:, None], True).scatter_(1, (idx % d)[:, None], True)
        pick &= go[:, None]
        x_flat = torch.where(pick, torch.clamp(x_flat + theta, 0.0, 1.0), x_flat)
        domain &= ~pick
        changed |= pick

    x_adv = x_flat.reshape(x.shape).detach()
    n_changed = changed.sum(1)
    # The cap is floor(gamma * d) rounded down to pairs: an example that changed that
    # many features was stopped by the budget (whether or not the last pair fooled it).
    return AttackResult(x_adv, _success(model, x_adv, y, target, targeted),
                        extra={"target": tgt, "changed": n_changed,
                               "hit_cap": n_changed >= 2 * iterations})


# ------------------------------------------------------------------ minimal L-inf


def _linf(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).abs().amax(1)


@register("adversarial", "min_linf", channels_last=True)
@in_row_chunks
def min_linf(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps_max: float = 1.0,
             bisection_steps: int = 12, steps: int = 20, targeted: bool = False, target: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> AttackResult:
    """Minimal L-inf perturbation: PGD with a per-example bisection over its budget eps.

    Built on Madry et al. (2018), "Towards Deep Learning Models Resistant to Adversarial
    Attacks", arXiv 1706.06083: PGD-L-inf with the margin loss of Carlini & Wagner
    (2017, arXiv 1608.04644) at kappa = 0, run at eps_max, then `bisection_steps` times
    at the midpoint between the largest budget known to fail and the smallest L-inf
    norm of an adversarial found so far (any PGD iterate the model misclassifies
    counts, so a success at budget b usually tightens the bound below b). Threat model:
    white-box, minimal L-inf perturbation within [0, 1]. Deterministic: every run starts
    at x. On a two-class affine model a sign step is optimal, so this converges to the
    closed-form distance to within eps_max / 2^bisection_steps.

    Args:
        eps_max: largest budget tried, in input units, in (0, 1], default 1.0.
        bisection_steps: halvings of the bracket after the first run (int >= 0),
            default 12 (resolution eps_max / 4096).
        steps: PGD steps per run (int > 0), default 20; step size 2.5 * eps / steps.
        targeted, target: if True, make `target` ([n] Long) the prediction.
        generator: unused (deterministic); accepted for the common signature.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x (x itself where no
        adversarial was found within eps_max), success [n] bool; extra["linf"] [n]
        (L-inf norm of the kept adversarial, inf on failure). Cost: (bisection_steps + 1)
        * (steps + 1) forward-backward passes.

    Example:
        >>> res = min_linf(model, x, y, bisection_steps=10, steps=20)
        >>> res.extra["linf"][res.success].median()
    """
    validate.number("eps_max", eps_max, low=0, high=1, low_open=True)
    validate.non_negative("bisection_steps", bisection_steps, integer=True)
    _positive("steps", steps, integer=True)
    _check_batch(x, y, targeted, target, attack="min_linf")
    n, dev, dt = x.shape[0], x.device, x.dtype
    labels = target if targeted else y
    lo = torch.zeros(n, device=dev, dtype=dt)            # largest budget known to fail
    best = torch.full((n,), math.inf, device=dev, dtype=dt)
    best_adv = x.clone()

    def keep(x_adv, logits):
        nonlocal best, best_adv
        pred = logits.detach().argmax(1)
        hit = pred == target if targeted else pred != y
        norm = _linf(x_adv - x)
        better = hit & (norm < best)
        best = torch.where(better, norm, best)
        best_adv = torch.where(_per_example(better, x), x_adv, best_adv)

    for b in range(bisection_steps + 1):
        if b == 0:
            eps = torch.full((n,), float(eps_max), device=dev, dtype=dt)
        else:
            # Examples never fooled at eps_max keep trying eps_max (they stay failures).
            eps = torch.where(torch.isfinite(best), (lo + best) / 2, torch.full_like(best, eps_max))
        e = _per_example(eps, x)
        step = e * (2.5 / steps)
        x_adv = x.clone()
        found = best.clone()
        for t in range(steps + 1):
            xa = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xa)
                value = margin_loss(logits, labels, targeted, 0.0).sum()
                grad = torch.autograd.grad(value, xa)[0] if t < steps else None
            keep(x_adv.detach(), logits)
            if grad is None:
                break
            x_adv = torch.clamp(x + torch.clamp(x_adv + step * grad.sign() - x, -e, e), 0.0, 1.0).detach()
        # A run that improved nothing failed at its budget: raise the lower bound.
        failed = ~(best < found)
        lo = torch.where(failed & torch.isfinite(best), torch.maximum(lo, eps), lo)
    x_adv = best_adv.detach()
    return AttackResult(x_adv, _success(model, x_adv, y, target, targeted), extra={"linf": best})


# -------------------------------------------------------------------------- APGD

APGD_NORMS = ("linf", "l2")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits ratio (Croce & Hein 2020, arXiv 2003.01690), per example:
    -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), pi = logits sorted descending.
    Invariant to shifting and rescaling the logits; needs >= 3 classes."""
    z_sorted = logits.sort(1, descending=True).values
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    return -(own - other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations (1-based, after that many steps) at which APGD checks its step size.

    The paper's p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
    counted in whole steps as the reference code does: the first period is
    int(0.22 * steps) steps, each next one int(0.03 * steps) shorter, never shorter
    than int(0.06 * steps) (all at least 1). steps=100 -> [22, 41, 57, 70, 80, 87, 93, 99].
    """
    period = max(int(0.22 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    decrease = max(int(0.03 * steps), 1)
    out, at = [], period
    while at <= steps:
        out.append(at)
        period = max(period - decrease, shortest)
        at += period
    return out


def _apgd_start(x, eps, norm, generator):
    # As in the reference code: a random point on the ball's surface (L-inf: uniform
    # noise rescaled to max |t| = 1; L2: a Gaussian direction), clipped to the box.
    if norm == "linf":
        t = 2 * _rand("uniform", x, generator) - 1
        t = t / _per_example(_linf(t).clamp_min(_TINY), x)
    else:
        t = _rand("normal", x, generator)
        t = t / _per_example(flat_norm(t).clamp_min(_TINY), x)
    return torch.clamp(x + eps * t, 0.0, 1.0)


def _apgd_run(model, x, y, start, *, eps, norm, steps, loss, rho):
    """One APGD run on one row chunk (all per-example state as tensors, no host sync)."""
    n = x.shape[0]
    ball = LinfBall(eps) if norm == "linf" else L2Ball(eps)

    def move(xa, g, size):
        if norm == "linf":
            d = g.sign()
        else:
            d = g / _per_example(flat_norm(g).clamp_min(_TINY), g)
        return ball.project(xa + _per_example(size, xa) * d, x)

    def evaluate(xa):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            per = F.cross_entropy(logits, y, reduction="none") if loss == "ce" else dlr_loss(logits, y)
            (g,) = torch.autograd.grad(per.sum(), xa)
        return per.detach(), g, logits.detach().argmax(1) != y

    checks_at = set(apgd_checkpoints(steps))
    period = apgd_checkpoints(steps)[0] if checks_at else steps

    x_adv = start
    cur, grad, fooled = evaluate(x_adv)
    x_best_adv = torch.where(_per_example(fooled, x), x_adv, x)
    best, x_best, grad_best = cur.clone(), x_adv.clone(), grad.clone()
    size = torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_old = x_adv.clone()
    ups = torch.zeros(n, device=x.device, dtype=x.dtype)     # loss increases this period
    prev = cur.clone()
    best_at_check = best.clone()
    reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
    for i in range(steps):
        momentum_term = x_adv - x_old
        x_old = x_adv
        # alpha = 0.75 momentum from the second step on (the first is a plain step).
        a = 0.75 if i > 0 else 1.0
        z = move(x_adv, grad, size)
        x_adv = ball.project(x_adv + a * (z - x_adv) + (1 - a) * momentum_term, x).detach()
        cur, grad, hit = evaluate(x_adv)
        x_best_adv = torch.where(_per_example(hit, x), x_adv, x_best_adv)
        fooled = fooled | hit
        ups += (cur > prev).to(x.dtype)
        prev = cur
        better = cur > best
        best = torch.where(better, cur, best)
        x_best = torch.where(_per_example(better, x), x_adv, x_best)
        grad_best = torch.where(_per_example(better, x), grad, grad_best)
        if i + 1 in checks_at:
            # Halve the step (and restart from the best point) where the loss rose in
            # at most rho of this period's steps, or where the step was not halved at
            # the last checkpoint and the best loss has not improved since.
            oscillating = ups <= period * rho
            stalled = ~reduced_at_check & (best_at_check >= best)
            reduce = oscillating | stalled
            reduced_at_check = reduce
            best_at_check = best.clone()
            size = torch.where(reduce, size / 2, size)
            x_adv = torch.where(_per_example(reduce, x), x_best, x_adv)
            grad = torch.where(_per_example(reduce, x), grad_best, grad)
            ups.zero_()
            nxt = [c for c in sorted(checks_at) if c > i + 1]
            period = nxt[0] - (i + 1) if nxt else steps
    return torch.where(_per_example(fooled, x), x_best_adv, x_best)


def _apgd(model, x, y, *, eps, norm, steps, rho, random_start, targeted, target, generator,
          loss, attack):
    _positive("eps", eps)
    validate.choice("norm", norm, APGD_NORMS)
    _positive("steps", steps, integer=True)
    validate.number("rho", rho, low=0, high=1, low_open=True, high_open=True)
    validate.of_type("random_start", random_start, bool)
    _check_batch(x, y, targeted, target, attack=attack, can_target=False)
    if loss == "dlr":
        with torch.no_grad():
            k = model(x[:1]).shape[1]
        if k < 3:
            raise ConfigError(f"apgd_dlr needs a model with >= 3 classes (the DLR loss divides by "
                              f"z_1 - z_3); this one has {k}")
    # The start is drawn for the whole batch, so it does not depend on the chunking.
    start = _apgd_start(x, float(eps), norm, generator) if random_start else x.clone()
    parts = [_apgd_run(model, x[r], y[r], start[r], eps=float(eps), norm=norm, steps=steps,
                       loss=loss, rho=rho) for r in row_slices(x)]
    x_adv = torch.cat(parts) if len(parts) > 1 else parts[0]
    return AttackResult(x_adv, _success(model, x_adv, y, None, False))


_APGD_DOC = """

    Croce, Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks", arXiv 2003.01690 (Auto-PGD), following the
    reference code fra31/auto-attack. Threat model: white-box, untargeted, L-inf or L2
    ball of radius eps within [0, 1]. Step size starts at 2 eps; each step is a
    gradient step followed by momentum (alpha = 0.75) and projection; at checkpoints
    (after 22 % of the steps, then periods 3 % shorter, at least 6 %) an example's step
    is halved and it restarts from its best point when its loss rose in at most
    rho of the period's steps, or when its step was kept at the last checkpoint and its
    best loss has not improved since. One forward-backward pass per step (plus one).

    Args:
        eps: budget in input units, > 0. Required.
        norm: "linf" or "l2", default "linf".
        steps: iterations (int > 0), default 100.
        rho: the checkpoint's fraction of loss increases, in (0, 1), default 0.75.
        random_start: start on the ball's surface (drawn from `generator`), default True.
        targeted, target: must be False / None (untargeted only).
        generator: torch.Generator for the start.
    Shapes: x [n, ...] in [0, 1], y [n] Long -> x_adv like x (the first misclassified
        iterate's latest update where one was found, else the highest-loss point),
        success [n] bool.
"""


@register("adversarial", "apgd_ce", channels_last=True)
def apgd_ce(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
            steps: int = 100, rho: float = 0.75, random_start: bool = True, targeted: bool = False,
            target: torch.Tensor | None = None, generator: torch.Generator | None = None) -> AttackResult:
    return _apgd(model, x, y, eps=eps, norm=norm, steps=steps, rho=rho, random_start=random_start,
                 targeted=targeted, target=target, generator=generator, loss="ce", attack="apgd_ce")


@register("adversarial", "apgd_dlr", channels_last=True)
def apgd_dlr(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
             steps: int = 100, rho: float = 0.75, random_start: bool = True, targeted: bool = False,
             target: torch.Tensor | None = None, generator: torch.Generator | None = None) -> AttackResult:
    return _apgd(model, x, y, eps=eps, norm=norm, steps=steps, rho=rho, random_start=random_start,
                 targeted=targeted, target=target, generator=generator, loss="dlr", attack="apgd_dlr")


apgd_ce.__doc__ = "APGD-CE: Auto-PGD ascending the cross-entropy." + _APGD_DOC + """
    Example:
        >>> res = apgd_ce(model, x, y, eps=0.3, steps=100, generator=g)
        >>> res.success_rate
""" + apgd_ce.__doc__  # the registry's note on eval mode and batch_size=
apgd_dlr.__doc__ = ("APGD-DLR: Auto-PGD ascending the difference-of-logits ratio (`dlr_loss`), "
                    "which a rescaled or saturated softmax cannot flatten." + _APGD_DOC + """
    Example:
        >>> res = apgd_dlr(model, x, y, eps=0.3, steps=100, generator=g)
        >>> res.success_rate
""") + apgd_dlr.__doc__
