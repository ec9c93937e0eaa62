# Two commands do everything (see README.md):
#   make demo   installs, then runs the whole pipeline on the embedded phantom (dvc repro)
#   make test   installs, then runs the test suite
PYTHON ?= python3
# The one place torch is pinned. A torch already installed (e.g. your CUDA build) is kept.
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test lint clean-demo

install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -e ".[dev]"

demo: install
	dvc repro

test: install
	$(PYTHON) -m pytest -ra

lint: install
	snakemake --lint
