#!/bin/bash
# Prepare a Debian 12 host for vm-appliance: packages, libvirt's QEMU config,
# and running virtlogd + libvirtd without systemd.
#
# Usage (as root):  packaging/setup-host.sh
#
# Idempotent: a second run checks each step, changes nothing that is already
# right, and finishes in well under a second. It never stops a process it did
# not start, except the system libvirtd (the one in /run/libvirtd.pid) when
# qemu.conf had to be changed, because libvirtd only reads qemu.conf at start.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*"; }
die() { printf 'setup-host: error: %s\n' "$*" >&2; exit 1; }

[[ ${EUID} -eq 0 ]] || die "must run as root (installs packages, starts libvirtd)"

URI=qemu:///system
QEMU_CONF=/etc/libvirt/qemu.conf
LIBVIRTD_PID=/run/libvirtd.pid
VIRTLOGD_PID=/run/virtlogd.pid
# Daemon start-up output goes here rather than to our stdout: a caller that
# captures our output (CI, subprocess pipes) must not be kept waiting by a
# daemon that still holds the pipe open.
START_LOG=/var/log/libvirt/daemon-start.log

PACKAGES=(
    # hypervisor and management
    qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
    # building libvirt-python from PyPI needs these
    libvirt-dev pkg-config
    # the FUSE view of the appliance (pyfuse3 builds against libfuse3)
    fuse3 libfuse3-dev
    # libvirt's DHCP/DNS helper for NAT networks
    dnsmasq-base
    # packaging/build-demo-image.sh: bootable FAT disk + initramfs
    syslinux syslinux-common mtools dosfstools cpio
    # tests/integration/test_disks_live.py: a bootable ISO (isolinux) made at test time
    xorriso isolinux
    # the project's virtualenv
    python3-venv
    # libvirt-python and pyfuse3 compile against the Python headers
    python3-dev gcc
    # packaging/pyfuse3/build.sh applies noflush.patch to pyfuse3's sdist
    patch
    # monitoring peers used by tests and benchmarks
    prometheus prometheus-libvirt-exporter
    # the HTTP load generator of `make bench`
    wrk
    # the web page's real-browser test and first-paint benchmark (selenium drives them)
    chromium chromium-driver
    # UEFI firmware (OVMF, with its descriptors for libvirt's autoselection) and the
    # virtual TPM's emulator (issue 14: firmware, tpm)
    ovmf swtpm swtpm-tools
    # tests/unit/appliance/test_cli_docs.py loads `vmctl completion zsh` into a real zsh
    zsh
    # tests/fs/test_fs_editors.py: real editors save through a temporary file renamed over
    # spec.json in the mount (issue 16)
    vim nano
    # remote hosts over ssh (tests/integration/test_remote_hosts.py): an sshd the
    # test starts on 127.0.0.1, and nc for libvirt's remote side of a socket= URI
    openssh-server openssh-client netcat-openbsd
)

