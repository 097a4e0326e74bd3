# The README's two commands are `make run` and `make test`; both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup run test test-fast lint format compile check-specs bench bench-small bench-tf image push clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	@# xgboost (the CUDA build, with NCCL) gave way to xgboost-cpu: both install the module xgboost,
	@# so an environment made before the change drops the old one first.
	$(BIN)/uv pip uninstall -q --python $(BIN)/python xgboost nvidia-nccl-cu12 2>/dev/null || true
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -e ".[dev]"
	touch $@

## run: the main job: the classification pipeline, locally (kfp.local), on embedded defaults
run: setup
	$(BIN)/python -m pipelines.run tabular_classification

## test: lint, then the whole suite, with the services it needs (Docker engine, emulators)
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	scripts/ensure_docker.sh
	scripts/ensure_chromium.sh
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## compile: regenerate component_specs/ and the pipelines' YAML
compile: setup
	$(BIN)/python scripts/compile.py

check-specs: setup
	$(BIN)/python scripts/compile.py --check

## image: build the component image [<BATCHPREDICT_IMAGE_REGISTRY>/]batchpredict:<version>
##        (BASE_IMAGE=local: a Debian base built here, for machines that reach no registry)
image: setup
	PYTHON=$(BIN)/python containers/build_image.sh

## push: push the image to BATCHPREDICT_IMAGE_REGISTRY and recompile the specs against it
push: setup
	PYTHON=$(BIN)/python containers/push_image.sh

## bench: the engine against hand-written floors and the predict ceiling (1M and 10M JSONL rows)
bench: setup
	$(BIN)/python bench/engine_bench.py

## bench-small: a 1,000-row job through the compiled component under kfp.local, time broken down
bench-small: setup
	$(BIN)/python bench/small_job_bench.py

## bench-tf: Google's tutorial CNN, the engine against a hand-written TensorFlow loop
bench-tf: setup
	$(BIN)/python bench/tf_bench.py

clean:
	rm -rf $(VENV) local_outputs .pytest_cache
