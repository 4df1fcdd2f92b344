# hookwise: `make run` starts the daemon, `make test` runs the suite, `make lint` runs the static checks,
# `make bench` measures.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The example plugin (examples/hookwise-jsonl) is installed with the project: its tests run with the suite.
EXAMPLE := examples/hookwise-jsonl
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(EXAMPLE)/pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint bench check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml $(EXAMPLE)/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]' -e $(EXAMPLE)
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(BIN)/hookwise serve -c config.example.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

# The static checks CI runs: ruff with the rules and line length of pyproject.toml, and mypy --strict
# (strict = true there) over the code that ships.
lint: $(STAMP)
	$(BIN)/ruff check engine actions tests bench examples
	$(BIN)/mypy engine actions

bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	command -v curl >/dev/null || (apt-get update -q && apt-get install -y -q curl)   # the 100 ms figure's peer runs curl
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

check: $(STAMP)
	$(BIN)/hookwise check -c config.example.yaml
	$(BIN)/hookwise test -c config.example.yaml

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
