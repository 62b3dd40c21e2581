# sepconv: `make test` and `make demo` each work on a fresh clone with nothing installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS ?= dev,nn,io,dask,experiments,gpu
STAMP  := $(VENV)/.installed-$(EXTRAS)

.PHONY: all venv test lint typecheck demo bench clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Re-install when the project metadata or the pins change.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The engine tests run a second time with numba's bounds checking on (and a separate cache so
# no unchecked compiled code is reused): an indexing bug then fails instead of corrupting memory.
# Both passes spread the tests over every core (pytest-xdist; PYTEST_WORKERS=0 runs them in one
# process).
PYTEST_WORKERS ?= auto
test: lint typecheck
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS)
	NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=$(CURDIR)/.numba-boundscheck $(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) -m "engine and not out_of_core" -p no:cacheprovider

demo: $(STAMP)
	$(VENV)/bin/sepconv demo

# Side-by-side benchmarks (peers: scipy, OpenCV, SimpleITK, torch); writes benchmarks/results/.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS),bench]"
	touch $@

bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)
	$(PY) benchmarks/bench_dask.py $(BENCH_DASK_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
