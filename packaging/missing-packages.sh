# Sourced by setup-host.sh and deb/build-deps.sh: which Debian packages are not
# installed, from dpkg-query (fast and offline: only when something is missing is
# `apt-get update` worth its time). Not run by itself.
#
#   missing_packages PKG...   sets the array `missing` to those of PKG... not installed
missing_packages() {
    local pkg status
    missing=()
    for pkg in "$@"; do
        # Status-Abbrev is want/state/error, e.g. "ii ": judge the installed
        # state and error flag only, not what someone last asked dpkg for.
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [[ ${status:1:2} == "i " ]] || missing+=("$pkg")
    done
}
