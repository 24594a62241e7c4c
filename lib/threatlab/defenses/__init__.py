"""Defenses, one module per countermeasure, beside attacks/ (same shape, one registry).

    >>> from threatlab import defenses
    >>> defenses.names()        # ['activation_clustering', 'adversarial_training', 'dp_sgd',
    ...                         #  'input_quantization', 'neural_cleanse', 'prada', 'spectral_signatures']
    >>> defenses.dp_sgd is defenses.get("dp_sgd")  # the function dp_sgd_train

Every registered defense is a top-level name, the object the registry returns. Six of
them share their name with the module that holds them (`dp_sgd`, `neural_cleanse`, ...):
the package attribute is the defense, so reach a module's other names through the
module path (``from threatlab.defenses.dp_sgd import dp_epsilon``), not through
``from threatlab.defenses import dp_sgd``.

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

# Top-level names, one per registered defense. These rebind the six same-named module
# attributes (the modules stay importable by path: `sys.modules` keeps them).
from .activation_clustering import activation_clustering  # noqa: E402,F811
from .adversarial_training import adversarial_train as adversarial_training  # noqa: E402,F811
from .dp_sgd import dp_sgd_train as dp_sgd  # noqa: E402,F811
from .neural_cleanse import neural_cleanse  # noqa: E402,F811
from .prada import prada  # noqa: E402,F811
from .quantization import InputQuantization as input_quantization  # noqa: E402
from .spectral_signatures import spectral_signatures  # noqa: E402,F811

DEFENSES = ["activation_clustering", "adversarial_training", "dp_sgd", "input_quantization", "neural_cleanse",
            "prada", "spectral_signatures"]

__all__ = ["get", "names", "register", "quantization", *DEFENSES]
