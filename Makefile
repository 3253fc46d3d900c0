# vm-appliance: the README's commands. Every target installs what it needs
# first and skips what is already done, so each can run on a fresh Debian 12.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
DEMO_IMAGE := .cache/images/demo.qcow2
HOME_DIR ?= .appliance
LISTEN ?= 127.0.0.1:8080
ACCEL ?= auto
PYTEST_ARGS ?=

.PHONY: setup host venv image run test test-unit lint bench bench-quick clean

setup: host venv image

host:
	bash packaging/setup-host.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

image: $(DEMO_IMAGE)

$(DEMO_IMAGE): packaging/build-demo-image.sh $(wildcard packaging/demo-guest/*)
	bash packaging/build-demo-image.sh --force $@

# The appliance in the foreground on its embedded default (REST on $(LISTEN)).
run: setup
	$(VENV)/bin/vmctl --home $(HOME_DIR) serve --listen $(LISTEN) --accel $(ACCEL) --demo-image $(DEMO_IMAGE)

# The whole suite: unit tests, then the integration tests on the real libvirtd,
# then every benchmark once in its quick form (a broken benchmark is caught when
# it breaks). pytest exits 5 when it collected nothing; that is a failure here too.
test: setup lint
	$(VENV)/bin/python -m pytest -ra $(PYTEST_ARGS)
	$(MAKE) bench-quick

# ruff and mypy on the product code (rules and strictness in pyproject.toml:
# [tool.ruff.lint], [tool.mypy]); a finding is fixed, or justified where it
# stands with a `noqa: CODE` or `type: ignore[code]` and its reason.
lint: venv
	$(VENV)/bin/ruff check appliance fs exporter scheduler
	$(VENV)/bin/python -m mypy

test-unit: venv
	$(VENV)/bin/python -m pytest -ra tests/unit $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python -m tests.bench.run

# Every section at its smallest (seconds each, a few minutes in all), writing
# nothing: exits non-zero when a section fails. Not figures for BENCHMARKS.md.
bench-quick: setup
	$(VENV)/bin/python -m tests.bench.run --quick --no-write

clean:
	rm -rf $(VENV) .cache *.egg-info
