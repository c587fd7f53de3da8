# `make demo` and `make test` each build the environment they need from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision at these versions install from this machine's local wheel store.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test venv clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/crossvit models
	$(BIN)/crossvit demo

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
