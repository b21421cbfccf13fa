# Two set-up-and-go commands (see README):  make demo   |   make test
# Each builds .venv on first use. TORCH_SPEC can be overridden for a CUDA build, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hf-persona-installed

.PHONY: venv demo test clean

$(STAMP): pyproject.toml plugins/hf-persona-distinct/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q -e plugins/hf-persona-distinct
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/hf-persona demo --out demo_report

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_report
