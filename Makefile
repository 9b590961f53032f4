# Frozen-feature facial affect analysis: extract -> features (HDF5) -> classify -> postprocess.
# Every target depends on `setup`, so on a fresh machine `make test` (or `make demo`) does all the set-up.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

DATA       ?= data/synthetic
OUT        ?= cache/features.h5
EXTRACTORS ?= fer
DEVICE     ?= cpu
BATCH      ?= 64
TASK       ?= expr
HEADS      ?= mlp,lama,blend
K          ?= 0:200
RUN        ?= runs/$(TASK)/latest
SAMPLES    ?= test_set_examples.txt
SUB        ?= submissions/$(TASK).txt
PYTEST_ARGS ?=

.PHONY: setup test test-fast extract classify sweep submit demo bench clean

setup: $(STAMP)

# Re-runs only when the dependency list changes; a second `make setup` does nothing.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,onnx]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

extract: $(STAMP)
	$(PY) -m extract run --data $(DATA) --out $(OUT) --extractors $(EXTRACTORS) --device $(DEVICE) --batch $(BATCH)

classify: $(STAMP)
	$(PY) -m classify --task $(TASK) --cache $(OUT) --labels $(DATA) --heads $(HEADS)

sweep: $(STAMP)
	$(PY) -m postprocess sweep --run $(RUN) --k $(K)

submit: $(STAMP)
	$(PY) -m postprocess submit --run $(RUN) --samples $(SAMPLES) --out $(SUB)

demo: $(STAMP)
	$(PY) demo.py

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf cache runs data/synthetic
