# neverstop: every set-up step a fresh Debian 12 machine needs lives here.
#   make venv   .venv with the package (editable) and its test tools
#   make test   lint, type-check the pure core, run the tests
#   make demo   one documented scenario, with its timeline plot
#   make notebooks  run the notebooks, figures into notebooks/figures/
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv deps test lint demo lab clean

venv: $(STAMP)

# Debian packages for real mode and its lab (libvirt, qemu) and for building libvirt-python;
# installed only when one is missing, before the venv install that compiles libvirt-python.
DEB_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils \
	libvirt-dev pkg-config gcc python3-dev iproute2 bridge-utils
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "need root to install:" $$missing >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Debian ships the venv module's pip bootstrap (ensurepip) in a separate package:
# install it when missing (as root, or through sudo), else say what to install.
$(STAMP): pyproject.toml | deps
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
	$(BIN)/ruff check actors formats sim real neverstop tests bench
	$(BIN)/mypy actors

# The lab tests (real libvirtd and qemu guests in network namespaces, about 4.5 minutes) run
# after the rest; under CI=true a lab that cannot be built fails them instead of skipping.
test: venv lint
	$(BIN)/pytest -q
	NEVERSTOP_LAB=1 $(BIN)/pytest -q -m lab tests/real

# The real-mode lab: three namespaced hosts with libvirtd and tiny qemu guests (root only).
lab: venv
	$(BIN)/pytest -q -m lab tests/real

demo: venv
	$(BIN)/neverstop sim run scenarios/shared-host-power-loss.toml --plot demo-timeline.png
	@echo "timeline plot: $(CURDIR)/demo-timeline.png"

# Execute the notebooks (recovery timelines, recovery times, tuning; a few minutes on 2 cores)
# and write their figures to notebooks/figures/ (not versioned); the .ipynb files stay clean.
.PHONY: notebooks
notebooks: venv
	$(BIN)/python notebooks/run.py

# Benchmarks (about 3 minutes): every table printed with its command; docs/benchmarks.md rewritten.
.PHONY: bench bench-wire bench-real
bench: venv
	$(BIN)/python -m bench.run all --docs docs/benchmarks.md

# What signing Thespian's frames costs: messages/s between two actor processes on loopback,
# plain and signed (about 6 minutes; the figures are in docs/real-mode.md, "The cost").
bench-wire: venv
	$(BIN)/python -m bench.wire

# Real mode under load on loopback (about 15 minutes): 8, 32, 64 and 128 hosts of 50 VMs;
# the table goes into docs/benchmarks.md's real-mode section (make bench keeps it).
bench-real: venv
	$(BIN)/python -m bench.real_load --hosts 8,32,64,128 --vms 50 --docs docs/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-timeline.png
