# Two commands for a fresh clone:  make demo   and   make test
# Both create .venv if missing and install the project into it (CPU torch, from the package index).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

$(BIN)/llm-forget: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/llm-forget

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/llm-forget demo --output runs/demo --overwrite

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
