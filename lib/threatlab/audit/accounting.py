"""What each audit section cost: wall time and the model's query counts.

Every section runs the user's model behind one `protocols.evasion.PassCounter` (rows
through a forward pass, rows through a gradient pass), so white-box and black-box work
are counted the same way; sections that ask the model through `oracle.BlackBox` also
report that counter's totals (the queries an attacker of a deployed API would send).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from ..protocols.evasion import PassCounter

__all__ = ["Ledger", "add_queries", "measure"]


class Ledger(dict):
    """A section's costs: seconds, forward_rows, backward_rows, black_box_queries."""


@contextmanager
def measure(counter: PassCounter) -> Iterator[Ledger]:
    """Time the block and count the rows `counter` saw during it. The ledger is filled
    when the block ends; black-box totals are added by the section itself."""
    ledger = Ledger()
    f0, b0, t0 = counter.forward_rows, counter.backward_rows, time.perf_counter()
    try:
        yield ledger
    finally:
        ledger.update(seconds=round(time.perf_counter() - t0, 2), forward_rows=counter.forward_rows - f0,
                      backward_rows=counter.backward_rows - b0)
        ledger.setdefault("black_box_queries", None)


def add_queries(ledger: dict[str, Any], **totals: int) -> None:
    """Record BlackBox totals by oracle name (their sum under black_box_queries)."""
    ledger["black_box_by_oracle"] = {k: int(v) for k, v in totals.items()}
    ledger["black_box_queries"] = int(sum(totals.values()))
