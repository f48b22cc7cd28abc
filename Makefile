# The README's two commands: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
UV := $(shell command -v uv 2>/dev/null)

.PHONY: test lint demo bench venv constraints clean system-deps

$(BIN)/python:
	scripts/bootstrap.sh $(VENV) $(PYTHON)

# Installs the provider (editable) with its test extras, pinned by constraints.txt so every
# machine and CI test the same versions: the lowest Airflow the package declares.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
ifdef UV
	uv pip install --python $(BIN)/python -e ".[test]" -c constraints.txt
else
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]" -c constraints.txt
endif
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# sshd, sudo and the freeze tools for tests/quiesce, the example DAGs' tests and the demo: installed with apt when root and missing.
system-deps:
	scripts/system-deps.sh

test: system-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The demo's VMs need sshd and the freeze tools: installed with apt when root and missing.
demo: system-deps $(STAMP)
	$(BIN)/python -m demo

# Benchmarks and the reliability soak (bench/): BENCH="fanout soak" runs only those; every run
# rewrites bench/REPORT.md from the sections in bench/results/. Never part of `make test`.
BENCH ?=
bench: system-deps $(STAMP)
	$(BIN)/python -m bench $(BENCH)

# Regenerate constraints.txt from the current environment (after a deliberate upgrade).
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^airflow-provider-skytap' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info

# --- The distributed Airflow (issue 16, section 2; tests/system/airflow_stack.py) ----------
# PostgreSQL and Redis from Debian's packages, installed with apt when root and missing (the
# scheduler tests' fixture runs the same script). `make stack` starts docker-compose.yaml's
# Airflow on this machine (private PostgreSQL and Redis on free loopback ports, api-server,
# scheduler, dag-processor, two triggerers, two Celery workers) on dags/ until Ctrl-C.
.PHONY: services stack
services:
	scripts/services.sh

stack: services $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python -m tests.system.airflow_stack
