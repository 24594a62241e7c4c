"""What turns measurements into files, verdicts and figures: results files with
provenance (`results`), the verdict machinery (`verdicts`, `stats`), the findings and
their judges (`findings`, `judges`), the surveyed papers' numbers (`literature`) and
figures and tables (`plotting`).

    >>> from threatlab.report import findings, plotting, results

report/ reads measurements; it never trains a model or runs an attack. Submodules load
on first use, so importing the machinery (`report.verdicts`) does not load the judges.
"""
import importlib

__all__ = ["findings", "literature", "plotting", "results", "stats", "verdicts"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
