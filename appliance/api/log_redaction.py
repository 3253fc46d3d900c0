"""Console tickets out of the API's logs.

A browser's console WebSocket carries its ticket in the URL (`?ticket=vmt_...`:
appliance/access/tickets.py), and uvicorn logs every WebSocket handshake with
its path and query string (HOME/logs/api.log), and plain requests the same way
(access.log). A ticket refused before it is used (a bad `mode`, a full worker)
is still good for its minute, so whoever reads a log could open that console.
The API's worker (http_deadline.Worker) puts this filter on uvicorn's two
loggers: the value of a `ticket` parameter (its name as parse_qsl reads it,
percent-encoded or not) and anything shaped like a ticket or a token become
`[redacted]`; the rest of the line (who, what path, which status) stays.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
# A query parameter in a logged path: its name and value, as far as the next & or space.
_PARAMETER = re.compile(r"(?P<lead>[?&])(?P<name>[^=&\s\"]*)=(?P<value>[^&\s\"]*)")
# A ticket or an API token wherever it stands (vmt_ / vma_, the underscore maybe encoded).
_SECRET = re.compile(r"vm[at](?:_|%5f)[A-Za-z0-9_%-]+", re.IGNORECASE)
SECRET_PARAMETERS = frozenset({"ticket", "token"})


def redact(text: str) -> str:
    def parameter(match: re.Match[str]) -> str:
        if unquote_plus(match["name"]).strip().lower() not in SECRET_PARAMETERS:
            return match[0]
        return f"{match['lead']}{match['name']}={REDACTED}"

    return _SECRET.sub(REDACTED, _PARAMETER.sub(parameter, text))


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and string arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: redact(value) if isinstance(value, str) else value
                           for key, value in record.args.items()}
        return True


FILTER = RedactSecrets()
LOGGERS = ("uvicorn.error", "uvicorn.access")


def install() -> None:
    """On uvicorn's loggers (idempotent: a logger holds a filter once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if FILTER not in logger.filters:
            logger.addFilter(FILTER)
