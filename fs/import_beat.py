"""The mount's beat on its running image imports (fs/image_imports.py): every
BEAT_SECONDS, the store is told which `image-import` operations this mount still
writes or checks, so that a controller in another pid namespace, where the mount's pid
means nothing, can end those of a mount that is gone (appliance/service/images.py).

One daemon thread, started by the first import and ended once none is left; an import
is beaten from before its operation is recorded until its operation ends (its check
and conversion included, which take minutes for a large image)."""
from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyfuse3

from appliance.service.images import BEAT_SECONDS

if TYPE_CHECKING:
    from appliance.service import Service

log = logging.getLogger("vmctl.fs")


class ImportBeat:
    def __init__(self, service: Service):
        self._service = service  # its image_files_beat, at each beat
        self._lock = threading.Lock()
        self._live: set[str] = set()  # the operations beaten
        self._starting = 0  # imports being recorded: the thread waits for them
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def starting(self) -> Iterator[Callable[[str], None]]:
        """Around the recording of an import, which calls what this yields with its
        operation's id. The thread runs from here on (EAGAIN, before anything is
        recorded, when the system has no thread to give) and does not end before the
        import is beaten."""
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="import-beat", daemon=True)
                try:
                    thread.start()
                except RuntimeError as err:  # pids.max, TasksMax
                    log.warning("no thread for the image imports' beat: %s", err)
                    raise pyfuse3.FUSEError(errno.EAGAIN) from err
                self._thread = thread
            self._starting += 1
        try:
            yield self._add
        finally:
            with self._lock:
                self._starting -= 1

    def _add(self, op_id: str) -> None:
        with self._lock:
            self._live.add(op_id)

    def done(self, op_id: str) -> None:
        """The import's operation ended (succeeded, failed or cancelled)."""
        with self._lock:
            self._live.discard(op_id)

    def _run(self) -> None:
        while True:
            time.sleep(BEAT_SECONDS)
            with self._lock:
                ids = sorted(self._live)
                if not ids and not self._starting:
                    self._thread = None
                    return
            if not ids:
                continue
            try:
                self._service.image_files_beat(ids)
            except Exception:  # a busy or full store: the next beat tries again
                log.exception("could not record the image imports' beat")
