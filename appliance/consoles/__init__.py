"""Consoles: the broker that holds the VMs' serial consoles, VNC displays and
screenshots (`python -m appliance.consoles --home HOME`, a child of `vmctl
serve`), and the client functions everyone else calls (client.py)."""
