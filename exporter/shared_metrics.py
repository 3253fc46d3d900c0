"""Where the processes of `vmctl serve` share their prometheus_client metrics.

prometheus_client decides once per process, when it is imported, whether its
metrics live in memory or in per-process files of PROMETHEUS_MULTIPROC_DIR
(its documented multiprocess mode: the variable is set before the process
starts, in an empty directory). `vmctl serve` enters that mode for itself
(`enter`, before anything imports prometheus_client) and its children inherit
it: the gunicorn workers (API histogram, scheduler metrics), the FUSE child and
the serve process itself (the controller places evacuated VMs) all write to
HOME/run/metrics, and MultiProcessCollector sums them at a scrape
(exporter/registry.py). Nothing here imports prometheus_client.

HOME/run/metrics is a symlink to a directory of random name in /dev/shm (memory),
where there is one: prometheus_client writes its files through mmap, into holes
of files it grew with ftruncate, and on a full disk such a write is SIGBUS, not
an error: with the files in the home, a full home killed the API workers and
the mount at their next request (`make soak`'s disk-full part found it). The
directory of the previous run (its symlink's target) is removed by the next
`enter` and by `leave`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
# a directory of random name made there by mkdtemp (0700): no name another user can take
SHM = Path("/dev/shm")  # noqa: S108
SHM_PREFIX = "vm-appliance-metrics-"


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV) or None


def enter(directory: Path) -> Path:
    """Put this process, and the children it starts, in multiprocess mode with a
    fresh `directory` (what a previous run left there is wiped). Must run before
    prometheus_client is imported: afterwards this process's metrics would stay
    in memory, where no worker's scrape sees them."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(f"{ENV} must be set before prometheus_client is imported")
    leave(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        directory.symlink_to(tempfile.mkdtemp(prefix=SHM_PREFIX, dir=SHM))  # mode 0700
    else:
        directory.mkdir()
    os.environ[ENV] = str(directory)
    return directory


def leave(directory: Path) -> None:
    """Remove `directory`: the symlink and the directory in /dev/shm it names (only one
    of ours: a name there of our prefix), or a plain directory."""
    if directory.is_symlink():
        target = Path(os.readlink(directory))
        if target.parent == SHM and target.name.startswith(SHM_PREFIX) and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            directory.unlink()
    else:
        shutil.rmtree(directory, ignore_errors=True)
