# Two commands do all the set-up on a fresh machine with Python >= 3.11 and pip:
#   make demo   - run the whole pipeline locally on synthetic data
#   make test   - run the test suite (real broker and redis-server, started by fixtures)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench lint redis-server clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "segstream needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $(STAMP)

# redis-server comes from the OS (Debian's redis-server package).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	}
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required: apt-get install redis-server"; exit 1; }

demo: $(STAMP) redis-server
	$(BIN)/segstream demo $(DEMO_ARGS)

test: $(STAMP) redis-server
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP) redis-server
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check operators state flows segstream

clean:
	rm -rf $(VENV) *.egg-info build recovery
