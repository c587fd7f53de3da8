# `make demo` and `make test` each build the environment they need from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision at these versions install from this machine's local wheel store.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-oldest-torch venv fashion-mnist clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/ruff check src tests benchmarks hubconf.py
	$(BIN)/python -m pytest -q -n auto

# pyproject's lowest torch, on the model's own tests (the model needs nothing but torch; timm and
# torchvision are left out, since their wheels are built for one torch each). 2.13.0+cpu is the
# oldest torch in this machine's wheel store; elsewhere set OLDEST_TORCH=torch==2.13.0.
OLDEST_TORCH ?= torch==2.13.0+cpu
MODEL_TESTS := tests/test_model_interface.py tests/test_inference_path.py tests/test_fusion.py tests/test_golden.py \
	tests/test_bf16_twin.py tests/test_convstem_tokenizer.py tests/test_t2t_tokenizer.py tests/test_checkpoint.py \
	tests/test_input_size.py tests/test_branch_inputs.py tests/test_fusion_standalone.py tests/test_hub.py
test-oldest-torch:
	$(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/pip install -q $(OLDEST_TORCH) "safetensors>=0.4" "numpy>=1.24" "pyyaml>=6" "pillow>=10" \
	  "tqdm>=4.60" "matplotlib>=3.7" "pytest>=8"
	.venv-oldest/bin/pip install -q --no-deps -e .
	.venv-oldest/bin/python -m pytest -q $(MODEL_TESTS)

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
	rm -rf $(VENV) .venv-oldest build src/*.egg-info .pytest_cache
