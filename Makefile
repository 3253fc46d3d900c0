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
# pytest with Python's bytecode and pytest's rewritten test modules cached under
# .cache/pycache (not beside the sources), even where PYTHONDONTWRITEBYTECODE is
# set: without the cache every run compiles and rewrites some 400 modules again
# (about 7 s of CPU, a quarter of the unit suite).
PYTEST := PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/.cache/pycache $(VENV)/bin/python -m pytest

.PHONY: setup host venv image web run test bench-quick-guests bench-quick-cpu-then-soak test-slow test-remote-hosts test-unit lint bench bench-quick scale scale-quick soak soak-quick clean deb test-deb test-cloudinit

setup: host venv image web

host:
	bash packaging/setup-host.sh

venv: $(VENV)/.installed

# pyfuse3 first, built from its sdist with FileInfo.noflush (packaging/pyfuse3/build.sh):
# the project's pin (pyfuse3==3.5.0) is then already met and pip keeps the patched one.
# The dependencies at the .deb's pinned versions (packaging/deb/constraints.txt): tested as shipped.
$(VENV)/.installed: pyproject.toml packaging/pyfuse3/build.sh packaging/pyfuse3/noflush.patch packaging/pyfuse3/build-constraints.txt packaging/deb/constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	bash packaging/pyfuse3/build.sh $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]' --constraint packaging/deb/constraints.txt
	touch $@

image: $(DEMO_IMAGE)

# The web page's libraries (xterm.js, noVNC): pinned npm tarballs, checked against
# their pinned sha512 and unpacked into appliance/web/vendor/ (not in git).
WEB_VENDOR := appliance/web/vendor/.stamp
web: $(WEB_VENDOR)

$(WEB_VENDOR): packaging/vendor-web.py
	$(PYTHON) packaging/vendor-web.py

