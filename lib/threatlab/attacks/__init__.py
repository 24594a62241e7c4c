"""Attack kernels, one module per family, one registry for all.

Every registered kernel is also a top-level name here, the same object the registry
returns (``attacks.pgd_linf is attacks.get("pgd_linf")``):

    >>> from threatlab import attacks
    >>> res = attacks.pgd_linf(model, x, y, eps=0.3, steps=40, batch_size=256)
    >>> res.success_rate

Every kernel runs the model in eval mode and restores each submodule's ``training``
flag afterwards; kernels on a batch ``x`` take ``batch_size=`` (see `registry`).
"""
from .registry import FAMILIES, get, names, register
from .result import AttackResult
from . import adversarial, blackbox, eot, extraction, inversion, poisoning  # noqa: F401  (registers the kernels)

# Top-level names: the registry's objects (the registry's entry-check wrappers), one per
# registered name; tests/test_api.py checks this list against `names()`.
from .adversarial import (apgd_ce, apgd_dlr, bim, cw_l2, deepfool, fgsm, jsma, min_linf,  # noqa: E402
                          pgd_l2, pgd_linf)
from .blackbox import boundary, hopskipjump, nes_l2, nes_linf, pointwise, simba, square_l2, square_linf  # noqa: E402
from .eot import eot_pgd  # noqa: E402
from .extraction import (active_queries as active, equation_solving, jacobian_augmentation as jacobian,  # noqa: E402
                         knockoff_queries as knockoff, noise_queries as noise, pool_queries as pool,
                         sign_noise_attack as sign_noise, train_substitute as substitute)
from .inversion import (dlg, fredrikson, mi_class_loss, mi_class_threshold, mi_confidence, mi_entropy,  # noqa: E402
                        mi_label_only, mi_lira, mi_lira_offline, mi_loss, mi_shadow)
from .poisoning import badnets, feature_collision, label_flip_random, label_flip_targeted  # noqa: E402

KERNELS = ["active", "apgd_ce", "apgd_dlr", "badnets", "bim", "boundary", "cw_l2", "deepfool", "dlg",
           "eot_pgd", "equation_solving", "feature_collision", "fgsm", "fredrikson", "hopskipjump", "jacobian",
           "jsma", "knockoff", "label_flip_random", "label_flip_targeted", "mi_class_loss", "mi_class_threshold",
           "mi_confidence", "mi_entropy", "mi_label_only", "mi_lira", "mi_lira_offline", "mi_loss", "mi_shadow",
           "min_linf", "nes_l2", "nes_linf", "noise", "pgd_l2", "pgd_linf", "pointwise", "pool", "sign_noise",
           "simba", "square_l2", "square_linf", "substitute"]

__all__ = ["FAMILIES", "AttackResult", "get", "names", "register", *KERNELS]
