"""Black-box access to a model: what an attacker of a deployed API sees.

`BlackBox` wraps a model behind one of the output modes that ML-as-a-service APIs
offer (full probabilities, top-k, label only, rounded probabilities), counts every
query per example, and enforces an optional budget. The same object serves every
family: score- and decision-based evasion, extraction (Tramèr et al. 2016) and
membership inference (Shokri et al. 2017), so query numbers are counted, never assumed.
"""
from __future__ import annotations

import numpy as np
import torch

from . import runtime, validate
from .pooling import fast_max_pool
from .errors import QueryBudgetExceeded

MODES = ("probs", "topk", "label", "rounded")

#: How far outside [0, 1] a query may lie: attacks query blends of in-box images that
#: float32 rounding can push a few ulps (~1e-7) past the box; anything farther is an
#: input the API refuses.
QUERY_TOLERANCE = 1e-6


class BlackBox:
    """A model behind an API.

    Args:
        model: maps inputs in [0, 1] to logits; only ever called under no_grad.
        mode: "probs" (softmax), "topk" (softmax with all but the k largest set to 0),
            "label" (argmax, int64), "rounded" (softmax rounded to `decimals`).
        k: classes kept by "topk".
        decimals: digits kept by "rounded".
        budget: maximum queries per example (None: unlimited).
        total_budget: maximum queries in all (None: unlimited).
        max_batch: most rows sent through the model at once (int > 0). Default None:
            `runtime.row_chunk` (128 rows on CPU, unlimited elsewhere; a kernel's
            ``batch_size=`` while it runs, which also lowers a larger max_batch). Decision-based
            attacks ask for tens of thousands of rows in one call (HopSkipJump's
            gradient probes); on a CPU that costs 2.5x more per row than chunks of 128
            whose activations stay in cache. Answers do not depend on the chunking.
            The model runs under `pooling.fast_max_pool` (its NCHW max-pooling computed
            as element-wise maxima on the CPU): the same bits, about half the forward
            time on pooling CNNs.
        keep_log: also keep every query (input rows, on the CPU) and the victim's top-1
            label on it, in arrival order, for a defender's stream monitor such as
            PRADA (`query_log`). Default False: nothing is stored.

    Counts: `queries` (numpy int64, one per example id) and `total`. A query of a batch
    without `ids` is charged to ids 0..n-1; attacks that query a subset pass `ids`.

    Queries are checked before they are charged or answered: a floating tensor of
    finite values in [0, 1] (up to `QUERY_TOLERANCE` of rounding) with the model's input shape, dtype and device
    (`validate.images` / `validate.model_input`; ConfigError otherwise). A deployed API
    would reject a malformed request too, and an answer to a NaN or out-of-range input
    would be counted as evidence. This costs one host sync per call. A query of zero
    rows is answered with zero rows and costs nothing (attacks query shrinking subsets).

        >>> bb = BlackBox(model, mode="label", budget=1000)
        >>> labels = bb(x)              # one query for each row of x
        >>> bb.queries[:3], bb.total
    """

    def __init__(self, model: torch.nn.Module, *, mode: str = "probs", k: int = 1,
                 decimals: int = 2, budget: int | None = None, total_budget: int | None = None,
                 max_batch: int | None = None, keep_log: bool = False):
        validate.choice("mode", mode, MODES)
        validate.positive("k", k, integer=True)
        validate.non_negative("decimals", decimals, integer=True)
        if budget is not None:
            validate.positive("budget", budget, integer=True)
        if total_budget is not None:
            validate.positive("total_budget", total_budget, integer=True)
        if max_batch is not None:
            validate.positive("max_batch", max_batch, integer=True)
        self.model = model
        self.mode = mode
        self.k = k
        self.decimals = decimals
        self.budget = budget
        self.total_budget = total_budget
        self.max_batch = max_batch
        self.keep_log = validate.of_type("keep_log", keep_log, bool)
        self.queries = np.zeros(0, dtype=np.int64)
        self.total = 0
        self._log: list[tuple[torch.Tensor, torch.Tensor]] = []

    def reset(self) -> None:
        """Forget all counts (and the query log)."""
        self.queries = np.zeros(0, dtype=np.int64)
        self.total = 0
        self._log = []

    def _charge(self, n: int, ids: torch.Tensor | np.ndarray | None) -> None:
        # Counts live on the host: the batch size is known without a device sync, and
        # subset ids come from masks that already synchronised.
        idx = np.arange(n) if ids is None else np.asarray(
            ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1)
        if idx.shape[0] != n:
            raise ValueError(f"ids has {idx.shape[0]} entries for a batch of {n}")
        if idx.size and idx.min() < 0:
            raise ValueError("ids must be non-negative")
        need = int(idx.max()) + 1 if idx.size else 0
        if need > self.queries.shape[0]:
            self.queries = np.concatenate([self.queries, np.zeros(need - self.queries.shape[0], np.int64)])
        if self.total_budget is not None and self.total + n > self.total_budget:
            raise QueryBudgetExceeded(
                f"total_budget={self.total_budget} would be exceeded: {self.total} used, {n} more asked")
        added = np.bincount(idx, minlength=self.queries.shape[0])
        if self.budget is not None:
            over = np.nonzero(self.queries + added > self.budget)[0]
            if over.size:
                raise QueryBudgetExceeded(
                    f"budget={self.budget} queries per example would be exceeded for "
                    f"{over.size} example(s), e.g. id {int(over[0])}")
        self.queries += added
        self.total += n

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, ids: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Answer one query per row of `x` in this oracle's output mode."""
        self._check_query(x)
        self._charge(x.shape[0], ids)
        logits = self._forward(x)
        if self.keep_log:
            self._log.append((x.detach().cpu(), logits.argmax(1).cpu()))
        if self.mode == "label":
            return logits.argmax(1)
        p = torch.softmax(logits, 1)
        if self.mode == "probs":
            return p
        if self.mode == "topk":
            kth = p.topk(min(self.k, p.shape[1]), dim=1).values[:, -1:]
            return torch.where(p >= kth, p, torch.zeros_like(p))
        scale = 10.0 ** self.decimals
        return torch.round(p * scale) / scale

    def _check_query(self, x: torch.Tensor) -> None:
        validate.images("query x", x, nonempty=False, tol=QUERY_TOLERANCE)
        validate.model_input(self.model, x, name="query x")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.max_batch is not None:
            # A kernel's batch_size= (runtime.rows_per_call) may only lower the API's own cap.
            step = min(self.max_batch, runtime.rows_requested() or self.max_batch)
            parts = [x[i:i + step] for i in range(0, x.shape[0], step)]
        else:
            parts = [x[rows] for rows in runtime.row_slices(x.shape[0], x.device)]
        # Bit-identical answers, in about half the CPU time on pooling CNNs (`pooling`).
        with fast_max_pool():
            if len(parts) <= 1:
                return self.model(x)
            return torch.cat([self.model(part) for part in parts])

    def query_log(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every query answered so far, in arrival order: (inputs [N, ...] on the CPU,
        the victim's top-1 labels Long [N]). Needs keep_log=True (ValueError otherwise)."""
        if not self.keep_log:
            raise ValueError("this BlackBox was made with keep_log=False: it keeps no query log")
        if not self._log:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return torch.cat([x for x, _ in self._log]), torch.cat([y for _, y in self._log])

    def count(self, ids: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Queries charged so far, per id (all ids when None), as an int64 tensor."""
        q = torch.from_numpy(self.queries.copy())
        return q if ids is None else q[torch.as_tensor(ids, dtype=torch.long).cpu()]
