# The two commands: `make run` and `make test`. Each builds .venv/ on first use and never prompts.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[worker,dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py run_demo --port $${PORT:-8000}

# Two processes (pytest-xdist; tests/processes.py keeps their files, databases and brokers apart): most
# tests wait on servers and workers, so the second one fills the first one's waits. TEST_PROCESSES=0 runs
# the suite in this process alone.
TEST_PROCESSES ?= 2

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf var/
