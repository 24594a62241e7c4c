"""Thin adapters: each library's attack object -> `run(x, y, seed) -> Outcome`.

`seed` is the round's seed; the harness has already re-seeded torch, NumPy and random
with it (the peers draw from those global RNGs), threatlab takes it as a Generator.

Peers are imported lazily, so a missing one is a skipped column, not a crash. The
wrappers are the ordinary way each library is used: ART through its
`PyTorchClassifier` (NumPy in, NumPy out), foolbox through `PyTorchModel`,
torchattacks on the module itself. Conversions between NumPy and torch are part of
the peer's time, as they are for its users.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np
import torch

from harness import Outcome, Unavailable


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise Unavailable(f"{name} not installed ({e})") from None


def version(module: str) -> str:
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return "not installed"


# ------------------------------------------------------------------ counting rows

class Counting(torch.nn.Module):
    """A model wrapper that counts the rows it forwards: a black-box peer's queries (it
    has no counter of its own, or counts differently) and every white-box library's
    forward rows, measured the same way for all. Reset before each call by the adapter. Inputs are cast to float32: ART's
    HopSkipJump feeds float64 NumPy draws to the classifier, which a float32 model
    rejects."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.model(x.float() if x.dtype != torch.float32 else x)


def _counted(ctx):
    """The model every implementation of a case gets, threatlab's included: one counting
    wrapper per run (each call resets it), so rows are counted the same way for all at
    the same per-call cost."""
    if "counting" not in ctx:
        ctx["counting"] = Counting(ctx["model"]).eval()
    return ctx["counting"]


def _rows(net: Counting, black_box: bool) -> dict[str, int]:
    """The rows forwarded during a call: a black-box attack's queries, a white-box
    attack's forward rows (see `Outcome`)."""
    return {"total_queries" if black_box else "forward_rows": net.rows}


# ------------------------------------------------------------------------ threatlab

def threatlab(name: str, **kw: Any):
    """A registered white-box threatlab kernel with an explicit generator per call."""
    def factory(ctx):
        fn = _threatlab_kernel(name)
        net = _counted(ctx)

        def run(x, y, seed):
            gen = torch.Generator(device=x.device).manual_seed(seed)
            net.rows = 0
            x_adv = fn(net, x, y, generator=gen, **kw).x_adv
            return Outcome(x_adv=x_adv, forward_rows=net.rows)
        return run
    return factory


def threatlab_blackbox(name: str, *, mode: str, **kw: Any):
    """A threatlab black-box kernel behind a fresh `BlackBox` oracle per call; queries
    are the oracle's own per-example counter."""
    def factory(ctx):
        from threatlab.oracle import BlackBox

        fn = _threatlab_kernel(name)

        def run(x, y, seed):
            gen = torch.Generator(device=x.device).manual_seed(seed)
            oracle = BlackBox(ctx["model"], mode=mode)
            res = fn(oracle, x, y, generator=gen, **kw)
            return Outcome(x_adv=res.x_adv, queries=res.queries, total_queries=oracle.total)
        return run
    return factory


def _threatlab_kernel(name: str):
    from threatlab import attacks
    from threatlab.errors import ConfigError
    try:
        return attacks.get(name)
    except ConfigError as e:
        raise Unavailable(str(e)) from None


# ---------------------------------------------------------------------- torchattacks

def torchattacks(cls: str, *, black_box: bool = False, **kw: Any):
    def factory(ctx):
        ta = _import("torchattacks")
        net = _counted(ctx)
        atk = getattr(ta, cls)(net, **kw)

        def run(x, y, seed):
            net.rows = 0
            if hasattr(atk, "seed"):  # torchattacks' Square seeds itself from this field
                atk.seed = seed
            x_adv = atk(x, y)
            return Outcome(x_adv=x_adv, **_rows(net, black_box))
        return run
    return factory


# ------------------------------------------------------------------------------- ART

def art_classifier(ctx):
    """One PyTorchClassifier per run around the counting model: clip values (0, 1),
    cross-entropy, no preprocessing (normalization lives inside the model, as for
    threatlab)."""
    if "art_classifier" not in ctx:
        _import("art")
        from art.estimators.classification import PyTorchClassifier

        ctx["art_classifier"] = PyTorchClassifier(
            model=_counted(ctx), loss=torch.nn.CrossEntropyLoss(), input_shape=ctx["input_shape"],
            nb_classes=ctx["num_classes"], clip_values=(0.0, 1.0),
            device_type="gpu" if ctx["device"].type == "cuda" else "cpu")
    return ctx["art_classifier"]


def art(cls: str, module: str = "art.attacks.evasion", *, black_box: bool = False, **kw: Any):
    def factory(ctx):
        mod = _import(module)
        atk = getattr(mod, cls)(art_classifier(ctx), **kw)
        net = _counted(ctx)

        def run(x, y, seed):
            net.rows = 0
            adv = atk.generate(x.detach().cpu().numpy(), y=y.detach().cpu().numpy())
            return Outcome(x_adv=torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(x.device),
                           **_rows(net, black_box))
        return run
    return factory


