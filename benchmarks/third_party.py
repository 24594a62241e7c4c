"""A third-party model for the benchmarks: advertorch's MNIST LeNet-5, written as its
authors wrote it.

threatlab's own models flatten with ``nn.Flatten`` and carry ``in_shape`` and
``num_classes``; models from elsewhere do neither. advertorch 0.2.3
(``advertorch/test_utils.py``, the model behind ``advertorch_examples.utils.
get_mnist_lenet5_clntrained`` / ``_advtrained``) flattens with
``out.view(out.size(0), -1)``, which raises under threatlab's channels-last view
(`threatlab.attacks.layout`): the kernels must fall back to the model as given (issue
#27). Running the benchmark table on this model (``benchmarks/run.py --model
advertorch-lenet5``) checks that every kernel does, and times threatlab without its
layout optimisation beside the peers.

Architecture (advertorch 0.2.3, checked against its shipped state dicts): conv 32@3x3
(padding 1) -> ReLU -> 2x2 max-pool -> conv 64@3x3 (padding 1) -> ReLU -> 2x2 max-pool
-> ``.view`` flatten (7*7*64 = 3136) -> FC 200 -> ReLU -> FC 10, on [0, 1] MNIST pixels
without normalisation (advertorch trains on ``transforms.ToTensor()`` output). The
attribute names are advertorch's, so its state dicts load as they are.

Weights: `load_advertorch(path)` reads one of advertorch's ``trained_models/*.pt``
files (a plain state dict; read with ``torch.load(weights_only=True)``, never
unpickled otherwise); without one, `trained_here` trains the architecture on threatlab's
MNIST and keeps it in the checkpoint cache (safetensors, integrity-checked). Nothing is
downloaded at run time. To get advertorch's files (the sdist ships them):

    python -m pip download --no-deps advertorch==0.2.3 -d /tmp/adv
    tar xzf /tmp/adv/advertorch-0.2.3.tar.gz -C /tmp/adv \\
        advertorch-0.2.3/advertorch_examples/trained_models/mnist_lenet5_clntrained.pt
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from threatlab import models
from threatlab.errors import ConfigError, IntegrityError

#: The name `benchmarks/run.py --model` knows this model by.
NAME = "advertorch-lenet5"
#: Largest weights file `load_advertorch` reads (advertorch's are 2.6 MB).
MAX_BYTES = 64 << 20


class AdvertorchLeNet5(nn.Module):
    """advertorch 0.2.3's ``LeNet5`` (module doc): same layers, names, in-place ReLUs
    and ``.view`` flatten. No ``in_shape`` / ``num_classes`` attributes, as there."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1, stride=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1, stride=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.maxpool2 = nn.MaxPool2d(2)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool1(self.relu1(self.conv1(x)))
        out = self.maxpool2(self.relu2(self.conv2(out)))
        out = out.view(out.size(0), -1)  # the line the channels-last view cannot run
        out = self.relu3(self.linear1(out))
        return self.linear2(out)


def load_advertorch(path: str | os.PathLike) -> AdvertorchLeNet5:
    """advertorch's LeNet-5 with the weights in `path` (one of its
    ``trained_models/mnist_lenet5_*.pt``), in eval mode. The file must be a regular file
    of at most `MAX_BYTES` holding a state dict of exactly this architecture's tensors
    (``torch.load(weights_only=True)``: tensors and containers only, no code);
    ConfigError / IntegrityError otherwise, before the model is built."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights={str(path)!r} is not a file; expected advertorch's mnist_lenet5_*.pt")
    if p.stat().st_size > MAX_BYTES:
        raise ConfigError(f"weights={str(path)!r} is {p.stat().st_size} bytes; at most {MAX_BYTES} allowed")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer
        raise IntegrityError(f"{p.name} is not a weights-only state dict ({type(e).__name__}: {e})") from None
    model = AdvertorchLeNet5()
    expected = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise IntegrityError(f"{p.name} holds {got}; expected the tensors {sorted(expected)}")
    for k, ref in expected.items():
        t = state[k]
        if not isinstance(t, torch.Tensor) or t.shape != ref.shape or not t.is_floating_point():
            raise IntegrityError(f"{p.name}: {k} is not a float tensor of shape {tuple(ref.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise IntegrityError(f"{p.name}: {k} holds NaN or inf")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def _key(x: torch.Tensor, y: torch.Tensor, train_params: dict[str, Any], seed: int) -> str:
    """Cache key: this file's source (the architecture), the data, the recipe, the seed."""
    record = {"arch": NAME, "source_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
              "data_sha256": models.tensor_digest(x, y), "train_params": train_params, "seed": seed}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def trained_here(x: torch.Tensor, y: torch.Tensor, *, train_params: dict[str, Any], seed: int = 0,
                 cache_dir: str | os.PathLike | None = None) -> tuple[AdvertorchLeNet5, dict[str, Any]]:
    """advertorch's LeNet-5 trained on (x, y) with ``models.train(**train_params)``
    (initialised under ``torch.manual_seed(seed)``, the global RNG restored), from the
    checkpoint cache when present. Returns (model in eval mode, {"key", "path",
    "from_cache"})."""
    key = _key(x, y, train_params, seed)
    path = models.checkpoint_dir(cache_dir) / f"{NAME}-{key[:20]}.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AdvertorchLeNet5()
    if path.is_file():
        try:
            models.load_checkpoint(model, path, key=key)
            return model.eval(), {"key": key, "path": str(path), "from_cache": True}
        except IntegrityError:
            with torch.random.fork_rng():  # retrain from the same start
                torch.manual_seed(seed)
                model = AdvertorchLeNet5()
    models.train(model, x, y, seed=seed, progress=False, **train_params)
    models.save_checkpoint(model, path, key=key, arch=NAME)
    return model.eval(), {"key": key, "path": str(path), "from_cache": False}
