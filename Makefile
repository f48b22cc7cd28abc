# The README's commands: `make demo`, `make test` and `make ui`. Each sets up what it needs.
PYTHON ?= python3
# Two virtual environments, two Airflow versions: .venv runs everything on the newest Airflow
# (constraints.txt), .venv-floor runs the compatibility subset on the lowest Airflow the package
# declares (constraints-floor.txt, the floor in pyproject.toml).
VENV ?= .venv
FLOOR_VENV ?= .venv-floor
BIN := $(VENV)/bin
FLOOR_BIN := $(FLOOR_VENV)/bin
STAMP := $(VENV)/.installed
FLOOR_STAMP := $(FLOOR_VENV)/.installed
PYTEST_ARGS ?=
UV := $(shell command -v uv 2>/dev/null)

.PHONY: test test-newest test-floor lint demo bench venv venv-floor constraints constraints-floor clean system-deps

%/bin/python:
	scripts/bootstrap.sh $* $(PYTHON)

# Installs the provider (editable) with its test extras, pinned by a constraints file so every
# machine and CI test the same versions. $(1): the venv, $(2): its constraints file.
define install_venv
$(1)/.installed: $(1)/bin/python pyproject.toml $(2)
ifdef UV
	uv pip install --python $(1)/bin/python -e ".[test]" -c $(2)
else
	$(1)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" -c $(2)
endif
	touch $$@
endef
$(eval $(call install_venv,$(VENV),constraints.txt))
$(eval $(call install_venv,$(FLOOR_VENV),constraints-floor.txt))

venv: $(STAMP)

venv-floor: $(FLOOR_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# sshd, sudo and the freeze tools for tests/quiesce, the example DAGs' tests and the demo, and
# Chromium with chromium-driver for the browser tests: installed with apt when root and missing.
system-deps:
	scripts/system-deps.sh

# The compatibility subset on the floor: the unit tests that were tests/unit before the tests
# mirrored the package, the hook against the simulator, the provider as Airflow's CLI sees it,
# and one `airflow dags test` of each example DAG.
FLOOR_TESTS ?= tests/test_backups.py tests/test_checks.py tests/test_import_cost.py \
	tests/test_layering.py tests/test_provider_info.py tests/dags/test_example_dags.py \
	tests/hooks/test_api_rules.py tests/hooks/test_boundary.py \
	tests/hooks/test_connection_settings.py tests/operators/test_quiesce_operator.py \
	tests/quiesce/test_commands.py tests/quiesce/test_protocol.py tests/quiesce/test_session_api.py \
	tests/hooks/test_hook_calls.py tests/hooks/test_async_hook.py \
	tests/hooks/test_hook_retries.py tests/test_airflow_cli.py \
	tests/system/test_example_dags.py::test_the_backup_is_consistent_in_every_region_and_every_vm_was_thawed \
	tests/system/test_example_dags.py::test_the_reporting_copy_is_powered_on_and_deleted_after_the_hours
# Two pytest-xdist workers: most tests wait on a simulated copy or a subprocess, not the CPU.
# tests/conftest.py keeps the tests that share fixed machine resources in one group each.
XDIST_ARGS ?= -n 2 --dist loadgroup
FLOOR_LOG := $(FLOOR_VENV)/test-floor.log

# Everything on the newest Airflow (.venv), and beside it the floor subset (.venv-floor): the two
# share no file, port or Airflow home. The floor's output is printed once the suite is done.
test: system-deps lint $(FLOOR_STAMP)
	@$(FLOOR_BIN)/python -m pytest $(FLOOR_TESTS) >$(FLOOR_LOG) 2>&1 & floor=$$!; \
	$(BIN)/python -m pytest $(XDIST_ARGS) $(PYTEST_ARGS); newest=$$?; \
	wait $$floor; floor=$$?; \
	echo "=== the floor subset on Airflow $$($(FLOOR_BIN)/python -c 'import airflow; print(airflow.__version__)') ==="; \
	cat $(FLOOR_LOG); \
	echo "make test: newest Airflow exit $$newest, floor exit $$floor"; \
	[ $$newest = 0 ] && [ $$floor = 0 ]

# Each part alone: the full suite on the newest Airflow, or the floor subset.
test-newest: system-deps lint
	$(BIN)/python -m pytest $(XDIST_ARGS) $(PYTEST_ARGS)

test-floor: system-deps $(FLOOR_STAMP)
	$(FLOOR_BIN)/python -m pytest $(FLOOR_TESTS) $(PYTEST_ARGS)

# The demo's VMs need sshd and the freeze tools: installed with apt when root and missing.
demo: system-deps $(STAMP)
	$(BIN)/python -m demo

# Benchmarks and the reliability soak (bench/): BENCH="fanout soak" runs only those; every run
# rewrites bench/REPORT.md from the sections in bench/results/. Never part of `make test`.
BENCH ?=
bench: system-deps $(STAMP)
	$(BIN)/python -m bench $(BENCH)

# Regenerate constraints.txt from the current environment (after a deliberate upgrade), and
# constraints-floor.txt from .venv-floor (after moving the floor in pyproject.toml).
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^airflow-provider-skytap' > constraints.txt

constraints-floor: $(FLOOR_STAMP)
	$(FLOOR_BIN)/python -m pip freeze --exclude-editable | grep -v '^airflow-provider-skytap' > constraints-floor.txt

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build *.egg-info

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

# The whole Airflow UI on this machine for someone without a Skytap account (demo/ui.py): the
# demo's VMs, the simulator seeded with them, `make stack`'s Airflow on dags/ with both
# connections set; prints the address and the login. Ctrl-C stops it all, nothing left frozen.
.PHONY: ui
ui: system-deps services $(STAMP)
	$(BIN)/python -m demo.ui
