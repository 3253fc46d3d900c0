"""The metadata service at http://169.254.169.254/ (issue 15): Nova's OpenStack and
EC2 layouts for the VM a request comes from. `vmctl serve` runs it as its child
"metadata" (python -m appliance.metadata); see service.py for the mechanism."""
