# Two commands for a new machine:
#   make run    set up a local virtualenv and talk to the bot in this terminal (SQLite, local key)
#   make test   set up the virtualenv with the test tools and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PTB_TIMEDELTA := 1

.PHONY: run test serve setup setup-dev clean

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

serve: setup
	$(BIN)/python main.py serve

test: setup-dev
	scripts/ensure-postgres
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
