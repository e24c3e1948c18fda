# neverstop: every set-up step a fresh Debian 12 machine needs lives here.
#   make venv   .venv with the package (editable) and its test tools
#   make test   lint, type-check the pure core, run the tests
#   make demo   one documented scenario, with its timeline plot
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo clean

venv: $(STAMP)

# Debian ships the venv module's pip bootstrap (ensurepip) in a separate package:
# install it when missing (as root, or through sudo), else say what to install.
$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "need python3.11 (apt-get install python3.11)" >&2; exit 1; fi
	@if [ ! -x $(BIN)/pip ]; then \
	  rm -rf $(VENV); \
	  if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update && apt-get install -y python3-venv; \
	    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	      sudo apt-get update && sudo apt-get install -y python3-venv; \
	    else \
	      echo "$(PYTHON) cannot create a venv: install python3-venv" >&2; exit 1; \
	    fi; \
	  fi; \
	  echo "$(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check actors sim real tests
	$(BIN)/mypy actors

test: venv lint
	$(BIN)/pytest -q

demo: venv
	$(BIN)/neverstop sim run scenarios/shared-host-power-loss.toml --plot demo-timeline.png
	@echo "timeline plot: $(CURDIR)/demo-timeline.png"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-timeline.png
