# deconv: `make demo` runs the tool on the bundled samples, `make test` runs the tests.
# Both create a local virtual environment (.venv) and install the package when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= demo-out
PYTEST_WORKERS ?= 2

.PHONY: demo test lint bench fuzz docs figures clean venv bytecode

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev,dask,plot]'
	$(MAKE) --no-print-directory bytecode
	touch $(STAMP)

# Byte-compile the package, as installing a wheel does: an editable install under
# PYTHONDONTWRITEBYTECODE=1 would otherwise compile it at every command (~80 ms).
bytecode:
	$(BIN)/python -m compileall -q deconv_cli

venv: $(STAMP)

demo: $(STAMP)
	OUT=$(OUT) PATH="$(CURDIR)/$(BIN):$$PATH" bash samples/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

lint: $(STAMP)
	$(BIN)/ruff check deconv_cli tests benchmarks docs
	$(BIN)/ruff format --check deconv_cli tests benchmarks docs

bench: $(STAMP) bytecode
	$(BIN)/python benchmarks/run_all.py

# docs/reference/cli.md from the commands' --help (tests/test_docs.py checks it), and the
# README's pictures in docs/images/ from the deconv command on samples/.
docs: $(STAMP) figures
	$(BIN)/python docs/gen_cli_reference.py

figures: $(STAMP)
	$(BIN)/python docs/make_figures.py

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -m fuzz -p no:randomly

clean:
	rm -rf $(OUT) bench-out build *.egg-info
