# xcal: two commands. `make run` executes every notebook (workshop profile); `make test` runs the tests.
# Both create .venv on first use and reuse it while the pinned requirements are unchanged.

PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     ?= .venv
PY       := $(VENV)/bin/python
PROFILE  ?= workshop
NOTEBOOKS ?=
PYTEST_ARGS ?= -n 2
TORCH    ?= default
PINS     := requirements.txt requirements-nodeps.txt pyproject.toml
STAMP    := $(VENV)/.xcal-pins-$(shell cat $(PINS) | sha256sum | cut -c1-16)

.PHONY: run test venv data kernel bench lab book retrain seeds clean-runs help

help:
	@echo "make run    execute notebooks/ in number order (PROFILE=$(PROFILE)) -> papermill_runs/$(PROFILE)/"
	@echo "make test   run the whole test suite (unit tests + smoke execution of every notebook)"
	@echo "make lab    start JupyterLab with the xcal kernel"
	@echo "make bench  run the benchmarks in benchmarks/"
	@echo "make retrain  train every workshop model again (ignoring checkpoints/) and ship the new checkpoints"
	@echo "make seeds  the workshop profile over 5 seeds (Dask, 2 workers) -> papermill_runs/seeds_summary/"
	@echo "make book   render the reference run into a static web site in site/ (open site/index.html)"
	@echo "make venv TORCH=cpu   the environment with PyTorch's CPU-only wheels (laptops without a GPU)"
	@echo "make data   make sure the real Fashion-MNIST files are there (installs Debian's dataset-fashion-mnist as root)"

venv: $(STAMP)

# TORCH=cpu installs PyTorch's CPU-only wheels (about 1 GB instead of ~5 GB of CUDA libraries on Linux)
# from https://download.pytorch.org/whl/cpu, then the rest of the pins. Our own machines reach only PyPI,
# so that path is not exercised by our CI. macOS and Windows wheels on PyPI are CPU builds already.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

$(STAMP): $(PINS)
	@if [ -z "$(PYTHON)" ] || ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then \
	  echo "xcal needs Python 3.11 (the pinned set is tested on it); found: $$($(PYTHON) --version 2>&1 || echo none)."; \
	  echo "Install python3.11 (e.g. apt-get install python3.11 python3.11-venv, brew install python@3.11, pyenv)"; \
	  echo "or point make at one: make PYTHON=/path/to/python3.11 ..."; exit 1; fi
	@case "$(TORCH)" in default|cpu) ;; *) echo "TORCH must be 'default' or 'cpu', got '$(TORCH)'"; exit 1;; esac
	@mkdir -p $(VENV) && date +%s > $(VENV)/.xcal-install-start
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned environment into $(VENV) (first time: a few minutes, ~6 GB; TORCH=cpu: ~2 GB)"
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip --upgrade >/dev/null
	@if [ "$(TORCH)" = cpu ]; then \
	  $(PY) -m pip install -q --index-url $(TORCH_CPU_INDEX) "$$(grep '^torch==' requirements.txt)" \
	    "$$(grep '^torchvision==' requirements.txt)" || exit 1; fi
	@if $(PY) -m pip install -q uv >/dev/null 2>&1; then \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements.txt && \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) --no-deps -r requirements-nodeps.txt && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e . ; \
	else \
	  $(PY) -m pip install -q -r requirements.txt && \
	  $(PY) -m pip install -q --no-deps -r requirements-nodeps.txt && \
	  $(PY) -m pip install -q --no-deps -e . ; \
	fi
	@$(PY) -m ipykernel install --sys-prefix --name xcal --display-name "Python (xcal)" >/dev/null
	@rm -f $(VENV)/.xcal-pins-*
	@echo $$(( $$(date +%s) - $$(cat $(VENV)/.xcal-install-start) )) > $(VENV)/.xcal-install-seconds
	@touch $(STAMP)

