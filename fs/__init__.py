"""The filesystem view: the appliance's resource tree mounted with pyfuse3 + trio.

`operations.ApplianceFS` translates a path and a FUSE operation into one
service call, and the service's exceptions into errnos (one table);
`mount.run` mounts it, serves until a signal, and unmounts.
"""
