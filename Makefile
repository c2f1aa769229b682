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
SETUP_FREE_GB ?= 8
# Never reach a model hub: every weight comes from an installed PyPI package.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export QT_QPA_PLATFORM := offscreen

.PHONY: setup demo test lint bench bench-speed bench-gpu clean package package-zip

setup: $(STAMP)

$(STAMP):
	@dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { \
	  echo "Installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); }
	@# PyPI's torch for x86_64 is the CUDA build (about 6 GB with its libraries): say so up front
	@# rather than let pip fail half-way with "No space left on device".
	@ls -d $(VENV)/lib/python3*/site-packages/torch >/dev/null 2>&1 || { \
	  free=$$(df -Pk "$$(dirname $(VENV))" | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  test "$$free" -ge $(SETUP_FREE_GB) || { \
	    echo "setup: $(SETUP_FREE_GB) GB free needed for $(VENV) (torch and its CUDA libraries), $$free GB free."; \
	    echo "       Free some space (or point VENV= at a larger disk) and run make again."; exit 1; }; }
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
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

# The Scale section keeps its galleries (GBs) and figures in SCALE_WORK and resumes from them.
# BENCH_ARGS="--section predict-scaling --work DIR" runs that section of benchmarks.run alone.
# `$(PY) -m benchmarks.run --section table1|encoders --objectives a,b` measures some rows again.
SCALE_WORK ?= $(HOME)/.cache/swclip/bench-scale
bench: setup
	$(PY) -m benchmarks.run $(BENCH_ARGS)
	$(PY) -m benchmarks.scale --work $(SCALE_WORK)

# The Speed section of benchmarks/results.md alone (fp32 and bf16 side by side); resumable:
# BENCH_WORK keeps what was measured, so an interrupted run continues where it stopped.
BENCH_WORK ?= /tmp/swclip-bench-speed
bench-speed: setup
	$(PY) -m benchmarks.speed --work $(BENCH_WORK)

# The GPU path (finetune and cached training, localization; fp32 against --precision auto). On a
# machine without CUDA it says so and exits 0.
bench-gpu: setup
	$(PY) -m benchmarks.gpu

# The installable plugin zip, dist/swclip_qgis.<version>.zip, from COMMITTED files only (qgis-plugin-ci
# builds from `git archive`; commit first). swclip_core, requirements.txt and resources (without the
# 32 MB of sample photos) ride along in swclip_qgis/bundled/, where the plugin looks for them; no
# weights, no compiled code. Then a Bandit scan of the zip's contents at medium severity.
PLUGIN_VERSION = $(shell sed -n 's/^version=//p' metadata.txt)
BUNDLE := swclip_qgis/bundled
ZIP := swclip_qgis.$(PLUGIN_VERSION).zip
package: setup
	@$(MAKE) --no-print-directory package-zip

# The packaging steps alone, with an environment that already has qgis-plugin-ci and bandit.
package-zip:
	@test -z "$$(git status --porcelain --untracked-files=no)" || \
	  { echo "package: commit your changes first (the zip holds committed files only)"; exit 1; }
	rm -rf $(BUNDLE) && mkdir -p $(BUNDLE) dist
	git archive HEAD swclip_core resources requirements.txt | \
	  tar -x -C $(BUNDLE) --exclude='resources/sample_data/photos'
	# qgis-plugin-ci leaves its git-archive tarball (8 MB) in the temporary folder: give it ours
	mkdir -p build/package-tmp
	TMPDIR=$(CURDIR)/build/package-tmp $(VENV)/bin/qgis-plugin-ci package $(PLUGIN_VERSION) \
	  -a $(BUNDLE); status=$$?; rm -rf $(BUNDLE) build/package-tmp; exit $$status
	mv $(ZIP) dist/$(ZIP)
	rm -rf build/package-scan && mkdir -p build/package-scan
	$(PY) -m zipfile -e dist/$(ZIP) build/package-scan
	@! find build/package-scan \( -name '*.pyc' -o -name '*.so' -o -name '*.pyd' -o -name '*.dll' \
	  -o -name '*.pt' -o -name '*.pth' -o -name '*.safetensors' -o -name '*.bin' -o -name '*.onnx' \) \
	  | grep . || { echo "package: compiled code or weights in the zip"; exit 1; }
	$(VENV)/bin/bandit -r build/package-scan --severity-level medium -q
	@echo "built dist/$(ZIP)"

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache
