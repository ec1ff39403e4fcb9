# Two commands on a fresh machine:  `make book`  and  `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the sample data beside the repository, when it is there (else datasets stream from the Hub)
export COMPANION_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export COMPANION_CACHE ?= $(abspath .cache/companion)
# float32 training: the chapters' asserts were set on float32 runs; `COMPANION_BF16=1 make book`
# trains with bf16 autocast (about 1.5x faster on CPUs with AMX or AVX512-BF16, on another trajectory)
export COMPANION_BF16 ?= 0
export TOKENIZERS_PARALLELISM ?= false
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1
# In chapter order, except that chapter 9 (DPO) runs before chapter 8 (RLAIF): chapter 8 compares
# with chapter 9's cached DPO model, so this way each artifact is built by the chapter that explains it.
NOTEBOOKS := $(patsubst book/09_dpo.ipynb,book/09_dpo.ipynb book/08_rlaif.ipynb,\
	$(filter-out book/08_rlaif.ipynb,$(sort $(wildcard book/*.ipynb))))

# Chapter 10's in-page chat: the cached chat models as ONNX files (companion export-web) and
# onnxruntime-web from the npm registry (not committed), copied beside the book's _static/chat_onnx.js.
ONNXRUNTIME_WEB := 1.30.0
CHAT_STAGES ?= base,sft,dpo
CHAT_DIR := _build/html/_static/chat
ORT_DIST := _build/npm/node_modules/onnxruntime-web/dist
ORT_FILES := ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm

.PHONY: book test unit notebooks build-check browser-test chat-files lint bench clean venv test-latest

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# CPU machines: the local CPU wheel, not GBs of CUDA packages (Colab keeps its own torch).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## make book: execute every chapter and render the book into _build/html
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -n --keep-going
	$(MAKE) --no-print-directory chat-files
	@echo "Open _build/html/index.html"

## make test: lint, unit tests, every notebook under nbval, a -W book build, and the in-page chat in a browser
test: $(STAMP) lint unit notebooks build-check browser-test

lint: $(STAMP)
	$(VENV)/bin/ruff check companion tests bench

unit: $(STAMP)
	$(VENV)/bin/pytest tests -q --durations=15

notebooks: $(STAMP)
	$(VENV)/bin/pytest -q --nbval-lax --nbval-cell-timeout=1800 --durations=40 -p no:cacheprovider $(NOTEBOOKS)

# The notebooks were just executed by nbval; this build checks the book renders with
# zero warnings without executing them a second time.
build-check: $(STAMP)
	mkdir -p _build
	@# the copy lives in _build/, so the local extension's folder is one level up from it
	@# unexecuted pages have no glued numbers: only that warning class is silenced here, and
	@# tests/test_glue.py checks every key the prose uses is glued by its notebook
	sed -e 's/execute_notebooks: .*/execute_notebooks: "off"/' -e 's#: book/_ext#: ../book/_ext#' \
		-e 's/suppress_warnings: \["mystnb.unknown_mime_type"\]/suppress_warnings: ["mystnb.unknown_mime_type", "mystnb.glue"]/' _config.yml \
		> _build/_config_noexec.yml
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going --config _build/_config_noexec.yml
	$(MAKE) --no-print-directory chat-files

# The models the chapters cached (a stage not cached yet is left out; the page then says so) and
# onnxruntime-web's wasm build; without npm the page keeps its recorded answers.
chat-files: $(STAMP)
	mkdir -p $(CHAT_DIR)/ort
	@if command -v npm >/dev/null; then \
	  test -f _build/npm/.onnxruntime-web-$(ONNXRUNTIME_WEB) || { \
	    timeout 600 npm install --no-save --no-audit --no-fund --prefix _build/npm onnxruntime-web@$(ONNXRUNTIME_WEB) && \
	    touch _build/npm/.onnxruntime-web-$(ONNXRUNTIME_WEB); } && \
	  cp $(addprefix $(ORT_DIST)/,$(ORT_FILES)) $(CHAT_DIR)/ort/; \
	else echo "npm not found: the in-page chat will show its recorded answers only" >&2; fi
	$(PY) -m companion export-web --out $(CHAT_DIR) --stages $(CHAT_STAGES) --skip-missing

## make browser-test: chapter 10's chat box in headless Chromium, against the book build-check just made
browser-test: $(STAMP)
	timeout 1200 $(VENV)/bin/pytest -q -p no:cacheprovider tests/browser

## make test-latest: the unit tests against the newest releases of the libraries (a separate venv)
test-latest:
	test -x .venv-latest/bin/python || python3 -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -c "import torch" 2>/dev/null || .venv-latest/bin/python -m pip install -q torch==2.13.0
	.venv-latest/bin/python -m pip install -q --upgrade transformers trl peft datasets accelerate tokenizers \
		numpy matplotlib tqdm platformdirs ipywidgets anywidget gymnasium sentence-transformers pytest
	.venv-latest/bin/python -m pip install -q --no-deps -e .
	.venv-latest/bin/python -m pip list 2>/dev/null | grep -iE "^(torch|transformers|trl|peft|datasets|accelerate) "
	.venv-latest/bin/pytest tests -q

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf _build .cache
