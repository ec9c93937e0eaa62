# Two commands do everything (see README.md):
#   make demo   installs, then runs the whole pipeline on the embedded phantom (dvc repro)
#   make test   installs, then runs lint (ruff, mypy, snakemake --lint) and the test suite
# Both install into a virtual environment: the active one ($VIRTUAL_ENV) if there is one,
# else ./.venv, created fresh from python3. Nothing installed elsewhere on the machine is used.
SYSTEM_PYTHON ?= python3
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
PYTHON := $(VENV)/bin/python
# the venv's console scripts (pcrl, dvc, snakemake) come first for every recipe and test
export PATH := $(VENV)/bin:$(PATH)
# The one place torch is pinned. A torch already installed (e.g. your CUDA build) is kept.
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test lint study clean-demo

$(PYTHON):
	$(SYSTEM_PYTHON) -m venv $(VENV)

install: $(PYTHON)
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -e ".[dev]"

demo: install
	dvc repro

# The known-answer study (pcrl/runners/study.py, configs/study.yaml): about an hour on 2 CPU cores.
study: install
	$(PYTHON) -m pcrl.runners.study --config configs/study.yaml --out results/study

lint: install
	ruff check pcrl tests benchmarks
	mypy
	snakemake --lint

test: install lint
	$(PYTHON) -m pytest -ra
