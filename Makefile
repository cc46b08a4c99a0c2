# The two commands of the README: `make demo` and `make test`.
# Both work on a fresh machine: they create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $(STAMP)

install: $(STAMP)

# System tools of the tests (Debian packages): chromium and its chromedriver for the
# worklist's browser test, promtool (package prometheus) to check deploy/prometheus.
TOOLS := $(VENV)/.system-tools
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
$(TOOLS): $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  command -v promtool >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends \
	    chromium chromium-driver prometheus; }
	touch $@

demo: $(STAMP)
	$(BIN)/telemon demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck $(TOOLS)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
