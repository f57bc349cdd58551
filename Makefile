PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo env benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is pinned first so that nothing later pulls a CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The demo reads the MNI152 template shipped inside the nilearn wheel.
$(VENV)/.demo-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m impactreg.demo --out demo-output

# The benchmark suite compares with elastix (itk-elastix) and draws box plots (matplotlib);
# it reads ../shared/data. Options: make benchmark ARGS="--quick" (see benchmarks/suite.py --help).
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

benchmark: $(VENV)/.bench-installed
	$(PY) benchmarks/suite.py $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
