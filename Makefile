# Two entry points: `make demo` (set up, run the embedded DPO canary against a baseline) and `make test`.
# Everything installs into .venv from the exact lock; torch first, pinned (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CANARY := $(VENV)/bin/canary
RUNS   ?= runs/demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# The main job on the embedded default: a baseline run, a current run, the verdict and the report.
demo: install
	$(CANARY) run dpo_embedded -o $(RUNS)/baseline --no-progress > /dev/null
	$(CANARY) run dpo_embedded -o $(RUNS)/current
	$(CANARY) compare $(RUNS)/current $(RUNS)/baseline -o $(RUNS)/comparison.json
	$(CANARY) report $(RUNS)/comparison.json --format markdown -o $(RUNS)/report.md
	@echo "report: $(RUNS)/report.md"

test: install
	$(PY) -m pytest -q

lint: install
	bash scripts/lint.sh

# The figures in the README (an hour or so on 2 CPU cores; run on an otherwise idle machine).
bench: install
	$(PY) benchmarks/verdict_quality.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/noise.py
	$(PY) benchmarks/time_to_verdict.py
	$(PY) benchmarks/verdict_health.py
	$(PY) benchmarks/verdict_suite.py
	$(PY) benchmarks/exec_overhead.py

clean:
	rm -rf $(VENV) runs .cache .pytest_cache
