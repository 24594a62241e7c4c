"""The benchmark table: one `Case` per shared attack, every hyper-parameter written out
for every library. Adding an attack (or a peer) is one entry here.

Mapping of names between libraries (same quantity, different argument names):
step size = threatlab `step_size` = torchattacks `alpha` = ART `eps_step` = foolbox
`abs_stepsize`; iterations = `steps` = ART `max_iter`; C&W constant = `initial_const`
= torchattacks `c`; C&W Adam rate = `lr` = ART `learning_rate` = foolbox `stepsize`;
DeepFool overshoot = `overshoot` = ART `epsilon`; DeepFool classes considered =
`num_classes` = ART `nb_grads` = foolbox `candidates`.
"""
from __future__ import annotations

from typing import Any

import peers
from harness import Case, evaluate_membership


def _entry(adapter, target: str, **kw: Any):
    shown = {k: v for k, v in kw.items()}
    args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
    return (f"{target}({args})", adapter(target, **kw))


_NO_EVAL = ("threatlab runs with evaluate=False: like torchattacks and ART it returns the "
            "adversarials only; its default (evaluate=True, like foolbox) re-evaluates success "
            "with one more forward. The harness evaluates every library's outputs the same way, "
            "outside the clock.")


def cases(*, n: int, eps_linf: float = 0.1, eps_l2: float = 1.5, pgd_steps: int = 40,
          cw_steps: int = 100, cw_lr: float = 0.1, cw_const: float = 1.0, cw_search: int = 5,
          deepfool_steps: int = 50, overshoot: float = 0.02, num_classes: int = 10,
          cw_max_n: int = 50, sq_eps: float = 0.2, sq_queries: int = 300, sq_p_init: float = 0.8,
          hsj_queries: int = 1000, hsj_iters: int = 5, hsj_init_evals: int = 100,
          hsj_max_evals: int = 1000, bd_queries: int = 2000, bd_steps: int = 1800, bb_max_n: int = 20,
          mi_pool: int = 1000, mi_shadows: int = 4,
          mi_epochs: int = 20, mi_hidden: int = 128, mi_attack_epochs: int = 100,
          seed: int = 0, row_chunk: int | None = None) -> list[Case]:
    """The table, sized by the shared hyper-parameters (defaults = results.md's).

    row_chunk: rows threatlab sends through the model at once on this device
    (`runtime.row_chunk`: 128 on CPU, None = the whole batch on a GPU). ART is the one
    peer with the same knob (`batch_size`); it gets the same value, so both libraries
    run the model on equal chunks. torchattacks and foolbox have no such setting and
    forward the whole batch.

    C&W runs on the first `cw_max_n` examples for every library: ART's NumPy C&W takes
    about 2 s per example per binary-search step on a 2-core CPU.
    """
    n_cw = min(n, cw_max_n)
    art_batch = min(n, row_chunk or n)
    linf_alpha = 2.5 * eps_linf / pgd_steps  # Madry's rule, written out for every library
    l2_alpha = 2.5 * eps_l2 / pgd_steps
    out: list[Case] = []

    out.append(Case(
        "FGSM", "linf", eps=eps_linf, grad_evals=1, bound_at_clean=True,
        settings={"eps": eps_linf, "random_start": False},
        impls={
            "threatlab": _entry(peers.threatlab, "fgsm", eps=eps_linf, evaluate=False),
            "torchattacks": _entry(peers.torchattacks, "FGSM", eps=eps_linf),
            "ART": _entry(peers.art, "FastGradientMethod", norm=float("inf"), eps=eps_linf,
                          eps_step=eps_linf, targeted=False, num_random_init=0, batch_size=art_batch,
                          minimal=False),
            "foolbox": _entry(peers.foolbox, "LinfFastGradientAttack", epsilon=eps_linf,
                              random_start=False),
        },
        note=_NO_EVAL))

    out.append(Case(
        "PGD-Linf", "linf", eps=eps_linf, grad_evals=pgd_steps,
        settings={"eps": eps_linf, "steps": pgd_steps, "step_size": linf_alpha,
                  "random_start": True, "restarts": 1},
        impls={
            "threatlab": _entry(peers.threatlab, "pgd_linf", eps=eps_linf, steps=pgd_steps,
                                step_size=linf_alpha, random_start=True, evaluate=False),
            "torchattacks": _entry(peers.torchattacks, "PGD", eps=eps_linf, alpha=linf_alpha,
                                   steps=pgd_steps, random_start=True),
            "ART": _entry(peers.art, "ProjectedGradientDescent", norm=float("inf"), eps=eps_linf,
                          eps_step=linf_alpha, max_iter=pgd_steps, num_random_init=1,
                          batch_size=art_batch, verbose=False),
            "foolbox": _entry(peers.foolbox, "LinfPGD", epsilon=eps_linf, abs_stepsize=linf_alpha,
                              steps=pgd_steps, random_start=True),
        },
        note=_NO_EVAL))

    out.append(Case(
        "PGD-L2", "l2", eps=eps_l2, grad_evals=pgd_steps,
        settings={"eps": eps_l2, "steps": pgd_steps, "step_size": l2_alpha,
                  "random_start": True, "restarts": 1},
        impls={
            "threatlab": _entry(peers.threatlab, "pgd_l2", eps=eps_l2, steps=pgd_steps,
                                step_size=l2_alpha, random_start=True, evaluate=False),
            "torchattacks": _entry(peers.torchattacks, "PGDL2", eps=eps_l2, alpha=l2_alpha,
                                   steps=pgd_steps, random_start=True),
            "ART": _entry(peers.art, "ProjectedGradientDescent", norm=2, eps=eps_l2,
                          eps_step=l2_alpha, max_iter=pgd_steps, num_random_init=1,
                          batch_size=art_batch, verbose=False),
            "foolbox": _entry(peers.foolbox, "L2PGD", epsilon=eps_l2, abs_stepsize=l2_alpha,
                              steps=pgd_steps, random_start=True),
        }))

    # torchattacks' C&W has no binary search (one fixed c): this row is the setting all
    # four libraries share. The next row is the paper's search, without torchattacks.
    out.append(Case(
        "C&W-L2 (fixed c)", "min_l2", grad_evals=cw_steps, max_n=n_cw,
        settings={"steps": cw_steps, "lr": cw_lr, "const": cw_const, "binary_search_steps": 1,
                  "confidence": 0.0, "abort_early": False},
        note="torchattacks' CW stops early when its loss rises (every steps/10 steps; not "
             "configurable); ART's CW is a different optimizer (gradient descent with "
             "halving/doubling line search, max_halving=max_doubling=5), not Adam.",
        impls={
            "threatlab": _entry(peers.threatlab, "cw_l2", steps=cw_steps, lr=cw_lr,
                                confidence=0.0, binary_search_steps=1, initial_const=cw_const),
            "torchattacks": _entry(peers.torchattacks, "CW", c=cw_const, kappa=0.0,
                                   steps=cw_steps, lr=cw_lr),
            "ART": _entry(peers.art, "CarliniL2Method", confidence=0.0, learning_rate=cw_lr,
                          binary_search_steps=1, max_iter=cw_steps, initial_const=cw_const,
                          batch_size=min(n_cw, art_batch), verbose=False),
            "foolbox": _entry(peers.foolbox, "L2CarliniWagnerAttack", epsilon=None,
                              binary_search_steps=1, steps=cw_steps, stepsize=cw_lr,
                              confidence=0.0, initial_const=cw_const, abort_early=False),
        }))

    out.append(Case(
        f"C&W-L2 (search {cw_search})", "min_l2", grad_evals=cw_steps * cw_search, max_n=n_cw,
        settings={"steps": cw_steps, "lr": cw_lr, "initial_const": cw_const,
                  "binary_search_steps": cw_search, "confidence": 0.0, "abort_early": False},
        note="ART is compared in the fixed-c row only: its C&W (a different optimizer, see "
             "above) would take ~binary_search_steps x longer, ~2 s per example per step here.",
        impls={
            "threatlab": _entry(peers.threatlab, "cw_l2", steps=cw_steps, lr=cw_lr,
                                confidence=0.0, binary_search_steps=cw_search,
                                initial_const=cw_const),
            "foolbox": _entry(peers.foolbox, "L2CarliniWagnerAttack", epsilon=None,
                              binary_search_steps=cw_search, steps=cw_steps, stepsize=cw_lr,
                              confidence=0.0, initial_const=cw_const, abort_early=False),
        }))

    out.append(Case(
        "DeepFool", "min_l2", grad_evals=deepfool_steps,
        settings={"steps": deepfool_steps, "overshoot": overshoot, "num_classes": num_classes},
        note="grad_evals counts one forward+backward per step; DeepFool needs one backward "
             "per candidate class per step. Peers stop when every example has flipped.",
        impls={
            "threatlab": _entry(peers.threatlab, "deepfool", steps=deepfool_steps,
                                overshoot=overshoot, num_classes=num_classes),
            "torchattacks": _entry(peers.torchattacks, "DeepFool", steps=deepfool_steps,
                                   overshoot=overshoot),
            "ART": _entry(peers.art, "DeepFool", max_iter=deepfool_steps, epsilon=overshoot,
                          nb_grads=num_classes, batch_size=art_batch, verbose=False),
            "foolbox": _entry(peers.foolbox, "L2DeepFoolAttack", epsilon=None,
                              steps=deepfool_steps, candidates=num_classes, overshoot=overshoot,
                              loss="logits"),
        }))
    # --------------------------------------------------------------- black box
    # Square: threatlab charges one query for the striped start and one per iteration,
    # so max_queries = Q is Q - 1 iterations; torchattacks' n_queries and ART's max_iter
    # count iterations after the start. All three rescale the p schedule to the run length.
    out.append(Case(
        "Square-Linf", "linf", eps=sq_eps,
        settings={"eps": sq_eps, "max_queries": sq_queries, "iterations": sq_queries - 1,
                  "p_init": sq_p_init, "restarts": 1, "loss": "margin"},
        note="Queries per example = model rows forwarded / n (threatlab: its oracle's counter; "
             "peers: a counting wrapper around the model). ART re-predicts the whole batch "
             "every iteration and draws one square (and sign) for the whole batch, not one per example.",
        impls={
            "threatlab": _entry(peers.threatlab_blackbox, "square_linf", mode="probs", eps=sq_eps,
                                max_queries=sq_queries, p_init=sq_p_init),
            "torchattacks": _entry(peers.torchattacks_counted, "Square", norm="Linf", eps=sq_eps,
                                   n_queries=sq_queries - 1, n_restarts=1, p_init=sq_p_init,
                                   loss="margin", resc_schedule=True, seed=0),
            "ART": _entry(peers.art_counted, "SquareAttack", norm=float("inf"), eps=sq_eps,
                          max_iter=sq_queries - 1, p_init=sq_p_init, nb_restarts=1,
                          batch_size=art_batch, verbose=False),
        }))
    # HopSkipJump: threatlab stops by its query budget (an iteration runs only if the
    # budget covers its worst case); ART and foolbox stop by iteration count. Same
    # estimation schedule (B_t = min(init * sqrt(t), max)) and gamma for all; the
    # iteration count is the one threatlab fits into its budget, queries are measured.
    n_bb = min(n, bb_max_n)
    out.append(Case(
        "HopSkipJump-L2", "min_l2", max_n=n_bb,
        settings={"max_queries (threatlab)": hsj_queries, "iterations (peers)": hsj_iters,
                  "init_evals": hsj_init_evals, "max_evals": hsj_max_evals, "gamma": 1.0,
                  "stepsize_search": "geometric", "targeted": False},
        note="threatlab's budget of max_queries fits about `iterations` HSJ iterations "
             "(sum of B_t + at most 10 step halvings + 12 bisection queries each); ART and foolbox "
             "have no query budget, so they run that many iterations and their queries are "
             "counted. Compare median L2 at the measured queries per example. ART attacks one "
             "example at a time.",
        impls={
            "threatlab": _entry(peers.threatlab_blackbox, "hopskipjump", mode="label",
                                max_queries=hsj_queries, init_evals=hsj_init_evals,
                                max_evals=hsj_max_evals, gamma=1.0),
            "ART": _entry(peers.art_counted, "HopSkipJump", norm=2, max_iter=hsj_iters,
                          max_eval=hsj_max_evals, init_eval=hsj_init_evals, init_size=100,
                          batch_size=art_batch, targeted=False, verbose=False),
            "foolbox": _entry(peers.foolbox_counted, "HopSkipJumpAttack", epsilon=None,
                              steps=hsj_iters, initial_gradient_eval_steps=hsj_init_evals,
                              max_gradient_eval_steps=hsj_max_evals, gamma=1.0,
                              stepsize_search="geometric_progression", constraint="l2"),
        }))
    # Boundary (Brendel et al.): threatlab stops by its query budget, foolbox (the
    # reference implementation's current version) by its step count; both query one
    # candidate per step and the spherical candidate every 10th step, with the same
    # initial steps, adaptation factor and statistics windows (100 spherical, 30 step).
    out.append(Case(
        "Boundary-L2", "min_l2", max_n=n_bb,
        settings={"max_queries (threatlab)": bd_queries, "steps (foolbox)": bd_steps,
                  "spherical_step": 0.01, "source_step": 0.01, "step_adaptation": 1.5,
                  "update_stats_every_k": 10, "targeted": False},
        note="threatlab starts from uniform noise bisected to the boundary (<= 20 queries), "
             "foolbox from its blended-noise line search; steps are then 1 query each plus the "
             "spherical probe every 10th step, so foolbox's step count is chosen to spend about "
             "the same queries; compare median L2 at the measured queries per example. ART's "
             "BoundaryAttack draws dozens of candidates per step (num_trial x sample_size) and is "
             "not comparable at this budget.",
        impls={
            "threatlab": _entry(peers.threatlab_blackbox, "boundary", mode="label", max_queries=bd_queries,
                                spherical_step=0.01, source_step=0.01, step_adaptation=1.5),
            "foolbox": _entry(peers.foolbox_counted, "BoundaryAttack", epsilon=None, steps=bd_steps,
                              spherical_step=0.01, source_step=0.01, step_adaptation=1.5,
                              update_stats_every_k=10),
        }))
    # Shadow-model membership inference (Shokri et al.): one target and mi_shadows shadows
    # (notebook 02's setting, smaller). Both libraries train their own attack model on the
    # SAME shadow outputs; ART's ShadowModels would retrain the shadows one by one.
    out.append(Case(
        "MI shadow", "membership",
        settings={"pool": mi_pool, "members": mi_pool // 2, "shadows": mi_shadows,
                  "target/shadow": f"mlp hidden=[{mi_hidden}], {mi_epochs} epochs, batch 64, Adam 1e-3, "
                                   "each on a random half of the pool", "api": "probabilities"},
        evaluate=evaluate_membership,
        prepare=peers.membership_context(n_pool=mi_pool, n_shadows=mi_shadows, epochs=mi_epochs,
                                         hidden=mi_hidden, seed=seed),
        note="Attack training data = the shadows' probabilities on the pool with their in/out "
             "labels, identical for both libraries (threatlab.ensemble trains the shadows once, "
             "outside the clock). The attack models differ by design: threatlab one MLP "
             "(hidden 64) on log-probabilities + one-hot label, full-batch Adam; ART its default "
             "two-branch 'nn' (probabilities + one-hot label, StandardScaler), minibatch Adam. "
             "Scores: threatlab's attack logit, ART's membership probability; AUC and "
             "threshold-optimal balanced accuracy from threatlab.metrics for both.",
        impls={
            "threatlab": _entry(peers.threatlab_mi, "mi_shadow", hidden=64, steps=300, lr=1e-2),
            "ART": ("MembershipInferenceBlackBox(input_type='prediction', attack_model_type='nn', "
                    f"nn_model_epochs={mi_attack_epochs}, nn_model_batch_size=100, "
                    "nn_model_learning_rate=0.0001).fit(y, test_y, pred, test_pred)",
                    peers.art_mi(attack_model_type="nn", nn_model_epochs=mi_attack_epochs,
                                 nn_model_batch_size=100, nn_model_learning_rate=1e-4)),
        }))
    return out
