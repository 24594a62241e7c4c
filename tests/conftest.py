import os

import pytest
import torch

# Tests never draw progress bars and use one intra-op thread: their models are tiny, so a
# second thread only adds synchronisation, and on a loaded 2-core box a descheduled
# worker thread stalls every op (measured up to 100x slower).
os.environ.setdefault("THREATLAB_NO_PROGRESS", "1")
torch.set_num_threads(1)


@pytest.fixture
def digits():
    """scikit-learn's 8x8 digits as [n,1,8,8] in [0,1]: tiny, offline, real."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y
