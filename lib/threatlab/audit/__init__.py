"""`threatlab audit`: one command that runs the four threat families of the survey
(He et al., "Towards Security Threats of Deep Learning Systems", arXiv 1911.12562) on a
user's own PyTorch model and writes a self-contained HTML report and a JSON file.

Modules: `args` (flags and their checks), `loading` (the user's model, weights and
data), one module per section (`evasion`, `membership`, `extraction`, `backdoor`),
`accounting` (wall time and query counts per section), `report` (JSON and HTML) and
`cli` (the order of work and the exit codes). Sections reuse the library's kernels
and protocols; nothing here re-implements an attack.

    $ python -m threatlab audit --model mynet.py:build --weights mynet.safetensors \\
          --data mnist --out audit-report
"""
from .cli import audit, main

__all__ = ["audit", "main"]
