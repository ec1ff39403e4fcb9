# Two commands on a fresh machine:  `make book`  and  `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the sample data beside the repository, when it is there (else datasets stream from the Hub)
export COMPANION_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export COMPANION_CACHE ?= $(abspath .cache/companion)
export TOKENIZERS_PARALLELISM ?= false
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1
# In chapter order, except that chapter 9 (DPO) runs before chapter 8 (RLAIF): chapter 8 compares
# with chapter 9's cached DPO model, so this way each artifact is built by the chapter that explains it.
NOTEBOOKS := $(patsubst book/09_dpo.ipynb,book/09_dpo.ipynb book/08_rlaif.ipynb,\
	$(filter-out book/08_rlaif.ipynb,$(sort $(wildcard book/*.ipynb))))

.PHONY: book test unit notebooks build-check lint bench clean venv test-latest

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
	@echo "Open _build/html/index.html"

## make test: lint, unit tests, every notebook under nbval, and a -W book build
test: $(STAMP) lint unit notebooks build-check

lint: $(STAMP)
	$(VENV)/bin/ruff check companion tests bench

unit: $(STAMP)
	$(VENV)/bin/pytest tests -q

notebooks: $(STAMP)
	$(VENV)/bin/pytest -q --nbval-lax --nbval-cell-timeout=1800 -p no:cacheprovider $(NOTEBOOKS)

# The notebooks were just executed by nbval; this build checks the book renders with
# zero warnings without executing them a second time.
build-check: $(STAMP)
	mkdir -p _build
	sed 's/execute_notebooks: .*/execute_notebooks: "off"/' _config.yml > _build/_config_noexec.yml
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going --config _build/_config_noexec.yml

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
