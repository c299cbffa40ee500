# Two commands for a new machine:
#   make run    set up a local virtualenv and talk to the bot in this terminal (SQLite, local key)
#   make test   set up the virtualenv with the test tools and run the whole test suite
# The real server: make init once (a new line: key ring and database), then make serve.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PTB_TIMEDELTA := 1

.PHONY: run test init serve setup setup-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

run: setup
	$(BIN)/python main.py chat

# A new line, once: the key ring and the empty database (refused where one exists).
init: setup
	$(BIN)/python main.py init

# Never makes a line: without one (make init) it stops with one line saying what is missing.
serve: setup
	$(BIN)/python main.py serve

test: setup-dev
	scripts/ensure-postgres
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
