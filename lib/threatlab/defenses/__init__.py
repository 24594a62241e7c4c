"""Defenses, one module per countermeasure, beside attacks/ (same shape, one registry).

    >>> from threatlab import defenses
    >>> defenses.names()        # ['activation_clustering', 'adversarial_training', 'dp_sgd',
    ...                         #  'input_quantization', 'neural_cleanse', 'prada', 'spectral_signatures']
    >>> defenses.get("dp_sgd")  # threatlab.defenses.dp_sgd.dp_sgd_train

May import attacks/ (adversarial training runs an attack), models and the core modules;
never report/ or protocols/. Defenses compute: they never plot or write files, except
the checkpoint cache through `models`.
"""
from . import activation_clustering, adversarial_training, dp_sgd, neural_cleanse, prada, quantization, spectral_signatures
from .registry import get, names, register

register("inversion", "dp_sgd", dp_sgd.dp_sgd_train)
register("adversarial", "adversarial_training", adversarial_training.adversarial_train)
register("adversarial", "input_quantization", quantization.InputQuantization)
register("poisoning", "spectral_signatures", spectral_signatures.spectral_signatures)
register("extraction", "prada", prada.prada)
register("poisoning", "activation_clustering", activation_clustering.activation_clustering)
register("poisoning", "neural_cleanse", neural_cleanse.neural_cleanse)

__all__ = ["activation_clustering", "adversarial_training", "dp_sgd", "get", "names", "neural_cleanse", "prada",
           "quantization", "register", "spectral_signatures"]
