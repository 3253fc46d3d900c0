#!/bin/bash
# Build a small Debian 12 guest with the real cloud-init (issue 15): the image
# the opt-in test `make test-cloudinit` boots to prove ConfigDrive, NoCloud and
# the metadata service
# with cloud-init itself, not the demo guest's shell imitation.
#
# Usage: packaging/build-cloudinit-image.sh [--force] OUT.qcow2
#
#   Does nothing when OUT.qcow2 exists, unless --force. Run as root (debootstrap).
#   The .debs are cached in $VM_APPLIANCE_CACHE/debootstrap, else in
#   .cache/debootstrap next to OUT's folder's parent (.cache/images/x.qcow2 ->
#   .cache/debootstrap), so a rebuild downloads nothing.
#
# Only Debian packages from deb.debian.org and ordinary tools; nothing of the
# result is mounted (no loop devices):
#   debootstrap --variant=minbase   bookworm with systemd, udev, ifupdown
#   chroot apt-get install          linux-image-cloud-amd64, cloud-init,
#                                   openssh-server
#   chroot update-initramfs         a small initramfs (virtio and ext4 only)
#   mkfs.ext4 -d                    the root file system, filled from the tree
#   mkfs.fat + syslinux --offset    a FAT boot partition with kernel + initrd
#   python3                         the MBR partition table (no sfdisk needed)
#   qemu-img convert                to qcow2
#
# The guest: console=ttyS0; cloud-init's datasources ConfigDrive, NoCloud and
# OpenStack (the metadata service, only where the SMBIOS product is Nova's)
# only (no network probing for EC2 and the like); after cloud-init's last
# stage, vmapp-report.service prints what the test checks to the serial
# console, each line starting with "VMAPP-REPORT ":
#   hostname=NAME, key=<a line of /root/.ssh/authorized_keys>,
#   runcmd=<the content of /run/vmapp-runcmd, which a test's runcmd writes>,
#   addr=<IFACE> <ADDR/PREFIX> (each IPv4 address), route=<the default route>,
#   each "iface ..." line of /etc/network/interfaces.d, datasource=<cloud-init's>,
#   and "VMAPP-REPORT done".
# Its only DHCP client is dhclient (a dependency of cloud-init: the OpenStack
# datasource's ephemeral lease to ask the metadata service); ifupdown runs it only
# for an `inet dhcp` stanza, so an `inet static` one means the address is static.
set -euo pipefail

# shellcheck source=packaging/image-builder.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/image-builder.sh"
image_builder build-cloudinit-image "$@"
((EUID == 0)) || die "debootstrap needs root"
for tool in debootstrap chroot mkfs.ext4 mkfs.fat syslinux mcopy qemu-img python3 flock; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install debootstrap e2fsprogs dosfstools syslinux mtools qemu-utils)"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[[ -f $mbr ]] || die "$mbr not found (apt-get install syslinux-common)"

mkdir -p "$(dirname "$out")"
out_dir=$(cd "$(dirname "$out")" && pwd)
out=$out_dir/$(basename "$out")
cache=${VM_APPLIANCE_CACHE:-$(dirname "$out_dir")}/debootstrap
mkdir -p "$cache"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/vm-appliance-cloudinit.XXXXXX")
root=$work/root
mounted=()
cleanup() {
    local m
    for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
    # --one-file-system: never into a bind mount (/dev, /sys, the cache) left behind.
    rm -rf --one-file-system "$work"
    [[ -z ${tmp_out:-} ]] || rm -f "$tmp_out"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM PIPE

# --- 1. debootstrap, then apt-get in the tree (both with cached .debs) --------
# debootstrap's own installer fails to configure cloud-init's Python closure
# (python3-cryptography, found the first time): it installs a minimal base, and
# apt-get inside the tree the rest, in apt's order.
base=systemd-sysv,udev,ifupdown,iproute2,netbase
# net-tools: cloud-init's ifupdown renderer writes network_data.json's routes (the
# default route among them) as `post-up route add ...`; without `route` a static
# guest has no default route, and cannot reach 169.254.169.254 once booted.
packages=(linux-image-cloud-amd64 initramfs-tools cloud-init openssh-server net-tools)
log "debootstrap bookworm (cache $cache)"
mkdir -p "$cache/apt"
exec 9>"$cache/.lock"
flock 9
started=$SECONDS
debootstrap --variant=minbase --include="$base" --cache-dir="$cache" \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap took $((SECONDS - started)) s"
for fs in proc sys dev; do
    mount --bind "/$fs" "$root/$fs"
    mounted=("$root/$fs" "${mounted[@]}")
done
mount --bind "$cache/apt" "$root/var/cache/apt/archives"
mounted=("$root/var/cache/apt/archives" "${mounted[@]}")
# No service starts inside the tree while packages are configured.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
in_tree() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
started=$SECONDS
{ in_tree apt-get update -q &&
    in_tree apt-get install -q -y --no-install-recommends "${packages[@]}"; } \
    >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; die "apt-get install failed"; }
rm -f "$root/usr/sbin/policy-rc.d"
flock -u 9
log "apt-get install ${packages[*]} took $((SECONDS - started)) s"

