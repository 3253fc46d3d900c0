"""The controller, split per concern as KubeVirt's virt-controller is (see loop.py)."""
from appliance.controller.loop import Controller

__all__ = ["Controller"]
