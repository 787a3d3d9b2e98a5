# The front door. `make demo`: set up and run the whole pipeline on the tiny offline default, then
# rebuild Table 1 and the figures from every run under runs/ (notebooks/06) into figures/.
# `make test`: the test suite (unit tests, the end-to-end pipeline, nbval over the notebooks).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned here (and only here) so a fresh machine gets a build that matches torchvision;
# on a GPU machine pip resolves the CUDA build of the same versions.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lab clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(PY) -m datadream_lib.pipeline params/demo.yaml
	$(VENV)/bin/papermill notebooks/06_paper_results.ipynb runs/06_paper_results.ipynb --log-level WARNING

# nbval runs a fresh copy of the notebooks in build/nbval (its own project root), so the test run
# neither reads nor writes the runs/ of this checkout.
test: setup
	rm -rf build/nbval && mkdir -p build/nbval && cp -r notebooks params pyproject.toml build/nbval/
	$(PY) -m pytest tests build/nbval/notebooks --nbval-lax -q

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-demo:
	rm -rf runs/demo
