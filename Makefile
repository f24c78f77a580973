# Two commands on a fresh machine (each sets up .venv itself):
#   make demo   the main job on the bundled default
#   make test   the whole test suite (what CI runs, through .ci/run)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.revgan-installed

.PHONY: demo test bench setup clean

demo: $(STAMP)
	$(PY) -m RevGANCore demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m RevGANCore bench memory
	$(PY) -m RevGANCore bench speed

setup: $(STAMP)

$(STAMP): pyproject.toml tools/bootstrap.sh
	PYTHON=$(PYTHON) bash tools/bootstrap.sh $(VENV)
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