# Real data, offline: the official Fashion-MNIST idx files. Found under DATA_DIR/fashion-mnist,
# DATA_DIR/FashionMNIST/raw or /usr/share/datasets/fashion-mnist; when none has them and apt-get can run
# (as root), Debian's package dataset-fashion-mnist (30 MB) is installed; otherwise this says what to run.
FIND_FMNIST := $(PY) -c "import sys; from xcal_core.data.fashion_mnist import find_fashion_mnist; sys.exit(find_fashion_mnist() is None)"
FMNIST_HELP := sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist

data: venv
	@if $(FIND_FMNIST) 2>/dev/null; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Fashion-MNIST missing: installing Debian's dataset-fashion-mnist (30 MB) with apt-get"; \
	  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; } || \
	  { echo "apt-get could not install dataset-fashion-mnist; see README (Data)"; exit 1; }; \
	  $(FIND_FMNIST) || { echo "dataset-fashion-mnist installed, but its files are not where expected"; exit 1; }; \
	else \
	  echo "The real Fashion-MNIST files are missing, and this make cannot install them (needs apt-get and root)."; \
	  echo "Do one of:"; \
	  echo "  1. $(FMNIST_HELP)"; \
	  echo "  2. copy the four official idx files (train-images-idx3-ubyte.gz, ...) into data/fashion-mnist/"; \
	  echo "  3. run a notebook with ALLOW_DOWNLOAD=True to download them with torchvision"; \
	  exit 1; \
	fi

kernel: venv
	@$(PY) -m ipykernel install --sys-prefix --name xcal --display-name "Python (xcal)"

# The full workshop run (every notebook, 06_reproduction_report last) refreshes the committed
# reference run papermill_runs/reference/; a partial or other-profile run does not.
REFERENCE := $(if $(NOTEBOOKS),,$(if $(filter workshop,$(PROFILE)),--reference papermill_runs/reference,))

run: venv data
	$(PY) -m xcal_core.run --profile $(PROFILE) $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS),) $(REFERENCE)
	@$(if $(REFERENCE),$(PY) -m xcal_core.docs,true)

test: venv data
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The shipped workshop checkpoints (checkpoints/) are what a full workshop run trains from an empty
# cache; retrain reproduces them: a fresh cache, shipped checkpoints off, every notebook, then ship.
RETRAIN_CACHE := .cache/retrain

retrain: venv data
	rm -rf $(RETRAIN_CACHE) papermill_runs/retrain
	XCAL_SHIPPED_CHECKPOINTS=off XCAL_CACHE_DIR=$(CURDIR)/$(RETRAIN_CACHE) $(PY) -m xcal_core.run --profile workshop \
	  --out papermill_runs/retrain
	$(PY) -m xcal_core.checkpoints --ship-from $(RETRAIN_CACHE)

# The seeds sweep: notebooks 01-05 over seeds 0-4 (then the report), summarised across seeds.
seeds: venv data
	$(PY) -m xcal_core.run --sweep papermill_runs/sweeps/seeds.yaml --executor dask --workers 2 \
	  --summary papermill_runs/seeds_summary
	$(PY) -m xcal_core.docs

# The reference run as a static site (git-ignored, built on demand). With Chromium installed
# (Debian: apt-get install chromium), also a screenshot of the index, to see what a reader sees.
CHROMIUM := $(shell command -v chromium || command -v chromium-browser || command -v google-chrome)

book: venv
	$(PY) -m xcal_core.book --runs papermill_runs/reference --out site
	@if [ -n "$(CHROMIUM)" ]; then \
	  $(CHROMIUM) --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
	    --disable-component-update --disable-sync --hide-scrollbars --window-size=1280,1800 \
	    --screenshot=site/index.png "file://$(CURDIR)/site/index.html" >/dev/null 2>&1 && \
	  echo "screenshot of the index: site/index.png"; fi

lab: venv
	$(VENV)/bin/jupyter lab notebooks/

clean-runs:
	rm -rf papermill_runs/smoke papermill_runs/workshop papermill_runs/interactive
