#!/bin/bash
# Build vm-appliance_VERSION_ARCH.deb in the repository's root (`make deb`).
#
#   bash packaging/deb/build.sh
#
# The tree's files (tracked and new, not ignored) are copied to
# .cache/deb/vm-appliance-VERSION/ with packaging/debian/ as its debian/, and
# dpkg-buildpackage runs there (its outputs land beside that copy, not in the
# repository's parent). VERSION is pyproject.toml's; debian/changelog is
# written from it, so the two cannot differ. Needs packaging/deb/build-deps.sh's
# packages, PyPI (the virtualenv) and npm's registry (the web page's libraries).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
[[ -n $VERSION ]] || { echo "deb: no version in pyproject.toml" >&2; exit 1; }
OUT=.cache/deb
SRC=$OUT/vm-appliance-$VERSION
ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
DEB=vm-appliance_${VERSION}_${ARCH}.deb

# A fresh copy of the sources, keeping the build's caches (the pyfuse3 wheel,
# the vendored web libraries' stamp) from the previous run.
mkdir -p "$SRC"
keep=(debian/.pyfuse3-wheel debian/.build-venv appliance/web/vendor)
for k in "${keep[@]}"; do
    if [[ -e $SRC/$k ]]; then mkdir -p "$OUT/keep/$(dirname "$k")"; mv "$SRC/$k" "$OUT/keep/$k"; fi
done
rm -rf "$SRC"
mkdir -p "$SRC"
# (a file deleted but not yet committed is skipped: it is not in the tree)
git ls-files -z --cached --others --exclude-standard -- . ':!packaging/debian' \
    | while IFS= read -r -d '' f; do if [[ -e $f ]]; then printf '%s\0' "$f"; fi; done \
    | xargs -0 cp --parents -t "$SRC"
cp -r packaging/debian "$SRC/debian"
for k in "${keep[@]}"; do
    if [[ -e $OUT/keep/$k ]]; then mkdir -p "$SRC/$(dirname "$k")"; mv "$OUT/keep/$k" "$SRC/$k"; fi
done
rm -rf "$OUT/keep"
cat >"$SRC/debian/changelog" <<CHANGELOG
vm-appliance ($VERSION) unstable; urgency=medium

  * vm-appliance $VERSION (pyproject.toml).

 -- vm-appliance maintainers <root@localhost>  $(date -R -d "@$(git log -1 --format=%ct)")
CHANGELOG

start=$(date +%s)
(cd "$SRC" && dpkg-buildpackage -b -us -uc)
mv -f "$OUT/$DEB" "$ROOT/$DEB"
echo "deb: $DEB, $(du -h "$ROOT/$DEB" | cut -f1), built in $(( $(date +%s) - start )) s"