$(DEMO_IMAGE): packaging/build-demo-image.sh $(wildcard packaging/demo-guest/*)
	bash packaging/build-demo-image.sh --force $@

# The appliance in the foreground on its embedded default (REST on $(LISTEN)).
run: setup
	$(VENV)/bin/vmctl --home $(HOME_DIR) serve --listen $(LISTEN) --accel $(ACCEL) --demo-image $(DEMO_IMAGE)

# The whole suite: unit tests, then the integration tests on the real libvirtd,
# then every benchmark once in its quick form (a broken benchmark is caught when
# it breaks). pytest exits 5 when it collected nothing; that is a failure here too.
# VMAPP_TESTS_THOROUGH=1: the thorough depth of the generated tests (schemathesis:
# more examples per operation and its coverage phase), which `make test-unit` skips.
# pyproject.toml's testpaths but tests/unit (named: pytest's --ignore does not drop a
# testpaths entry; tests/unit/packaging/test_makefile_suites.py checks the two agree).
SUITES_BUT_UNIT := tests/fs tests/exporter tests/monitoring tests/integration tests/cluster tests/web
# Unit tests that run in one process: schemathesis makes one test item per API operation, all
# with the same node id, and pytest-xdist runs such items once (1 of ~100 operations).
UNIT_SERIAL := tests/unit/appliance/api/test_openapi_conformance.py
# tests/fs's files on libvirt's test driver (a mount in a child process each, no libvirtd, no
# guest: CPU only) run with the unit tests on both CPUs, not one at a time with the suites on
# real guests; those marked integration (a real serve and TCG guests) stay there.
FS_REAL_SERVE := tests/fs/test_fs_integration.py
FS_ON_TEST_DRIVER := $(filter-out $(FS_REAL_SERVE),$(wildcard tests/fs/test_*.py))

# The unit tests (no libvirtd, CPU only) run on both CPUs, a test file per worker
# (pytest-xdist, --dist loadfile: a file's module fixtures stay in one process); the
# tests on real guests one at a time, as their timings assume. Then bench-quick and
# soak-quick side by side (make -j2: it fails when either does, once both ended): the
# bench's sections that boot guests (a CPU) one after the other, and on the other CPU
# those that boot none (api: stopped VMs; fs: stopped VMs, one started and forced off at
# once, twice; scale: in-process fake hosts) then the soak (its guests halt at their
# first instruction: no CPU of their own). A quick run judges no figure, and both wait
# with budgets made for a machine others load (a 240 s boot; the soak's 90 s
# convergence): ~2.5 min less than one after the other (ci2: 262 s + 70 s; side by side
# ~150 s and ~165 s).
test: setup lint
	VMAPP_TESTS_THOROUGH=1 $(PYTEST) -ra -m "not slow" -n 2 --dist loadfile tests/unit $(FS_ON_TEST_DRIVER) --ignore=$(UNIT_SERIAL) $(PYTEST_ARGS)
	VMAPP_TESTS_THOROUGH=1 $(PYTEST) -ra -m "not slow" $(UNIT_SERIAL) $(SUITES_BUT_UNIT) $(addprefix --ignore=,$(FS_ON_TEST_DRIVER)) --durations=30 $(PYTEST_ARGS)
	$(MAKE) -j2 --output-sync=target bench-quick-guests bench-quick-cpu-then-soak

# make test's two last jobs: bench-quick and soak-quick between them. The second runs
# the soak even when its bench sections failed, and fails when either did.
CPU_ONLY_QUICK := fs,api,scale
bench-quick-guests: venv
	$(VENV)/bin/python -m tests.bench.run --quick --no-write --skip $(CPU_ONLY_QUICK)

bench-quick-cpu-then-soak: venv
	failed=0; \
	$(VENV)/bin/python -m tests.bench.run --quick --only $(CPU_ONLY_QUICK) --no-write || failed=1; \
	$(VENV)/bin/python -m tests.soak.run --quick --no-write || failed=1; \
	exit $$failed

# The slow journeys (minutes each: snapshots and backups across local hosts, a
# host with storage of its own), kept out of `make test` so CI stays under 30 min.
test-slow: setup
	$(PYTEST) -ra -m "slow and not deb and not cloudinit" $(PYTEST_ARGS)

# The Debian package (packaging/deb/README.md): vm-appliance_VERSION_ARCH.deb in
# this folder, built with dh-virtualenv from a copy of the tree in .cache/deb/.
# Its build's packages come from Debian (packaging/deb/build-deps.sh, idempotent).
deb:
	bash packaging/deb/build-deps.sh
	bash packaging/deb/build.sh

# The .deb installed into a fresh Debian 12 root (debootstrap, its tarball cached
# in .cache/deb-test/), its service started there, removed, purged; then into
# another root booted with systemd as PID 1 (systemd-nspawn), where its units run
# under systemd: start, kill -9 and restart, stop, journal, enable. ~10 min.
test-deb: venv deb
	$(PYTEST) -ra -m deb tests/integration/test_deb_install.py tests/integration/test_deb_systemd.py $(PYTEST_ARGS)

# qemu+ssh and qemu+tls hosts for real (issue 16): a private sshd and libvirtd TLS
# listeners on 127.0.0.1 in front of packaging/local-hosts; part of test-slow (~2 min).
test-remote-hosts: setup
	$(PYTEST) -ra tests/cluster/test_cluster_remote_transports.py $(PYTEST_ARGS)

# The real cloud-init (issue 15): a Debian 12 guest with cloud-init from Debian's
# packages (debootstrap as root, .debs cached in .cache/debootstrap/, the image in
# .cache/images/), booted with a config drive: hostname, runcmd, SSH key, static IP;
# and with the metadata service alone, on a host in a network namespace of its own.
CLOUDINIT_IMAGE := .cache/images/cloudinit-debian12.qcow2
$(CLOUDINIT_IMAGE): packaging/build-cloudinit-image.sh
	bash packaging/build-cloudinit-image.sh --force $@

test-cloudinit: setup $(CLOUDINIT_IMAGE)
	$(PYTEST) -ra -s -m cloudinit tests/integration/test_cloudinit_guest.py $(PYTEST_ARGS)

# ruff and mypy on the product code (rules and strictness in pyproject.toml:
# [tool.ruff.lint], [tool.mypy]); a finding is fixed, or justified where it
# stands with a `noqa: CODE` or `type: ignore[code]` and its reason.
lint: venv
	$(VENV)/bin/ruff check appliance fs exporter scheduler
	$(VENV)/bin/python -m mypy

# The unit tests (no libvirtd; ~2,900 tests, ~2 min on both CPUs, ~3.3 min on one), at the quick depth of the generated
# tests; `make test-unit VMAPP_TESTS_THOROUGH=1` runs them as `make test` does.
test-unit: venv
	$(PYTEST) -ra -n 2 --dist loadfile tests/unit --ignore=$(UNIT_SERIAL) $(PYTEST_ARGS)
	$(PYTEST) -ra $(UNIT_SERIAL) $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python -m tests.bench.run

# Every section at its smallest (seconds each, a few minutes in all), writing
# nothing: exits non-zero when a section fails. Not figures for BENCHMARKS.md.
bench-quick: setup
	$(VENV)/bin/python -m tests.bench.run --quick --no-write

# Issue 17: 200 to 40,000 VMs on 20 fake hosts (tests/bench/bench_scale.py), into
# BENCHMARKS.md's scale section (~10 min; SCALE_SIZES=200,2000,20000 for fewer). Its
# quick form (200 and 2,000 VMs, ~1.5 min, writing nothing) is part of bench-quick, so `make test` runs it.
scale: venv
	$(VENV)/bin/python -m tests.bench.run --only scale

scale-quick: venv
	$(VENV)/bin/python -m tests.bench.run --quick --only scale --no-write

# Issue 17: random SIGKILLs of serve, the mount, a gunicorn worker and a local host's libvirtd
# under concurrent clients, stateful API fuzzing, mount fuzzing, a full disk, 50 concurrent
# clients (tests/soak/), into RELIABILITY.md (~60 min; each part stops by itself).
# PART=kill-serve (or kill, kill-mount, kill-worker, libvirtd, fuzz-api, fuzz-mount, disk-full,
# concurrent; comma-separated) runs parts alone, keeping the others' figures.
# Its short version (~2 min, writing nothing, failing on any finding) is part of make test.
PART ?=
soak: venv
	$(VENV)/bin/python -m tests.soak.run $(if $(PART),--part $(PART))

soak-quick: venv
	$(VENV)/bin/python -m tests.soak.run --quick --no-write $(if $(PART),--part $(PART))

# vmctl's man page, generated from its parser (appliance/cli/docs.py) by argparse-manpage;
# the defaults it shows are the built-in ones, not this shell's VMAPPLIANCE_HOME.
.PHONY: man
man: venv
	mkdir -p build/man
	env -u VMAPPLIANCE_HOME -u VMAPP_HOME PYTHONPATH=$(CURDIR) $(VENV)/bin/argparse-manpage \
	  --module appliance.cli.docs --function man_parser --prog vmctl \
	  --project-name vm-appliance --manual-title "vm-appliance manual" \
	  --description "drive the vm-appliance: VMs on libvirt and QEMU" \
	  --version "$$(PYTHONPATH=$(CURDIR) $(VENV)/bin/python -c 'from appliance.cli.target import version; print(version())')" \
	  --output build/man/vmctl.1

clean:
	rm -rf $(VENV) .cache *.egg-info
