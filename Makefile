# Two entry points for a fresh machine (see README): `make repro` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: env repro test lint bench study mediapipe-env

# The environment: a virtualenv with the package (editable) and its test/export extras.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,export]'
	touch $@

env: $(VENV)/.installed

# The main job: the whole pipeline on the synthetic default, then the summary so far.
repro: env
	$(VENV)/bin/dvc repro
	cat metrics/summary.md

test: env
	$(PY) -m pytest -q

lint: env
	$(VENV)/bin/ruff check reid stages tests bench scripts

bench: env
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

# Seed study: train.seed = 0 1 2 as queued DVC experiments (one worker), then metrics/study.json + .md.
# Other seeds: make study SEEDS="0 1 2 3 4".
SEEDS ?= 0 1 2
study: env
	$(PY) -m stages.study $(SEEDS)

# mediapipe's body models (BlazePose, selfie segmentation) as an independent reference on real crops
# (scripts/mediapipe_reference.py). Its own environment: mediapipe's wheel brings opencv-contrib, which
# would shadow the project's OpenCV.
MP_VENV ?= .venv-mediapipe
mediapipe-env: $(MP_VENV)/.installed
$(MP_VENV)/.installed:
	test -x $(MP_VENV)/bin/python || python3 -m venv $(MP_VENV)
	$(MP_VENV)/bin/python -m pip install -q 'mediapipe==0.10.14' pyarrow
	touch $@
