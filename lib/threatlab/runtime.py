"""Seeds, devices and progress bars: the set-up every notebook does first; and how a
kernel call runs on a model (rows per model call, eval mode)."""
from __future__ import annotations

import contextvars
import os
import platform
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

#: Set to 1 to silence every progress bar (nbval and CI logs).
NO_PROGRESS_ENV = "THREATLAB_NO_PROGRESS"
#: tqdm's own switch. tqdm reads it only as the default of ``disable``, so a bar created
#: with an explicit ``disable=False`` would still draw; threatlab passes the value of
#: `progress_disabled`, which reads it too.
TQDM_DISABLE_ENV = "TQDM_DISABLE"
_TRUE = ("1", "true", "yes", "on")

#: Rows sent through a model at once on a CPU. The notebooks' MNIST CNN, one thread:
#: a forward + input-gradient backward costs 0.47 ms per row in chunks of 64-128 rows,
#: 0.66 at 256 and 0.75 at 512 (activations of a chunk stay in cache); a forward
#: alone 0.115 ms per row at 128 vs 0.29 at 20,000. Results do not depend on it:
#: every attack is independent per example, and the CPU kernels give the same bits
#: for a row whatever the batch around it (tested).
CPU_ROW_CHUNK = 128


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


# ------------------------------------------------------------------ seeded draws
# Every seeded draw of the library goes through these four: the numbers are drawn on
# the generator's device (without a generator: on `device`, from torch's global RNG)
# and then moved to `device`. A CPU generator can so serve CUDA data, and one seed gives
# the same numbers on every device.

def _draw_device(generator: torch.Generator | None, device) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _moved(t: torch.Tensor, device) -> torch.Tensor:
    return t if device is None else t.to(device)


def rand(shape, generator: torch.Generator | None = None, *, device=None,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uniform [0, 1) draws of `shape` (see the note above on devices)."""
    return _moved(torch.rand(tuple(shape), generator=generator, device=_draw_device(generator, device),
                             dtype=dtype), device)


def randn(shape, generator: torch.Generator | None = None, *, device=None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal draws of `shape`."""
    return _moved(torch.randn(tuple(shape), generator=generator, device=_draw_device(generator, device),
                              dtype=dtype), device)


def randint(low: int, high: int, shape, generator: torch.Generator | None = None, *,
            device=None) -> torch.Tensor:
    """Integers in [low, high) of `shape` (int64)."""
    return _moved(torch.randint(low, high, tuple(shape), generator=generator,
                                device=_draw_device(generator, device)), device)


def randperm(n: int, generator: torch.Generator | None = None, *, device=None) -> torch.Tensor:
    """A random permutation of 0..n-1 (int64)."""
    return _moved(torch.randperm(n, generator=generator, device=_draw_device(generator, device)), device)


def default_device() -> torch.device:
    """CUDA when present (full profile on a GPU), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: The caller's ``batch_size=`` of the kernel call in progress (None: the default above).
_ROWS_PER_CALL: contextvars.ContextVar[int | None] = contextvars.ContextVar("threatlab_rows_per_call",
                                                                          default=None)


@contextmanager
def rows_per_call(batch_size: int | None) -> Iterator[None]:
    """Inside the block `row_chunk` is `batch_size` (None: the device's default). The
    registry enters it for a kernel's ``batch_size=``: every row-chunked model call of
    the kernel (attacks/chunks.py, PGD's and APGD's iterations, `BlackBox` queries)
    then sends at most `batch_size` rows through the model at once."""
    token = _ROWS_PER_CALL.set(batch_size)
    try:
        yield
    finally:
        _ROWS_PER_CALL.reset(token)


def rows_requested() -> int | None:
    """The ``batch_size=`` of the kernel call in progress, None when none was given."""
    return _ROWS_PER_CALL.get()


def row_chunk(device: torch.device | str) -> int | None:
    """Rows per model call on `device`: the ``batch_size=`` of the kernel call in
    progress (`rows_per_call`) when one was given; else CPU_ROW_CHUNK on a CPU and None
    (the whole batch) on an accelerator, where large batches are what keeps it busy."""
    override = _ROWS_PER_CALL.get()
    if override is not None:
        return override
    return CPU_ROW_CHUNK if torch.device(device).type == "cpu" else None


@contextmanager
def eval_mode(model: torch.nn.Module | None) -> Iterator[None]:
    """Run the block with every submodule of `model` in eval mode; afterwards (also when
    the block raises) each submodule gets back its own ``training`` flag, so a model
    whose parts were in different modes comes back exactly as it was. Attacks are
    evaluations of the deployed model: dropout would make every gradient and answer
    random and batch norm would use (and update) batch statistics. ART and torchattacks
    switch to eval mode too. `model` None (data-only kernels): nothing to do."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    flags = [m.training for m in modules]
    try:
        for m in modules:
            m.training = False
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.training = flag


def row_slices(n: int, device: torch.device | str) -> list[slice]:
    """Rows 0..n-1 cut into the fewest chunks of at most `row_chunk(device)` rows, of
    equal size (+-1): 150 rows are 75 + 75, not 128 + a slow 22. One slice when the
    device takes whole batches, or the batch is empty."""
    chunk = row_chunk(device)
    k = 1 if chunk is None or n <= chunk else -(-n // chunk)
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        stop = start + base + (i < extra)
        out.append(slice(start, stop))
        start = stop
    return out


def progress_disabled() -> bool:
    """True when THREATLAB_NO_PROGRESS or TQDM_DISABLE is set to a true value
    (1, true, yes, on; read at call time, so a notebook or test can set it late).
    THREATLAB_NO_PROGRESS takes only the values of `validate.env_switch`."""
    from .validate import env_switch

    # Ours is strict (a typo is an error); tqdm's own switch keeps tqdm's leniency.
    return env_switch(NO_PROGRESS_ENV, False) or os.environ.get(TQDM_DISABLE_ENV, "").strip().lower() in _TRUE


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
