# `make demo` and `make test` each build the environment they need from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision at these versions install from this machine's local wheel store.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test venv fashion-mnist clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q

# Fashion-MNIST comes from the Debian/Ubuntu package; install it when we may.
fashion-mnist:
	@if [ ! -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', then 'make demo' again"; exit 1; \
	  fi; \
	fi

demo: venv fashion-mnist
	$(BIN)/crossvit models
	$(BIN)/crossvit demo

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
