# The front door. `make demo`: set up and run the toy world (docs/toyworld.md): DataDream-dset through
# every stage, and the unadapted model, IsSynth and DISEF on the same shots; then rebuild Table 1 and
# the figures from every run under runs/ (notebooks/06) into figures/. `make demo-tiny`: the same
# machinery on the random-weight tiny models (params/demo.yaml), as the unit tests run it.
# `make test`: the test suite (unit tests, the end-to-end pipeline, nbval over the notebooks).
#
# The environment is requirements.lock: every package, direct and transitive, at the exact version
# the test suite passed with. `make setup` installs exactly that with uv (no resolver, then `pip check`;
# uv, pinned below, takes 20 s where pip took 2 minutes; it reads UV_INDEX_URL / uv.toml, not pip.conf);
# `make lock` regenerates it from pyproject.toml's ranges with uv, as the index stood on LOCK_DATE;
# `make test-latest` tries the newest releases in a throwaway environment (not part of CI).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
# The index as it stood then: `make lock` gives the same file until this date (or pyproject) changes.
LOCK_DATE ?= 2026-12-01T00:00:00Z
UV_VERSION ?= 0.13.9
TOOLS := build/tools
LOCK_FLAGS := --extra test --extra tracking -c lock-constraints.txt --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"

.PHONY: setup demo demo-tiny test test-latest lock gpu-check-wheels lab clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: $(LOCK) pyproject.toml | $(TOOLS)/bin/uv
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(TOOLS)/bin/uv pip install --quiet --no-deps -r $(LOCK) --python $(PY)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	touch $@

DEMO_RUNS := params/toyworld.yaml params/toyworld_stable_diffusion.yaml params/toyworld_issynth.yaml params/toyworld_disef.yaml

demo: setup
	for run in $(DEMO_RUNS); do $(PY) -m datadream_lib.pipeline $$run || exit 1; done
	$(VENV)/bin/papermill notebooks/06_paper_results.ipynb runs/06_paper_results.ipynb --log-level WARNING

demo-tiny: setup
	$(PY) -m datadream_lib.pipeline params/demo.yaml
	$(VENV)/bin/papermill notebooks/06_paper_results.ipynb runs/06_paper_results.ipynb --log-level WARNING

# The tests run on two pytest-xdist workers (a core each; a file's tests on one worker, `loadfile`, not
# `loadgroup`, which does not group on pytest 9.2, pytest-dev/pytest-xdist#1386; files in the order
# tests/conftest.py gives them, longest first, not xdist's most-tests-first); then nbval, in one process,
# on a fresh copy of the notebooks in build/nbval (its own project root; each notebook reads what the
# one before made), so the test run neither reads nor writes the runs/ of this checkout.
test: setup
	rm -rf build/nbval && mkdir -p build/nbval && cp -r notebooks params pyproject.toml build/nbval/
	$(PY) -m pytest tests -q --durations=25 -n 2 --dist loadfile --no-loadscope-reorder
	HF_HUB_OFFLINE=1 $(PY) -m pytest build/nbval/notebooks --nbval-lax -q

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

lock: $(TOOLS)/bin/uv
	$(TOOLS)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) --exclude-newer $(LOCK_DATE) --quiet -o $(LOCK)

# The newest releases the index serves (torch held as in lock-constraints.txt), in a throwaway
# environment, with the fast tests: run it before moving LOCK_DATE, or when a release is announced.
test-latest: $(TOOLS)/bin/uv
	rm -rf build/latest && mkdir -p build/latest
	$(TOOLS)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) --quiet -o build/latest/requirements.txt
	$(PYTHON) -m venv build/latest/venv
	build/latest/venv/bin/pip install --quiet --no-deps -r build/latest/requirements.txt
	build/latest/venv/bin/pip install --quiet --no-deps -e .
	build/latest/venv/bin/python -m pip check
	diff <(grep -E '^[a-z0-9]' $(LOCK)) <(grep -E '^[a-z0-9]' build/latest/requirements.txt) || true
	build/latest/venv/bin/python -m pytest tests -q -m "not slow and not lock"

# What the GPU check machine lacks, as wheels for CPython 3.12 on manylinux x86-64 (see README).
gpu-check-wheels:
	$(PYTHON) benchmarks/gpu_check.py wheels

# JupyterLab over the whole project (notebooks/, runs/ with each run's executed notebooks, figures/), opened at notebooks/.
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks

clean-demo:
	rm -rf runs/demo runs/toyworld runs/toyworld_stable_diffusion runs/toyworld_issynth runs/toyworld_disef
