"""threatlab: runnable experiments for the survey 'Towards Security Threats of Deep
Learning Systems' (He et al., IEEE TSE; arXiv 1911.12562)."""
__version__ = "0.1.0"

from .errors import ConfigError, DataUnavailableError, IntegrityError, QueryBudgetExceeded  # noqa: E402
from .runtime import default_device, seed_everything  # noqa: E402

__all__ = ["ConfigError", "DataUnavailableError", "IntegrityError", "QueryBudgetExceeded",
           "default_device", "seed_everything", "__version__"]
