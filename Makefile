# Parley: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PROTOS := $(wildcard protos/parley/v1/*.proto)
PB_DIR := services/common/pb

.PHONY: install proto proto-check up down status run demo test test-unit bench clean

$(VENV)/.installed: pyproject.toml
	@echo "==> Python environment ($(VENV))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --progress-bar on -q --upgrade pip
	@$(PIP) install --progress-bar on -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
	@$(PY) -m deploy.local install

# Generated code lives in one package under services/common/pb; imports are rewritten so
# that it is importable as services.common.pb.parley.v1.
proto: $(VENV)/.installed
	@bash protos/generate.sh $(PY) $(PB_DIR)

# CI: regenerating must not change the committed code.
proto-check: $(VENV)/.installed
	@tmp=$$(mktemp -d) && bash protos/generate.sh $(PY) $$tmp/pb && \
	  diff -r -x __pycache__ $$tmp/pb $(PB_DIR) && echo "generated protobuf code is up to date"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

up: install
	@$(PY) -m services.cli up

down:
	@if [ -x $(PY) ]; then $(PY) -m services.cli down; else echo "nothing to stop"; fi

status: $(VENV)/.installed
	@$(PY) -m deploy.local status

run: install
	@$(PY) -m services.cli run

demo: install
	@$(PY) -m services.cli run --stop

test: install proto-check
	@bash .ci/test.sh

test-unit: $(VENV)/.installed
	@$(PY) -m pytest -q tests -m "not integration"

bench: up
	@$(PY) -m bench $(ARGS)

clean: down
	rm -rf .local $(VENV)