# --- 1. packages ------------------------------------------------------------
# dpkg-query is fast and offline; only when something is missing do we pay for
# `apt-get update` (a fresh machine may have no package lists at all, and stale
# lists can point at files the mirror no longer has).
# shellcheck source=packaging/missing-packages.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/missing-packages.sh"
missing_packages "${PACKAGES[@]}"
if ((${#missing[@]} == 0)); then
    log "packages: all ${#PACKAGES[@]} installed"
else
    log "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start their own services (prometheus on :9090, the
    # exporter on :9177, libvirtd from its init script): the appliance and its
    # tests start what they need. policy-rc.d answering 101 ("action
    # forbidden") tells invoke-rc.d so; one already present is left alone.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, from vm-appliance setup-host.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    # --force-confdef/--force-confold: a qemu.conf edited by an earlier run
    # would otherwise stop dpkg at an interactive "keep or replace?" prompt.
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${PACKAGES[@]}"
fi

# --- 2. qemu.conf: run QEMU as root -----------------------------------------
# By default QEMU runs as libvirt-qemu, which cannot open /dev/kvm (mode 0600
# here) nor disks under root-owned folders the appliance uses.
set_qemu_conf() { # KEY VALUE -> returns 0 if the file was changed
    local key=$1 value=$2
    if grep -Eq "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"${value}\"[[:space:]]*$" "$QEMU_CONF"; then
        return 1
    fi
    if grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF"; then
        sed -i -E "s|^[[:space:]]*${key}[[:space:]]*=.*|${key} = \"${value}\"|" "$QEMU_CONF"
    else
        printf '\n# set by vm-appliance packaging/setup-host.sh\n%s = "%s"\n' "$key" "$value" >>"$QEMU_CONF"
    fi
    return 0
}
conf_changed=0
set_qemu_conf user root && conf_changed=1
set_qemu_conf group root && conf_changed=1
if ((conf_changed)); then
    log "qemu.conf: set user/group = root"
else
    log "qemu.conf: already user/group = root"
fi
# The virtual TPM's emulator (swtpm) runs as Debian's tss user, said explicitly:
# unset, libvirtd picks tss only if that user existed when it started, and root
# otherwise (a libvirtd started before swtpm-tools was installed), so the user
# changed with the next libvirtd restart. Files a root swtpm left in the local
# CA's folder (its lock, its serial) then made every TPM VM's create fail with
# "Need read/write rights on /var/lib/swtpm-localca/.lock.swtpm-localca".
tpm_changed=0
set_qemu_conf swtpm_user tss && tpm_changed=1
set_qemu_conf swtpm_group tss && tpm_changed=1
if ((tpm_changed)); then
    conf_changed=1
    log "qemu.conf: set swtpm_user/swtpm_group = tss"
fi
if [[ -d /var/lib/swtpm-localca ]] && [[ -n $(find /var/lib/swtpm-localca -mindepth 1 ! -user tss -print -quit) ]]; then
    find /var/lib/swtpm-localca -mindepth 1 ! -user tss -exec chown tss:tss {} +
    log "swtpm-localca: files handed back to tss"
fi

# --- 3. daemons (no systemd here) -------------------------------------------
# A pid file alone is not proof: after a container restart it may name a pid
# that now belongs to something else, so the process name is checked too.
# (pgrep is not used: libvirtd instances of other "hosts" in their own mount
# namespaces would match it, and they are not ours to judge.)
# A zombie (exited, not yet reaped: PID 1 of a container may never reap it)
# still has /proc/PID/comm, so its state is checked as well.
proc_running() { # PID -> 0 if the process exists and is not a zombie
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z && ${stat:0:1} != X ]]
}
pid_alive() { # PIDFILE NAME
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && proc_running "$pid"
}
virsh_ok() { virsh -c "$URI" version >/dev/null 2>&1; }

mkdir -p /var/log/libvirt /run/libvirt

if pid_alive "$VIRTLOGD_PID" virtlogd; then
    log "virtlogd: running (pid $(<"$VIRTLOGD_PID"))"
else
    log "virtlogd: starting"
    virtlogd -d -p "$VIRTLOGD_PID" </dev/null >>"$START_LOG" 2>&1 ||
        die "virtlogd failed to start (see $START_LOG)"
fi

if pid_alive "$LIBVIRTD_PID" libvirtd && ((conf_changed)); then
    pid=$(<"$LIBVIRTD_PID")
    log "libvirtd: restarting (pid $pid) to pick up qemu.conf"
    kill -TERM "$pid"
    # Running guests survive this: libvirtd reconnects to them on start.
    for _ in $(seq 1 100); do
        proc_running "$pid" || break
        sleep 0.1
    done
    ! proc_running "$pid" || die "libvirtd (pid $pid) did not exit after SIGTERM"
fi

if pid_alive "$LIBVIRTD_PID" libvirtd; then
    log "libvirtd: running (pid $(<"$LIBVIRTD_PID"))"
else
    log "libvirtd: starting"
    libvirtd -d -p "$LIBVIRTD_PID" </dev/null >>"$START_LOG" 2>&1 ||
        die "libvirtd failed to start (see $START_LOG)"
fi

# libvirtd forks into the background before its socket is ready: wait for a
# real answer rather than trusting the pid. Usually that is under a second,
# but the very first start on a machine probes QEMU's capabilities (8-15 s
# measured here under TCG), so allow up to 60 s; the loop ends at the first
# answer, so the long limit costs nothing when all is well.
for _ in $(seq 1 600); do
    virsh_ok && break
    sleep 0.1
done
virsh_ok || die "libvirtd does not answer on $URI after 60 s (see $START_LOG)"
version=$(virsh -c "$URI" version 2>/dev/null || true)
log "ready: $URI, $(sed -n 's/^Running hypervisor: //p' <<<"$version")"
