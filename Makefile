# `make test` works on a fresh clone: it makes .venv and installs everything first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo docs bench bench-accuracy clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,timm,tune]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: install
	$(VENV)/bin/actrec demo -o demo_out

# the site from docs/ (mkdocs.yml); --strict: a broken link, anchor or missing page fails
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet -d site

$(VENV)/.docs-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

bench: install
	$(PY) bench/run_all.py $(ARGS)

# stage two on real sequences and real footage (../shared/testdata), every head, three seeds
bench-accuracy: install
	$(PY) -m pip install --quiet -e '.[dev,timm,bench]'
	$(PY) bench/bench_accuracy.py $(ARGS)

clean:
	rm -rf demo_out bench/results .pytest_cache site
