#!/usr/bin/env bash
# Install pyfuse3 3.5.0 into a virtualenv, built from its PyPI sdist with
# noflush.patch (FileInfo.noflush: FOPEN_NOFLUSH in the open reply, so the
# kernel sends no FLUSH at close for the mount's read-only opens; fs/operations.py).
#
#   bash packaging/pyfuse3/build.sh VENV             # install it into VENV
#   bash packaging/pyfuse3/build.sh VENV WHEEL_DIR   # build its wheel into WHEEL_DIR
#                                                    # (with VENV's pip), for the .deb
#
# Idempotent: nothing is done when VENV's pyfuse3 is 3.5.0 with noflush (or
# WHEEL_DIR already holds the patched wheel, with its stamp). The
# sdist is checked against its pinned sha256, and its build tools (Cython,
# setuptools) are pinned in build-constraints.txt. Needs gcc, pkg-config,
# libfuse3-dev, python3-dev and patch, and a pip that knows --build-constraint
# (>= 25.3: the Makefile upgrades it first) (packaging/setup-host.sh installs them).
# tests/unit/fs/test_pyfuse3_noflush.py fails when the installed pyfuse3 lacks it.
set -euo pipefail

VENV=${1:?usage: build.sh VENV [WHEEL_DIR]}
WHEEL_DIR=${2:-}
PY="$VENV/bin/python"
VERSION=3.5.0
SDIST_SHA256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
HERE=$(cd "$(dirname "$0")" && pwd)
# What the wheel was made from: a changed patch or pin makes a new wheel.
STAMP="$VERSION $SDIST_SHA256 $(cat "$HERE/noflush.patch" "$HERE/build-constraints.txt" | sha256sum | cut -c1-64)"

if [[ -n $WHEEL_DIR ]]; then
    if [[ -f $WHEEL_DIR/.stamp && $(<"$WHEEL_DIR/.stamp") == "$STAMP" ]] \
        && compgen -G "$WHEEL_DIR/pyfuse3-$VERSION-*.whl" >/dev/null; then
        echo "pyfuse3 $VERSION with noflush: wheel already in $WHEEL_DIR"
        exit 0
    fi
elif "$PY" - "$VERSION" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
import pyfuse3
sys.exit(0 if version("pyfuse3") == sys.argv[1] and hasattr(pyfuse3.FileInfo, "noflush") else 1)
PYEOF
then
    echo "pyfuse3 $VERSION with noflush: already installed in $VENV"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip=("$PY" -m pip --disable-pip-version-check)
"${pip[@]}" download --quiet --no-deps --no-binary pyfuse3 \
    --build-constraint "$HERE/build-constraints.txt" -d "$work" "pyfuse3==$VERSION"
echo "$SDIST_SHA256  $work/pyfuse3-$VERSION.tar.gz" | sha256sum --check --quiet
tar -xzf "$work/pyfuse3-$VERSION.tar.gz" -C "$work"
src="$work/pyfuse3-$VERSION"
patch --quiet --forward -p1 -d "$src" < "$HERE/noflush.patch"
rm -f "$src/src/pyfuse3/__init__.c"  # generated from the unpatched .pyx: Cython makes it again
if [[ -n $WHEEL_DIR ]]; then
    mkdir -p "$WHEEL_DIR"
    rm -f "$WHEEL_DIR"/pyfuse3-*.whl "$WHEEL_DIR/.stamp"
    "${pip[@]}" wheel --quiet --no-deps --build-constraint "$HERE/build-constraints.txt" \
        -w "$WHEEL_DIR" "$src"
    echo "$STAMP" >"$WHEEL_DIR/.stamp"
    echo "pyfuse3 $VERSION with noflush: wheel in $WHEEL_DIR"
    exit 0
fi
# Only pyfuse3 itself is replaced; its one dependency, trio, as pyproject.toml bounds it.
"${pip[@]}" install --quiet --no-deps --force-reinstall \
    --build-constraint "$HERE/build-constraints.txt" "$src"
"${pip[@]}" install --quiet "trio>=0.22"
"$PY" -c 'import pyfuse3; assert pyfuse3.FileInfo(noflush=True).noflush'
echo "pyfuse3 $VERSION with noflush: installed in $VENV"
