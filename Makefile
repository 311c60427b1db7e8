# accel-det: `make test` and `make demo` build .venv on first use (see docs/install.md).
SHELL := /bin/bash

VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
TORCH_PINS  ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: venv test lint format demo clean-venv

venv: $(STAMP)

# Idempotent: re-runs only when setup.py or the detectron2 installer change (or the stamp is gone).
$(STAMP): setup.py tools/install_detectron2.py
	@if [ ! -x $(PY) ]; then \
	  if command -v python3.11 >/dev/null 2>&1 && python3.11 -c 'pass' >/dev/null 2>&1; then boot=python3.11; else boot=python3; fi; \
	  echo "creating $(VENV) with $$boot ($$($$boot --version))"; \
	  $$boot -m venv $(VENV); \
	fi
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -e '.[test,deploy]'
	@touch $@

test: venv
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# ruff (ruff.toml): lint (pycodestyle, pyflakes, isort) and the formatter's check, 100 columns
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --select I --fix .
	$(VENV)/bin/ruff format .

demo: venv
	$(PY) tools/demo.py

clean-venv:
	rm -rf $(VENV)
