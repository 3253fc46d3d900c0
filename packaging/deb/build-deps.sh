#!/bin/bash
# Install what `make deb` (and `make test-deb`) need to build and test the
# .deb, from Debian's own archive only: debhelper and dh-virtualenv (the
# packaging route, packaging/deb/README.md), the compilers and headers that
# libvirt-python and the patched pyfuse3 build against, systemd-analyze (the
# units' check; in package systemd, usable without a running systemd) and
# debootstrap (the install test's fresh Debian 12 root).
#
# Usage (as root):  bash packaging/deb/build-deps.sh
#
# Idempotent: when every package is installed it changes nothing and asks no
# mirror (dpkg-query only); otherwise one `apt-get update` and one install.
set -euo pipefail

log() { printf 'deb build-deps: %s\n' "$*"; }
[[ ${EUID} -eq 0 ]] || { echo "deb build-deps: must run as root (apt-get)" >&2; exit 1; }

PACKAGES=(
    # the route: debhelper (dpkg-buildpackage, dh) and dh-virtualenv
    build-essential debhelper dh-virtualenv dpkg-dev fakeroot
    # the virtualenv inside the package, and what its compiled modules need
    python3 python3-dev python3-venv gcc pkg-config libvirt-dev libfuse3-dev patch
    # the units' check: systemd-analyze verify
    systemd
    # make test-deb: a fresh Debian 12 root, and systemd-nspawn to boot it with
    # systemd as its PID 1 (tests/integration/test_deb_systemd.py)
    debootstrap systemd-container
)

# shellcheck source=packaging/missing-packages.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/missing-packages.sh"
missing_packages "${PACKAGES[@]}"
if ((${#missing[@]} == 0)); then
    log "all ${#PACKAGES[@]} installed"
    exit 0
fi
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
