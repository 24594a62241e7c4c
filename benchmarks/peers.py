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


# ------------------------------------------------------------------------ threatlab

def threatlab(name: str, **kw: Any):
    """A registered threatlab kernel with an explicit generator seeded per call."""
    def factory(ctx):
        from threatlab import attacks
        from threatlab.errors import ConfigError
        try:
            fn = attacks.get(name)
        except ConfigError as e:
            raise Unavailable(str(e)) from None

        net = _wb_counted(ctx)

        def run(x, y, seed):
            gen = torch.Generator(device=x.device).manual_seed(seed)
            net.rows = 0
            x_adv = fn(net, x, y, generator=gen, **kw).x_adv
            return Outcome(x_adv=x_adv, forward_rows=net.rows)
        return run
    return factory


# ---------------------------------------------------------------------- torchattacks

def torchattacks(cls: str, **kw: Any):
    def factory(ctx):
        ta = _import("torchattacks")
        net = _wb_counted(ctx)
        atk = getattr(ta, cls)(net, **kw)

        def run(x, y, seed):
            net.rows = 0
            x_adv = atk(x, y)
            return Outcome(x_adv=x_adv, forward_rows=net.rows)
        return run
    return factory


# ------------------------------------------------------------------------------- ART

def art_classifier(ctx):
    """One PyTorchClassifier per run: clip values (0, 1), cross-entropy, no preprocessing
    (normalization lives inside the model, as for threatlab)."""
    if "art_classifier" not in ctx:
        _import("art")
        from art.estimators.classification import PyTorchClassifier

        ctx["art_classifier"] = PyTorchClassifier(
            model=_wb_counted(ctx), loss=torch.nn.CrossEntropyLoss(), input_shape=ctx["input_shape"],
            nb_classes=ctx["num_classes"], clip_values=(0.0, 1.0),
            device_type="gpu" if ctx["device"].type == "cuda" else "cpu")
    return ctx["art_classifier"]


def art(cls: str, module: str = "art.attacks.evasion", **kw: Any):
    def factory(ctx):
        mod = _import(module)
        atk = getattr(mod, cls)(art_classifier(ctx), **kw)

        net = _wb_counted(ctx)

        def run(x, y, seed):
            net.rows = 0
            x_np = x.detach().cpu().numpy()
            adv = atk.generate(x_np, y=y.detach().cpu().numpy())
            return Outcome(x_adv=torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(x.device),
                           forward_rows=net.rows)
        return run
    return factory


# --------------------------------------------------------------------------- foolbox

def foolbox(cls: str, *, epsilon: float | None, **kw: Any):
    """`epsilon=None` for minimal-norm attacks (their raw output is returned)."""
    def factory(ctx):
        fb = _import("foolbox")
        net = _wb_counted(ctx)
        if "fb_model" not in ctx:
            ctx["fb_model"] = fb.PyTorchModel(net, bounds=(0.0, 1.0), device=ctx["device"])
        atk = getattr(fb.attacks, cls)(**kw)

        def run(x, y, seed):
            net.rows = 0
            _, clipped, _ = atk(ctx["fb_model"], x, y, epsilons=epsilon)
            return Outcome(x_adv=clipped, forward_rows=net.rows)
        return run
    return factory


# ------------------------------------------------------------- black-box query counts

class Counting(torch.nn.Module):
    """A model wrapper that counts the rows it forwards: the query count of a peer
    that has none of its own (or counts differently), measured the same way for all.
    Reset before each call by the adapter. Inputs are cast to float32: ART's
    HopSkipJump feeds float64 NumPy draws to the classifier, which a float32 model
    rejects."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.model(x.float() if x.dtype != torch.float32 else x)


def _counted(ctx, key: str = "counting"):
    """One counting wrapper per case context (peers of one case share it; each run resets it)."""
    if key not in ctx:
        ctx[key] = Counting(ctx["model"]).eval()
    return ctx[key]


def _wb_counted(ctx):
    """The model every white-box implementation gets (threatlab included): the same
    counting wrapper, so `forward rows per example` shows the work each one did (early
    stops, skipped steps) at the same per-call cost for all."""
    return _counted(ctx, "wb_counting")


def threatlab_blackbox(name: str, *, mode: str, **kw: Any):
    """A threatlab black-box kernel behind a fresh `BlackBox` oracle per call; queries
    are the oracle's own per-example counter."""
    def factory(ctx):
        from threatlab import attacks
        from threatlab.errors import ConfigError
        from threatlab.oracle import BlackBox
        try:
            fn = attacks.get(name)
        except ConfigError as e:
            raise Unavailable(str(e)) from None

        def run(x, y, seed):
            gen = torch.Generator(device=x.device).manual_seed(seed)
            oracle = BlackBox(ctx["model"], mode=mode)
            res = fn(oracle, x, y, generator=gen, **kw)
            return Outcome(x_adv=res.x_adv, queries=res.queries, total_queries=oracle.total)
        return run
    return factory


def torchattacks_counted(cls: str, **kw: Any):
    def factory(ctx):
        ta = _import("torchattacks")
        net = _counted(ctx)
        atk = getattr(ta, cls)(net, **kw)

        def run(x, y, seed):
            net.rows = 0
            if hasattr(atk, "seed"):  # torchattacks' Square seeds itself from this field
                atk.seed = seed
            adv = atk(x, y)
            return Outcome(x_adv=adv, total_queries=net.rows)
        return run
    return factory


def art_counted(cls: str, module: str = "art.attacks.evasion", **kw: Any):
    def factory(ctx):
        mod = _import(module)
        from art.estimators.classification import PyTorchClassifier

        net = _counted(ctx)
        if "art_counted" not in ctx:
            ctx["art_counted"] = PyTorchClassifier(
                model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=ctx["input_shape"],
                nb_classes=ctx["num_classes"], clip_values=(0.0, 1.0),
                device_type="gpu" if ctx["device"].type == "cuda" else "cpu")
        atk = getattr(mod, cls)(ctx["art_counted"], **kw)

        def run(x, y, seed):
            net.rows = 0
            adv = atk.generate(x.detach().cpu().numpy(), y=y.detach().cpu().numpy())
            return Outcome(x_adv=torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(x.device),
                           total_queries=net.rows)
        return run
    return factory


def foolbox_counted(cls: str, *, epsilon: float | None, **kw: Any):
    def factory(ctx):
        fb = _import("foolbox")
        net = _counted(ctx)
        if "fb_counted" not in ctx:
            ctx["fb_counted"] = fb.PyTorchModel(net, bounds=(0.0, 1.0), device=ctx["device"])
        if not hasattr(fb.attacks, cls):
            raise Unavailable(f"foolbox {fb.__version__} has no {cls}")
        atk = getattr(fb.attacks, cls)(**kw)

        def run(x, y, seed):
            net.rows = 0
            _, clipped, _ = atk(ctx["fb_counted"], x, y, epsilons=epsilon)
            return Outcome(x_adv=clipped, total_queries=net.rows)
        return run
    return factory


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
        out = {k: v for k, v in ctx.items() if not k.startswith(("art", "fb", "counting", "wb_"))}
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
