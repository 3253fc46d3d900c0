"""Prometheus exporter: VM and host families from libvirt, appliance families from the store."""