# --- 2. configuration ----------------------------------------------------------
echo debian >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n' >"$root/etc/hosts"
# Only the datasources the appliance offers: no minutes of probing for EC2 etc.
# OpenStack (the metadata service) is only tried when ds-identify finds Nova's
# SMBIOS product name (`"datasource": "metadata"` VMs), never beside a drive.
cat >"$root/etc/cloud/cloud.cfg.d/90-vm-appliance.cfg" <<'EOF'
datasource_list: [ConfigDrive, NoCloud, OpenStack, None]
EOF
# ifupdown reads interfaces.d, where cloud-init writes 50-cloud-init.
cat >"$root/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
source /etc/network/interfaces.d/*
EOF
install -m 0755 /dev/stdin "$root/usr/local/sbin/vmapp-report" <<'EOF'
#!/bin/sh
# What the appliance's cloud-init test checks, on the serial console.
exec >/dev/ttyS0 2>&1
echo "VMAPP-REPORT hostname=$(hostname)"
if [ -f /root/.ssh/authorized_keys ]; then
    grep -v '^#' /root/.ssh/authorized_keys | while read -r line; do
        echo "VMAPP-REPORT key=$line"
    done
fi
[ -f /run/vmapp-runcmd ] && echo "VMAPP-REPORT runcmd=$(cat /run/vmapp-runcmd)"
ip -4 -o addr show | while read -r _ iface _ addr _; do
    echo "VMAPP-REPORT addr=$iface $addr"
done
ip -4 route show default | while read -r line; do
    echo "VMAPP-REPORT route=$line"
done
# How each interface was configured (cloud-init renders ifupdown stanzas), and
# which datasource cloud-init used.
cat /etc/network/interfaces.d/* 2>/dev/null | grep '^iface' | while read -r line; do
    echo "VMAPP-REPORT $line"
done
ds=$(sed -n 's/.*"datasource": *"\([^"]*\)".*/\1/p' /run/cloud-init/result.json 2>/dev/null)
echo "VMAPP-REPORT datasource=$ds"
echo "VMAPP-REPORT done"
EOF
cat >"$root/etc/systemd/system/vmapp-report.service" <<'EOF'
[Unit]
Description=Report cloud-init's results on the serial console (vm-appliance test image)
After=cloud-final.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vmapp-report

[Install]
WantedBy=cloud-init.target
EOF
# cloud-init.target, not multi-user.target: cloud-final.service runs after
# multi-user.target, so a unit that multi-user.target wants cannot follow it.
mkdir -p "$root/etc/systemd/system/cloud-init.target.wants"
ln -sf /etc/systemd/system/vmapp-report.service \
    "$root/etc/systemd/system/cloud-init.target.wants/vmapp-report.service"
# Under TCG every second counts: no timers that start apt or man-db.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# A small initramfs: the virtio disk and ext4 only.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod ext4 >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 ||
    { cat "$work/initramfs.log" >&2; die "update-initramfs failed"; }
for m in "${mounted[@]}"; do umount "$m"; done
mounted=()
# Smaller: no documentation, manual pages or translations in a test guest.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/usr/share/info/*
# Host keys are made at the guest's first boot (cloud-init's ssh module), not shared.
rm -f "$root"/etc/ssh/ssh_host_*
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
rm -f "$root/etc/machine-id" && touch "$root/etc/machine-id"

vmlinuz=$(ls "$root"/boot/vmlinuz-* | head -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | head -n 1)
[[ -f $vmlinuz && -f $initrd ]] || die "no kernel or initrd in the tree"

# --- 3. disk: MBR, FAT boot partition (1 MiB .. 65 MiB), ext4 root -------------
uuid=$(cat /proc/sys/kernel/random/uuid)
echo "UUID=$uuid / ext4 defaults,errors=remount-ro 0 1" >"$root/etc/fstab"
used_mib=$(du -sm "$root" | cut -f1)
root_mib=$((used_mib + used_mib / 2 + 256))
boot_mib=64
mkfs.ext4 -q -L root -U "$uuid" -d "$root" "$work/root.img" "${root_mib}M"
truncate -s "${boot_mib}M" "$work/boot.img"
mkfs.fat -n BOOT "$work/boot.img" >/dev/null
cat >"$work/syslinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 1
LABEL linux
  KERNEL vmlinuz
  APPEND initrd=initrd.img root=UUID=$uuid ro console=ttyS0 net.ifnames=0
EOF
mcopy -i "$work/boot.img" "$vmlinuz" ::vmlinuz
mcopy -i "$work/boot.img" "$initrd" ::initrd.img
mcopy -i "$work/boot.img" "$work/syslinux.cfg" ::syslinux.cfg
disk=$work/disk.img
total_mib=$((1 + boot_mib + root_mib))
truncate -s "${total_mib}M" "$disk"
dd if="$work/boot.img" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.img" of="$disk" bs=1M seek=$((1 + boot_mib)) conv=notrunc status=none
syslinux --offset $((1024 * 1024)) --install "$disk"
dd if="$mbr" of="$disk" bs=440 count=1 conv=notrunc status=none
python3 - "$disk" "$boot_mib" "$root_mib" <<'EOF'
import struct, sys
path, boot_mib, root_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SECTORS_PER_MIB = 2048
def entry(active, kind, first_mib, mib):
    # CHS fields as "beyond 1024 cylinders": firmware uses the LBA fields.
    return struct.pack("<B3sB3sII", 0x80 if active else 0, b"\xfe\xff\xff", kind,
                       b"\xfe\xff\xff", first_mib * SECTORS_PER_MIB, mib * SECTORS_PER_MIB)
table = entry(True, 0x0C, 1, boot_mib) + entry(False, 0x83, 1 + boot_mib, root_mib)
with open(path, "r+b") as disk:
    disk.seek(446)
    disk.write(table + b"\0" * 32 + b"\x55\xaa")
EOF

# --- 4. qcow2 ------------------------------------------------------------------
tmp_out=$(mktemp "$out.XXXXXX")
qemu-img convert -f raw -O qcow2 "$disk" "$tmp_out"
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$out"
tmp_out=
log "built $out ($(du -h "$out" | cut -f1) on disk, $(qemu-img info --output=json "$out" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"] >> 20)') MiB virtual)"
