"""`python -m threatlab ...`; the `threatlab` console script ([project.scripts]) calls
`main` from here too (`threatlab --version`, run, sweep: see `threatlab.run.main`)."""
import sys

from .run import main

# Guarded: Dask's worker processes are spawned and re-import the parent's main module
# (as __mp_main__); without the guard each worker would start the CLI again.
if __name__ == "__main__":
    sys.exit(main())
