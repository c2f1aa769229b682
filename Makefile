# Two commands on a fresh Debian 12 machine (root, no internet but package registries):
#   make demo   # installs what it needs, trains SW-CLIP and plain CLIP offline, writes demo_output/
#   make test   # installs what it needs, runs ruff and the whole pytest suite
# Both are idempotent: a second run re-installs nothing unless requirements changed.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-qgis qgis-providers python3-venv python3-pip
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt pyproject.toml | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)
# Never reach a model hub: every weight comes from an installed PyPI package.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export QT_QPA_PLATFORM := offscreen

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP):
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  echo "Installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); }
	@# Debian's interpreter, not pyenv's: only it can import Debian's qgis bindings.
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(VENV)/bin/swclip demo --out demo_output

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
