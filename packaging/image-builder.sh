# Sourced by the guest image builders (build-demo-image.sh, build-cloudinit-image.sh):
# their log and die lines, and their command line, `[--force] OUT.qcow2`, with nothing
# to do when OUT.qcow2 exists unless --force. Not run by itself.
#
#   image_builder NAME "$@"   sets $out (as given) and $force, or exits: 2 on a usage
#                             error, 0 when OUT exists and --force is not given
log() { printf '%s: %s\n' "$builder" "$*"; }
die() { printf '%s: error: %s\n' "$builder" "$*" >&2; exit 1; }
usage() { echo "usage: $0 [--force] OUT.qcow2" >&2; exit 2; }

image_builder() {
    builder=$1
    shift
    force=0
    out=
    for arg in "$@"; do
        case "$arg" in
            --force) force=1 ;;
            -*) usage ;;
            *) [[ -z $out ]] || usage; out=$arg ;;
        esac
    done
    [[ -n $out ]] || usage
    if [[ -e $out && $force -eq 0 ]]; then
        log "$out exists, nothing to do (--force rebuilds)"
        exit 0
    fi
}
