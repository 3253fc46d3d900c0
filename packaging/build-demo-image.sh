#!/bin/bash
# Build the vm-appliance demo/test guest: Debian's cloud kernel plus a busybox
# initramfs on a small FAT disk booted by syslinux, as a qcow2 base image.
#
# Usage: packaging/build-demo-image.sh [--force] OUT.qcow2
#
#   Does nothing when OUT.qcow2 exists, unless --force.
#   Downloaded .debs are cached in $VM_APPLIANCE_CACHE, else
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vm-appliance, so a rebuild needs no network.
#
# Only Debian packages and ordinary tools are used, and nothing is mounted (no
# loop devices, works in containers and as non-root once the cache is filled):
#   apt-get download + dpkg -x   kernel, busybox-static, qemu-guest-agent and
#                                the libraries it links (from their .debs)
#   ld.so --list                 which of those libraries qemu-ga loads
#   busybox depmod               modules.dep (kmod may not be installed)
#   cpio + gzip                  initramfs with packaging/demo-guest/init
#   mkfs.fat + syslinux + mcopy  the bootable FAT disk image
#   qemu-img convert             to qcow2
# Host packages: setup-host.sh installs syslinux syslinux-common mtools
# dosfstools cpio qemu-utils.
#
# The guest's console contract (the lines the appliance waits for) is
# documented at the top of packaging/demo-guest/init.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=packaging/image-builder.sh
. "$here/image-builder.sh"
image_builder build-demo-image "$@"

guest_dir=$here/demo-guest
for tool in apt-get apt-cache dpkg cpio gzip mkfs.fat syslinux mcopy qemu-img flock sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found (run packaging/setup-host.sh)"
done

mkdir -p "$(dirname "$out")"
out_dir=$(cd "$(dirname "$out")" && pwd)
out=$out_dir/$(basename "$out")

if [[ -n ${VM_APPLIANCE_CACHE:-} ]]; then
    cache=$VM_APPLIANCE_CACHE
elif [[ -n ${XDG_CACHE_HOME:-} || -n ${HOME:-} ]]; then
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/vm-appliance
else
    cache=$out_dir/.vm-appliance-cache
fi
cache=$cache/debs
mkdir -p "$cache"

work=$(mktemp -d "${TMPDIR:-/tmp}/vm-appliance-demo.XXXXXX")
tmp_out=
trap 'rm -rf "$work"; [[ -z $tmp_out ]] || rm -f "$tmp_out"' EXIT
# Turn signals into a normal exit so the EXIT trap above still cleans up.
trap 'exit 1' HUP INT TERM PIPE

# As root, apt-get download would try to fetch as the _apt user, warn that it
# cannot write to our folder and fall back to root: ask for root directly.
apt_opts=()
((EUID != 0)) || apt_opts=(-o APT::Sandbox::User=root)

# --- 1. which kernel --------------------------------------------------------
# linux-image-cloud-amd64 is a metapackage; it depends on the current
# linux-image-<ver>-cloud-amd64, the package with the files.
kernel_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}
kpkg=$(kernel_pkg)
if [[ -z $kpkg && $EUID -eq 0 ]]; then
    # A fresh machine may have no package lists yet.
    log "no package lists, running apt-get update"
    apt-get update -qq
    kpkg=$(kernel_pkg)
fi
[[ -n $kpkg ]] || die "apt-cache knows no linux-image-cloud-amd64 (run apt-get update as root)"
kver=${kpkg#linux-image-}

# --- 2. download (cached) ---------------------------------------------------
# `apt-get download --print-uris` names each file and its SHA256 without
# downloading, so a cached file is reused only if it is exactly that package.
# (One apt-get call for both packages: loading apt's cache takes ~1 s.)
# qemu-guest-agent and its library packages: the Depends closure (libc6,
# glib...), from the package lists, so the same lists give the same files.
agent_packages=()
while IFS= read -r pkg; do
    agent_packages+=("$pkg")
done < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances --no-pre-depends qemu-guest-agent 2>/dev/null |
    grep -v '^[ <]' | LC_ALL=C sort -u)
[[ " ${agent_packages[*]} " == *" qemu-guest-agent "* ]] ||
    die "apt-cache knows no qemu-guest-agent (run apt-get update as root)"
