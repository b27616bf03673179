# The README's two commands: `make demo` and `make test`. Both set up first.
# Uses the active virtualenv / conda env if there is one, else creates .venv.
# torch: the CPU build torch==2.13.0 is installed only when no torch is importable (a GPU user's torch is kept).

SHELL := /bin/bash
ifdef VIRTUAL_ENV
PY := $(VIRTUAL_ENV)/bin/python
else ifdef CONDA_PREFIX
PY := $(CONDA_PREFIX)/bin/python
else
PY := .venv/bin/python
endif
STAMP := $(dir $(PY)).rewarm-setup-stamp

.PHONY: setup demo test bench lint docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x "$(PY)" ]; then python3 -m venv .venv; fi
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip --upgrade
	@if ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "installing torch==2.13.0 (CPU build)"; $(PY) -m pip install -q torch==2.13.0; \
	else echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; fi
	$(PY) -m pip install -q -e ".[dev,deepspeed,eval]"
	@touch $(STAMP)

demo: setup
	$(PY) -m rewarm demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: setup
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: setup
	$(PY) -m ruff check rewarm tests benchmarks
	$(dir $(PY))lint-imports

docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict  # into site/; `mkdocs serve` previews it

clean:
	rm -rf .venv runs .cache site *.egg-info
