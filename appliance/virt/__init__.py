"""Everything that touches libvirt, QEMU images and guest configuration."""
