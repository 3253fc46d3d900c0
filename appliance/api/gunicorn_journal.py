"""gunicorn's error log (its own lines and the uvicorn workers', which share its
handlers) as the journal wants it when serve runs under systemd: each line with
its priority prefix, no timestamp of its own (appliance/sdnotify.py's
JournalFormatter), so that `journalctl -u vm-appliance -p err` shows a worker
gunicorn had to kill. Chosen by appliance/api/gunicorn_conf.py (logger_class)
only when stderr is the journal; the access log (a file) is left as it is."""
from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from appliance.sdnotify import JournalFormatter

FORMAT = "[%(process)d] [%(levelname)s] %(message)s"


class JournalLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if getattr(handler, "_gunicorn", False):  # the stderr handler gunicorn made
                handler.setFormatter(JournalFormatter(FORMAT))
