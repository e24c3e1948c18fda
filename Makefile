# neverstop: every set-up step a fresh Debian 12 machine needs lives here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check actors sim real tests
	$(BIN)/mypy actors

test: lint
	$(BIN)/pytest -q

demo: venv
	$(BIN)/neverstop sim run scenarios/shared-host-power-loss.toml --plot demo-timeline.png
	@echo "timeline plot: $(CURDIR)/demo-timeline.png"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-timeline.png
