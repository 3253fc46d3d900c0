"""vm-appliance: real VMs on libvirt, shown as a file tree and as REST."""
