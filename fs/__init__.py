"""The filesystem view: the appliance's resource tree mounted with pyfuse3 + trio.

`operations.ApplianceFS` translates a FUSE operation into one call of `tree.Tree`
(which reads the files of VM and host directories from appliance.files, the
table REST serves too), and the service's exceptions into errnos (one table);
`handles` keeps what an open file read and what it wrote; `mount.run` mounts it,
serves until a signal, and unmounts.
"""
