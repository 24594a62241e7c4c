"""`python -m threatlab ...`; the `threatlab` console script ([project.scripts]) calls
`main` from here too (`threatlab --version`, run, sweep: see `threatlab.run.main`)."""
import sys

from .run import main as _run_main


def main(argv: list[str] | None = None) -> int:
    """`threatlab run|sweep|audit ...`; audit is dispatched to `threatlab.audit`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["audit"]:
        from .audit.cli import main as audit_main

        return audit_main(args[1:])
    return _run_main(args)


# Guarded: Dask's worker processes are spawned and re-import the parent's main module
# (as __mp_main__); without the guard each worker would start the CLI again.
if __name__ == "__main__":
    sys.exit(main())
