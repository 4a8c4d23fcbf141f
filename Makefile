# virtio-pcie: the two commands of the README, and the set-up they share.
#
#   make demo   set up, then build the device, enumerate it, do I/O and show the result
#   make test   set up, then run every test that is not marked slow
#
# Set-up creates (or reuses) the project's virtual environment in .venv and installs the exact
# versions in requirements.lock; it is redone only when pyproject.toml or the lock file change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: venv demo test test-all lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--no-build-isolation -e .
	@touch $@

demo: $(STAMP)
	$(BIN)/virtio-pcie demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) $(PYTEST_ARGS)

clean:
	rm -rf sim_build
