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
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV) or None


def enter(directory: Path) -> Path:
    """Put this process, and the children it starts, in multiprocess mode with a
    fresh `directory` (what a previous run left there is wiped). Must run before
    prometheus_client is imported: afterwards this process's metrics would stay
    in memory, where no worker's scrape sees them."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(f"{ENV} must be set before prometheus_client is imported")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[ENV] = str(directory)
    return directory
