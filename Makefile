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

# llama-cpp-python compiles llama.cpp the first time (about 11 minutes on 2 cores); pip's
# wheel cache makes every later install take seconds. Where it cannot build, the tests
# against the real llama.cpp server skip and say why; under CI the build must succeed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@echo "installing llama-cpp-python (the first build of llama.cpp takes ~11 min on 2 cores)"
	$(BIN)/python -m pip install -e '.[llama]' > $(VENV)/llama-install.log 2>&1 \
		|| { echo "llama-cpp-python not installed, see $(VENV)/llama-install.log"; test -z "$$CI"; }
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
