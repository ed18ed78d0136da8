# Two commands for a new user (see README.md):
#   make run    set up, build the demo bundle if missing, migrate, serve on 127.0.0.1:5000
#   make test   set up, lint, run the whole test suite
# Both are idempotent: a second call reinstalls and retrains nothing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
WORKERS ?= 2
DEMO_DATA := .cache/synthetic-demo
DEMO_BUNDLE := bundles/demo
DEMO_NOTE := Trained on synthetic phantoms only: it knows nothing about real CT scans.

# tcmalloc makes torch on the CPU 2-3x faster here; used when installed, never required.
TCMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
	/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4))
WITH_ALLOCATOR := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC),)

.PHONY: setup run train test lint format demo demo-build demo-export tcmalloc clean

setup: $(STAMP)

# A fresh install (torch is a CUDA build) fills about 6.5 GB: say so before pip runs out of disk.
INSTALL_GB := 7

# Reinstall only when the pinned dependencies change.
$(STAMP): pyproject.toml requirements.lock
	@ls -d $(VENV)/lib/python*/site-packages/torch >/dev/null 2>&1 \
		|| free=$$(df -Pk . | awk 'NR == 2 {print int($$4 / 1048576)}'); \
		if [ -n "$$free" ] && [ "$$free" -lt $(INSTALL_GB) ]; then \
			echo "error: $$free GB free here; installing the dependencies needs about $(INSTALL_GB) GB" >&2; \
			exit 1; \
		fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

# Best effort: Debian's libtcmalloc-minimal4 when we may install packages; skipped otherwise.
tcmalloc:
	@if [ -z "$(TCMALLOC)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
		|| echo "note: libtcmalloc-minimal4 not installed; torch runs without it"; \
	fi

# Rebuilt when missing, damaged, or written by an older version of the bundle format; its
# ONNX and OpenVINO exports (checked on its out-of-fold slices) are made when missing.
demo: $(STAMP)
	@$(PY) -m ml info $(DEMO_BUNDLE) >/dev/null 2>&1 || $(MAKE) --no-print-directory demo-build
	@test -f $(DEMO_BUNDLE)/openvino/manifest.json || $(MAKE) --no-print-directory demo-export

demo-export:
	test -d $(DEMO_DATA) || $(PY) -m ml synth --out $(DEMO_DATA) --patients 40 --slices 8 \
		--size 256 --seed 0 >/dev/null
	$(PY) -m ml export $(DEMO_BUNDLE) --data $(DEMO_DATA)

demo-build:
	rm -rf $(DEMO_DATA) $(DEMO_BUNDLE)
	$(PY) -m ml synth --out $(DEMO_DATA) --patients 40 --slices 8 --size 256 --seed 0 >/dev/null
	$(WITH_ALLOCATOR) $(PY) -m ml train --data $(DEMO_DATA) --preset demo --out $(DEMO_BUNDLE) \
		--quiet --note "$(DEMO_NOTE)" >/dev/null
	$(PY) -m ml export $(DEMO_BUNDLE) --data $(DEMO_DATA)
	$(PY) -m ml info $(DEMO_BUNDLE)

# Your own data: make train DATA=path/to/dataset [PRESET=cpu] [NAME=cpu] [ARGS="--holdout-frac 0.1"]
# Rerunning the same command continues an interrupted run (finished folds are kept).
PRESET ?= cpu
NAME ?= $(PRESET)
train: setup tcmalloc
	@test -n "$(DATA)" || { echo "usage: make train DATA=path/to/dataset [PRESET=cpu] [NAME=cpu]"; exit 2; }
	$(WITH_ALLOCATOR) $(PY) -m ml train --data "$(DATA)" --preset $(PRESET) --out bundles/$(NAME) \
		--resume $(ARGS)

run: setup tcmalloc
	@$(MAKE) --no-print-directory demo
	$(FLASK) db upgrade
	$(FLASK) bundles sync
	@echo "Serving on http://$(HOST):$(PORT)/  (Ctrl-C stops it; not for clinical use)"
	# No tcmalloc here: OpenVINO, which makes the predictions, aborts beside it (ml/runtime.py).
	$(VENV)/bin/gunicorn --config gunicorn.conf.py \
		--workers $(WORKERS) --bind $(HOST):$(PORT)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: setup lint
	@HF_HUB_OFFLINE=1 $(PY) -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: the suite is broken"; exit 1; fi; \
	exit $$status

clean:
	rm -rf $(DEMO_DATA) $(DEMO_BUNDLE) .pytest_cache .ruff_cache