# --------------------------------------------------------------------------- foolbox

def foolbox(cls: str, *, epsilon: float | None, black_box: bool = False, **kw: Any):
    """`epsilon=None` for minimal-norm attacks (their raw output is returned)."""
    def factory(ctx):
        fb = _import("foolbox")
        net = _counted(ctx)
        if "fb_model" not in ctx:
            ctx["fb_model"] = fb.PyTorchModel(net, bounds=(0.0, 1.0), device=ctx["device"])
        if not hasattr(fb.attacks, cls):
            raise Unavailable(f"foolbox {fb.__version__} has no {cls}")
        atk = getattr(fb.attacks, cls)(**kw)

        def run(x, y, seed):
            net.rows = 0
            _, clipped, _ = atk(ctx["fb_model"], x, y, epsilons=epsilon)
            return Outcome(x_adv=clipped, **_rows(net, black_box))
        return run
    return factory


# Black-box peers: the same adapters, their rows reported as queries.
torchattacks_counted = functools.partial(torchattacks, black_box=True)
art_counted = functools.partial(art, black_box=True)
foolbox_counted = functools.partial(foolbox, black_box=True)

# ------------------------------------------------------------ membership inference

def membership_context(*, n_pool: int, n_shadows: int, epochs: int, hidden: int, seed: int):
    """`Case.prepare` for shadow-model membership inference, as notebook 02 sets it up:
    n_shadows + 1 MLPs trained as one threatlab ensemble, each on a random half of a pool
    of MNIST training images (the last n_pool); model 0 is the target, models 1.. are the
    shadows. Every library gets the same target, the same pool (members = model 0's half)
    and the same shadow outputs and in/out labels as attack training data."""
    def prepare(ctx):
        from threatlab import data, ensemble

        x_tr, y_tr = data.load("mnist", "train")
        x_pool, y_pool = x_tr[-n_pool:].to(ctx["device"]), y_tr[-n_pool:].to(ctx["device"])
        mask = ensemble.half_splits(n_pool, n_shadows + 1, generator=torch.Generator().manual_seed(seed))
        rows = torch.stack([r.nonzero().squeeze(1) for r in mask])
        ens = ensemble.train_ensemble("mlp", x_pool, y_pool, rows.to(ctx["device"]),
                                      seeds=[seed * 1000 + m for m in range(n_shadows + 1)],
                                      epochs=epochs, batch_size=64, lr=1e-3, num_classes=10,
                                      arch_params={"hidden": [hidden]}, device=ctx["device"],
                                      progress=False)
        target = ens.model(0).to(ctx["device"])
        for p in target.parameters():
            p.requires_grad_(False)
        probs = ens.logits(x_pool).softmax(-1)
        out = {k: v for k, v in ctx.items() if not k.startswith(("art", "fb", "counting"))}
        out.update(model=target, x=x_pool, y=y_pool, members=mask[0].to(ctx["device"]),
                   shadow_probs=probs[1:], shadow_in=mask[1:].to(ctx["device"]))
        return out
    return prepare


def threatlab_mi(name: str, **kw: Any):
    def factory(ctx):
        from threatlab import attacks
        from threatlab.oracle import BlackBox

        fn = attacks.get(name)

        def run(x, y, seed):
            oracle = BlackBox(ctx["model"], mode="probs")
            res = fn(oracle, x, y, shadow_probs=ctx["shadow_probs"], shadow_in=ctx["shadow_in"],
                     generator=torch.Generator().manual_seed(seed), **kw)
            return Outcome(scores=res.scores, members=ctx["members"], total_queries=oracle.total)
        return run
    return factory


def art_mi(**kw: Any):
    """ART's MembershipInferenceBlackBox on a PyTorchClassifier that answers
    probabilities (the same "probs" API threatlab's oracle gives), fitted on the shadow
    outputs (members: shadow_in rows; non-members: the rest), then `infer` on the pool,
    which queries the target through the counting wrapper."""
    def factory(ctx):
        _import("art")
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from art.estimators.classification import PyTorchClassifier

        net = Counting(torch.nn.Sequential(ctx["model"], torch.nn.Softmax(dim=1))).eval()
        clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=ctx["input_shape"],
                                nb_classes=ctx["num_classes"], clip_values=(0.0, 1.0),
                                device_type="gpu" if ctx["device"].type == "cuda" else "cpu")
        sp, si = ctx["shadow_probs"].cpu().numpy(), ctx["shadow_in"].cpu().numpy()
        ys = np.broadcast_to(ctx["y"].cpu().numpy(), si.shape)

        def run(x, y, seed):
            net.rows = 0
            atk = MembershipInferenceBlackBox(clf, input_type="prediction", **kw)
            atk.fit(y=ys[si], test_y=ys[~si], pred=sp[si], test_pred=sp[~si])
            s = atk.infer(x.detach().cpu().numpy(), y.detach().cpu().numpy(), probabilities=True)
            return Outcome(scores=torch.from_numpy(np.asarray(s, dtype=np.float64)).reshape(-1),
                           members=ctx["members"], total_queries=net.rows)
        return run
    return factory
