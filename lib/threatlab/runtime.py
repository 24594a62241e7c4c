"""Seeds, devices and progress bars: the set-up every notebook does first."""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

#: Set to 1 to silence every progress bar (nbval and CI logs).
NO_PROGRESS_ENV = "THREATLAB_NO_PROGRESS"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; make torch deterministic; return a CPU generator.

    Kernels take explicit generators, so this mainly covers model initialisation and
    data shuffling done by torch's global RNG.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def default_device() -> torch.device:
    """CUDA when present (full profile on a GPU), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress_disabled() -> bool:
    """True when THREATLAB_NO_PROGRESS is set to a true value."""
    return os.environ.get(NO_PROGRESS_ENV, "").lower() in ("1", "true", "yes")


def describe(device: torch.device | str, seed: int) -> dict[str, str]:
    """Versions, device and seed: what a notebook prints in its set-up cell."""
    import threatlab

    return {
        "threatlab": threatlab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "seed": str(seed),
    }


def set_threads(threads: int) -> None:
    """Set torch's intra-op CPU threads; 0 keeps torch's default.

    The family notebooks train many tiny models: there a second thread only adds
    synchronisation, and on a loaded CPU a descheduled worker stalls every op, so they
    default to 1.
    """
    if threads:
        torch.set_num_threads(threads)
