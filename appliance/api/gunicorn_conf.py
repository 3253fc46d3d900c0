"""gunicorn's settings module for the API (`--config python:appliance.api.gunicorn_conf`).

Memory (issue 10, BENCHMARKS.md section 2): without it each uvicorn worker
imports the whole appliance after gunicorn forks it, ~25 MiB of Python objects
per worker that no other process shares. Here the master imports those
modules before it forks (`on_starting`), so the workers start with them
already in memory and share their pages copy-on-write; PSS divides shared
pages among the processes. Only modules are imported in the master: the app
itself (store connections, thread pools, the service) is still built in each
worker, after the fork, as before, and a worker gunicorn restarts is forked
from the same master. `gc.freeze()` before each fork keeps the collector of a
worker from writing to the objects it inherited (a collection walks and marks
every tracked object, which would copy their pages).
"""
from __future__ import annotations

import gc
from typing import Any

from appliance import sdnotify

# Under systemd, gunicorn's lines carry their priority too (appliance/api/gunicorn_journal.py).
if sdnotify.stderr_is_journal():
    logger_class = "appliance.api.gunicorn_journal.JournalLogger"


def on_starting(server: Any) -> None:
    from appliance.api.asgi import preload

    preload(server.app.app_uri)


def child_exit(server: Any, worker: Any) -> None:
    """A worker gone (SIGKILLed, or out of memory) in the middle of an upload leaves its
    `.upload-*` file: removed here, in the master (appliance/image_store.py)."""
    import os

    from appliance.config import Config
    from appliance.image_store import remove_uploads_of

    try:
        config = Config.load(os.environ.get("VMAPP_HOME", ".appliance"))
        remove_uploads_of(config.images_dir, worker.pid)
    except Exception:  # noqa: BLE001 - a cleanup; the next start removes what is left
        server.log.exception("removing the uploads of worker %s", worker.pid)


def pre_fork(server: Any, worker: Any) -> None:
    gc.collect()
    gc.freeze()
