# Two commands on a fresh clone: `make demo` (binealnet vs int8 vs fp32 on the embedded sample) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test bench-speed clean

$(BIN)/bench: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/bench

venv: $(BIN)/bench

demo: venv
	$(BIN)/bench compare --task classification --schedule smoke --results-dir work_dirs/demo-results

test: venv
	$(BIN)/python -m pytest -q tests

bench-speed: venv
	$(BIN)/python -m bench.speed

clean:
	rm -rf $(VENV) work_dirs
