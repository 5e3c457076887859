# Every target creates or refreshes .venv itself; it is fast when nothing changed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench diagrams clean crash-sweep fuzz-campaign

# gssapi (Kerberos mode of the network transport) builds against MIT
# krb5's headers: installed with apt-get where krb5-config is missing (fresh
# Debian/Ubuntu machines run this as root), with the KDC the Kerberos tests start.
$(STAMP): pyproject.toml
	@command -v krb5-config >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libkrb5-dev krb5-kdc \
	    krb5-admin-server krb5-user >/dev/null; } || \
	  echo "make: MIT Kerberos (libkrb5-dev) is missing and apt-get could not install it;" \
	    "installing gssapi will fail: install libkrb5-dev and run make again"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hvdr demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2

# The full crash campaign: a kill and a power cut (with the crash states in between)
# at every distinct crash point of the failover scenarios; prints each point, its
# states and their results, then the totals (docs/crash-testing.md). `make test`
# runs a sample of it (tests/crash/test_crash_points.py).
crash-sweep: $(STAMP)
	$(VENV)/bin/python tests/crash/crash_campaign.py

# A HypoFuzz campaign on the model's examples until Ctrl-C, with its dashboard
# (README, "Long fuzzing campaigns with HypoFuzz"). HVDR_EXAMPLE_DATABASE (a
# directory or redis://HOST:PORT/DB) names the database; run the same on several
# machines with one Redis URL to share it. tests/stateful/test_model_machine.py
# runs a short campaign and checks it records behaviours.
fuzz-campaign: $(STAMP)
	$(VENV)/bin/hypothesis fuzz -- tests/stateful/test_model_machine.py

# mypy --strict checks the packages and tests/ (pyproject.toml's [tool.mypy] files;
# the few settings relaxed for tests are listed there with their reasons).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy model invariants engine hvdr tests

# rsync is bench_failover_resync's peer: installed where missing (CI and fresh
# machines run as root on Debian/Ubuntu); without it that comparison is skipped.
bench: $(STAMP)
	@command -v rsync >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null; } || \
	  echo "make bench: rsync is missing and apt-get could not install it;" \
	    "bench_failover_resync will skip its comparison with rsync"
	$(VENV)/bin/python -m benchmarks

diagrams: $(STAMP)
	$(VENV)/bin/hvdr diagram --out diagrams --format svg --format png --format dot \
	    --format mermaid --format markdown

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