packages=("$kpkg" busybox-static "${agent_packages[@]}")
print_uris() { apt-get "${apt_opts[@]}" download --print-uris "${packages[@]}" 2>/dev/null; }
uris=$(print_uris) || true # a missing package is reported by fetch_deb
fetch_deb() { # PKG [RETRY] -> prints the path of the verified .deb in the cache
    local pkg=$1 retry=${2:-} line file hash
    line=$(grep -F " ${pkg}_" <<<"$uris" | head -n 1) || true
    [[ -n $line ]] || die "apt-get cannot find package $pkg"
    read -r _ file _ hash <<<"$line"
    hash=${hash#SHA256:}
    if ! [[ -f $cache/$file ]] || ! sha256sum --status -c <<<"$hash  $cache/$file"; then
        log "downloading $pkg" >&2
        rm -f "${cache:?}/$file"
        if ! (cd "$cache" && apt-get "${apt_opts[@]}" -q download "$pkg" >&2); then
            # Stale package lists can name a file the mirror has replaced.
            [[ -z $retry && $EUID -eq 0 ]] || die "download of $pkg failed"
            apt-get update -qq >&2
            uris=$(print_uris) || true
            fetch_deb "$pkg" retry
            return
        fi
        sha256sum --status -c <<<"$hash  $cache/$file" || die "$file: checksum mismatch"
    fi
    # Drop other versions of the same package so the cache does not grow.
    find "$cache" -maxdepth 1 -name "${pkg}_*.deb" ! -name "$file" -delete
    echo "$cache/$file"
}
# Concurrent builds share the cache: one downloads, the others wait.
exec 9>"$cache/.lock"
flock 9
kdeb=$(fetch_deb "$kpkg")
bbdeb=$(fetch_deb busybox-static)
agent_debs=()
for pkg in "${agent_packages[@]}"; do
    agent_debs+=("$(fetch_deb "$pkg")")
done
flock -u 9
log "kernel $kver, $(basename "$bbdeb"), qemu-guest-agent and ${#agent_debs[@]} packages"

dpkg -x "$kdeb" "$work/kernel"
dpkg -x "$bbdeb" "$work/busybox"
for deb in "${agent_debs[@]}"; do dpkg -x "$deb" "$work/agent"; done
busybox=$work/busybox/bin/busybox
vmlinuz=$work/kernel/boot/vmlinuz-$kver
moddir=$work/kernel/lib/modules/$kver
[[ -x $busybox ]] || die "busybox-static has no bin/busybox"
[[ -f $vmlinuz && -d $moddir ]] || die "$kpkg has no vmlinuz or modules"

# --- 3. kernel modules in dependency order ----------------------------------
# The .deb ships no modules.dep (its postinst runs depmod); make one.
"$busybox" depmod -b "$work/kernel" "$kver"

# Required: disks, seed ISO, NIC, ACPI power button -> input event for acpid,
# virtio_console for the guest agent's port.
# Optional: CD-ROM / SCSI for a seed attached that way, memory balloon,
# virtio-mem (memory added and removed live).
required_modules=(virtio_pci virtio_blk virtio_net isofs button evdev virtio_console)
optional_modules=(virtio_scsi sd_mod sr_mod virtio_balloon virtio_mem)

declare -A mod_deps=() mod_path=() builtin=() seen=()
while IFS= read -r line; do
    path=${line%%:*}
    mod_deps[$path]=${line#*:}
    name=${path##*/}; name=${name%%.ko*}
    mod_path[${name//-/_}]=$path
done <"$moddir/modules.dep"
while IFS= read -r path; do
    name=${path##*/}; name=${name%%.ko*}
    builtin[${name//-/_}]=1
done <"$moddir/modules.builtin"

load_order=()
add_module() { # PATH: its dependencies first, each module once
    local path=$1 dep
    [[ -z ${seen[$path]:-} ]] || return 0
    seen[$path]=1
    for dep in ${mod_deps[$path]}; do add_module "$dep"; done
    load_order+=("$path")
}
add_named() { # NAME [required]
    local name=$1
    if [[ -n ${mod_path[$name]:-} ]]; then
        add_module "${mod_path[$name]}"
    elif [[ -n ${builtin[$name]:-} ]]; then
        : # built into this kernel, nothing to load
    elif [[ -n ${2:-} ]]; then
        die "kernel $kver has no module $name"
    else
        log "note: kernel $kver has no module $name (optional, skipped)"
    fi
}
for name in "${required_modules[@]}"; do add_named "$name" required; done
for name in "${optional_modules[@]}"; do add_named "$name"; done
# The guest agent's files stay on the FAT boot disk (below), mounted read-only
# in the background after boot: its modules load there too, not before the prompt.
boot_modules=${#load_order[@]}
for name in vfat nls_cp437 nls_ascii nls_utf8; do add_named "$name" required; done

# --- 4. initramfs -----------------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,etc/vm-appliance,proc,sys,dev,tmp,run,mnt,root,var/log}
cp "$busybox" "$root/bin/busybox"
# Applet links made now, not by `busybox --install` at boot: saves boot time.
# (Running the static amd64 busybox here is fine: the image is amd64 too.)
while IFS= read -r applet; do
    [[ $applet == bin/busybox ]] && continue
    [[ -e $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
done < <("$busybox" --list-full)

for path in "${load_order[@]}"; do
    mkdir -p "$root/lib/modules/$kver/${path%/*}"
    cp "$moddir/$path" "$root/lib/modules/$kver/$path"
done
printf '%s\n' "${load_order[@]:0:boot_modules}" >"$root/etc/vm-appliance/modules"
printf '%s\n' "${load_order[@]:boot_modules}" >"$root/etc/vm-appliance/agent-modules"

# --- qemu-guest-agent: the binary and the libraries it loads ---------------
# The packages' own ld.so lists what qemu-ga loads (run here: the image is
# amd64 too); only those files are kept (~6 MB of the closure's ~20 MB), in
# one folder that goes on the FAT boot disk as /agent, NOT in the initramfs:
# there they would cost every boot ~1.3 s of TCG CPU time to unpack before
# init even starts. The guest's init mounts the FAT read-only once it is up;
# the initramfs only has links into that mount (the ld.so named in qemu-ga's
# ELF header, and qemu-ga on the PATH) and the fsfreeze hook.
agent_libs="$work/agent/lib/x86_64-linux-gnu:$work/agent/usr/lib/x86_64-linux-gnu"
agent_ldso=$work/agent/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[[ -x $work/agent/usr/sbin/qemu-ga && -x $agent_ldso ]] || die "qemu-guest-agent or libc6 has no qemu-ga or ld.so"
agent_dir=$work/agentfs
mkdir -p "$agent_dir" "$root/lib64" "$root/etc/qemu"
cp "$work/agent/usr/sbin/qemu-ga" "$agent_ldso" "$agent_dir/"
while read -r soname _ path _; do
    [[ $path == "$work"/* ]] || die "qemu-ga needs $soname, which its packages do not ship"
    cp -L "$path" "$agent_dir/$soname"
done < <("$agent_ldso" --library-path "$agent_libs" --list "$work/agent/usr/sbin/qemu-ga" |
    grep -F ' => ' | grep -v '^[[:space:]]*/')
ln -s /run/boot/agent/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
ln -s /run/boot/agent/qemu-ga "$root/usr/sbin/qemu-ga"
install -m 0755 "$guest_dir/fsfreeze-hook" "$root/etc/qemu/fsfreeze-hook"

install -m 0755 "$guest_dir/init" "$root/init"
install -m 0755 "$guest_dir/udhcpc.script" "$root/etc/udhcpc.script"
install -m 0755 "$guest_dir/hotplug" "$root/etc/vm-appliance/hotplug"
install -m 0755 "$guest_dir/agent" "$root/etc/vm-appliance/agent"
# busybox acpid runs <confdir>/PWRF/00000080 for the power button.
install -m 0755 "$guest_dir/acpi-power-button" "$root/etc/acpi/PWRF/00000080"
install -m 0644 "$guest_dir/profile" "$root/etc/profile"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
printf '127.0.0.1\tlocalhost\n' >"$root/etc/hosts"
echo demo >"$root/etc/hostname"

# --owner=0:0: files belong to root in the guest even when built by another user.
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet) |
    gzip -9 >"$work/initrd.gz"

# --- 5. bootable FAT disk ---------------------------------------------------
# A "superfloppy" (no partition table): SeaBIOS runs the FAT boot sector that
# `syslinux --install` writes, which loads the kernel and initrd from the FAT.
# PROMPT 0 + TIMEOUT 1: no boot menu wait. quiet: kernel messages slow the
# TCG boot (~0.6 s) and could interleave with the guest's console lines.
# cryptomgr.notests: skips the kernel's crypto self-tests (~0.3 s under TCG).
# Memory hotplug (the appliance gives VMs a virtio-mem device): hot-added
# memory is onlined by the kernel, movable where the ratio allows (so it can
# be unplugged again); swiotlb=noforce: the hotplug area above 4 GiB would
# otherwise make the kernel reserve 64 MiB of bounce buffers, which a 128 MiB
# guest cannot spare (virtio needs none).
cat >"$work/syslinux.cfg" <<'EOF'
DEFAULT linux
PROMPT 0
TIMEOUT 1
LABEL linux
  KERNEL vmlinuz
  APPEND initrd=initrd.gz console=ttyS0 quiet cryptomgr.notests swiotlb=noforce memhp_default_state=online memory_hotplug.online_policy=auto-movable
EOF
disk=$work/disk.img
truncate -s 64M "$disk"
mkfs.fat -n VMAPPDEMO "$disk" >/dev/null
syslinux --install "$disk"
mcopy -i "$disk" "$vmlinuz" ::vmlinuz
mcopy -i "$disk" "$work/initrd.gz" ::initrd.gz
mcopy -i "$disk" "$work/syslinux.cfg" ::syslinux.cfg
mcopy -s -i "$disk" "$agent_dir" ::agent

# --- 6. qcow2 ---------------------------------------------------------------
# Written next to OUT and renamed, so OUT is never seen half-written.
tmp_out=$(mktemp "$out.XXXXXX")
qemu-img convert -f raw -O qcow2 "$disk" "$tmp_out"
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$out"
log "built $out ($(du -h "$out" | cut -f1), kernel $kver, initrd $(du -h "$work/initrd.gz" | cut -f1))"
