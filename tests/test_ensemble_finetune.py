"""`ensemble.finetune_ensemble` against its reference: each copy fine-tuned alone with
`models.train` from the same trained weights, on the same rows, with the same seed."""
from __future__ import annotations

import copy

import pytest
import torch

from threatlab import ensemble, models
from threatlab.errors import ConfigError


@pytest.mark.parametrize("arch,arch_params", [("mlp", {"hidden": (16,)}), ("cnn", {})])
def test_finetune_ensemble_equals_sequential(digits, arch, arch_params):
    x, y = digits
    x, y = x[:300], y[:300]
    model = models.build(arch, in_shape=(1, 8, 8), num_classes=10, seed=0, **arch_params)
    models.train(model, x[:200], y[:200], epochs=1, batch_size=64, progress=False)
    before = copy.deepcopy(model.state_dict())
    # Three copies: the shared rows 200..259 plus 5 rows of their own (like 5 poisons per target).
    own = torch.arange(260, 275).view(3, 5)
    indices = torch.cat([torch.arange(200, 260).expand(3, 60), own], dim=1)
    ens = ensemble.finetune_ensemble(model, x, y, indices, seeds=[4, 5, 6], epochs=2, batch_size=16,
                                     lr=1e-3, progress=False)
    for k, v in model.state_dict().items():          # the trained model is left as it was
        assert torch.equal(v, before[k])
    for m, s in enumerate([4, 5, 6]):
        ref = copy.deepcopy(model)
        models.train(ref, x[indices[m]], y[indices[m]], epochs=2, batch_size=16, lr=1e-3, seed=s, progress=False)
        got = ens.model(m)
        for (k, a), b in zip(ref.state_dict().items(), got.state_dict().values()):
            assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), k


def test_finetune_ensemble_bad_input(digits):
    x, y = digits
    model = models.build("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=(8,))
    with pytest.raises(ConfigError):
        ensemble.finetune_ensemble(model, x, y, torch.arange(10).view(2, 5), seeds=[0], progress=False)
    with pytest.raises(ConfigError):
        ensemble.finetune_ensemble("mlp", x, y, torch.arange(10).view(2, 5), seeds=[0, 1], progress=False)
