# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv when missing and (re)install only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mailtriage demo

lint: $(STAMP)
	$(BIN)/ruff check mailtriage tests bench
	$(BIN)/ruff format --check mailtriage tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/extraction.py
	$(BIN)/python bench/prompt_tokens.py
	$(BIN)/python bench/classification.py melusine
	$(BIN)/python bench/graph_e2e.py --messages 60
	$(BIN)/python bench/gmail_e2e.py --mailboxes 1 --mailboxes 10 --latency-ms 0

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
