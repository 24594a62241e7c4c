"""What turns measurements into files, verdicts and figures: results files with
provenance (`results`), the findings and their judges (`findings`), the surveyed papers'
numbers (`literature`) and figures and tables (`plotting`).

    >>> from threatlab.report import findings, plotting, results

report/ reads measurements; it never trains a model or runs an attack.
"""
from . import findings, literature, plotting, results

__all__ = ["findings", "literature", "plotting", "results"]
