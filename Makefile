# Two set-up commands: `make demo` and `make test`. Everything else is here for people and CI alike.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck check bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/clearance demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Unit, SQLite and PostgreSQL integration, acceptance tests (the real CLI in a subprocess) and the
# console's browser tests (Debian's chromium; under CI a missing browser fails, elsewhere the
# tests are skipped and counted in the summary).
# PostgreSQL: CLEARANCE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/scheduled.py --database both

screenshots: $(STAMP)
	$(BIN)/python scripts/console_screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
