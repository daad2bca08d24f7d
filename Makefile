# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first.
# `make test-fast`: tests/unit (the in-process API included) and the packages' doctests: no PostgreSQL, Ray or uvicorn
# (3 processes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# torch 2.13.0 first: a plain `torch` requirement would make pip fetch a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install browser test test-fast demo bench lint clean

install: $(VENV)/.installed

# The example plugins are installed too: the tests tune a study on the workload plugin (examples/workload-plugin)
# and compare the optimizer plugin's Lion against TVLARS (examples/optimizer-plugin).
EXAMPLE_PLUGIN := examples/workload-plugin
EXAMPLE_OPTIMIZER := examples/optimizer-plugin

$(VENV)/.installed: pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml $(EXAMPLE_OPTIMIZER)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps --no-build-isolation -e $(EXAMPLE_PLUGIN)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e $(EXAMPLE_OPTIMIZER)
	touch $@

# The report test opens the HTML page in headless Chromium; where apt works it is installed, else that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
		|| echo "chromium not installed: the browser check of the comparison report will skip" || true

# tests/unit, tests/integration and the doctests in 3 processes (pytest-xdist): the integration tier as two groups,
# each in a process of its own (tests/conftest.py), the unit tier spread over all three; then
# tests/integration/cluster in a process of its own
test: install browser
	$(PY) -m pytest -q -n 3 --dist loadgroup -m "not cluster"
	# the multi-node cluster tests in a process of their own: the session's local Ray and its workers stay out of it
	$(PY) -m pytest -q -m cluster

# the folder decides the tier: tests/conftest.py refuses a test under tests/unit that needs PostgreSQL, Ray or a server
test-fast: install
	$(PY) -m pytest -q -n 3 tests/unit tvlars search_spaces

demo: install
	$(BIN)/tvlars-tune demo

# benchmarks/gpu.py is the GPU check (`python benchmarks/gpu.py --out DIR` on a CUDA machine); `make test` runs its
# CPU dry run. The soak runs its --quick form here (3 minutes); the hour-long run is `python benchmarks/soak.py`.
bench: install
	@for b in benchmarks/[!_]*.py; do [ "$$b" = benchmarks/gpu.py ] && continue; args=""; \
		[ "$$b" = benchmarks/soak.py ] && args=--quick; echo "== $$b $$args"; $(PY) $$b $$args || exit 1; done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info tvlars-tune.db*
