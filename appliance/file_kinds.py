"""What an entry of the file tables (appliance/files.py) is: a File of a Directory,
read as text (or, for a binary file, as bytes made when read), written as text (or,
for the console, as bytes as they come), with what REST answers with; and the text
forms both views share.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from appliance.access.principal import actor_text
from appliance.errors import Forbidden, Invalid, NotFound

if TYPE_CHECKING:
    from appliance.service import Service

# Content types, as REST answers them (Falcon's MEDIA_TEXT, MEDIA_JSON, MEDIA_XML).
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
XML = "application/xml"
PNG = "image/png"
MAX_INT = 2**62  # SQLite integers are 64-bit: the largest offset or event id asked for
# One write typed into a console: the broker's `input` takes at most this much at once
# (appliance/consoles/protocol.py); a shell's line is far below it. More is refused whole.
CONSOLE_INPUT_MAX_BYTES = 64 << 10


class Query(Protocol):
    """The query string of a REST read (a falcon.Request), for a JSON form with parameters."""

    def get_param_as_int(self, name: str, required: bool = False, min_value: int | None = None,
                         max_value: int | None = None, store: dict | None = None,
                         default: int | None = None) -> int | None: ...


@dataclass(frozen=True)
class Written:
    """What a write started: the operations to wait for, the directory's name
    after it (spec.json may rename a VM), and the service's answer, if any."""

    name: str
    operations: tuple[dict, ...] = ()
    answer: dict | None = None


Reader = Callable[["Service", str], str]
Writer = Callable[["Service", str, str, "int | None"], Written]
BytesWriter = Callable[["Service", str, bytes], Written]
Snapshot = Callable[["Service", str], bytes]
JsonForm = Callable[["Service", str, str, Query], Any]


@dataclass(frozen=True)
class Log:
    """A file that grows (the console): read from an offset (`tail -f`, REST's
    `?offset=`, negative from the end), its size and time the log's own."""

    read_at: Callable[[Service, str, int, int | None], bytes]
    stat: Callable[[Service, str], tuple[int, float] | None]  # size, mtime; None before it exists


@dataclass(frozen=True)
class File:
    """One file of a directory: read(service, NAME) gives its text; write(service, NAME,
    text, if_match) applies a value (a host's files have no generation: if_match unused)."""

    name: str
    read: Reader
    write: Writer | None = None
    content_type: str = TEXT
    # REST's JSON answer when the client does not ask for text (?format=text, Accept: text/plain).
    as_json: JsonForm | None = None
    # A PUT's JSON body ({"state": "running"}) as the text a shell would write.
    from_json: Callable[[dict], str] | None = None
    log: Log | None = None
    # What removing the file does (`rm`, REST's DELETE): the lock's unlock. None: refused.
    clear: Callable[[Service, str], Written] | None = None
    # A file written with bytes (the console): each write goes as it comes, whatever bytes
    # it holds. Its `write` is the same for text (the UTF-8 of a JSON body's string).
    write_bytes: BytesWriter | None = None
    # A binary file made when it is read (screen.png): its `read` refuses text, `data` is it.
    snapshot: Snapshot | None = None
    # Its text is made of the VM's row alone (no other table, no clock, no libvirt): the
    # mount keeps its text and attributes while nothing is committed (fs/tree.py).
    of_row: bool = False

    @property
    def writable(self) -> bool:
        return self.write is not None

    def data(self, service: Service, name: str) -> bytes:
        """The file's bytes: a binary file's own, a text file's in UTF-8."""
        if self.snapshot is not None:
            return self.snapshot(service, name)
        return self.read(service, name).encode()


@dataclass(frozen=True)
class Directory:
    """The files of one kind of directory, in the order `ls` shows them."""

    kind: str  # "VM", "host": for messages
    entries: tuple[File, ...]
    by_name: dict[str, File] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.entries})

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def file(self, name: str) -> File:
        try:
            return self.by_name[name]
        except KeyError:
            raise NotFound(f"no file {name!r} in a {self.kind}", "file") from None

    def read(self, service: Service, name: str, file: str) -> str:
        """The text of one file of the directory NAME."""
        return self.file(file).read(service, name)

    def write(self, service: Service, name: str, file: str, text: str,
              if_match: int | None = None) -> Written:
        """Write one file of the directory NAME, as a shell's write or a PUT would."""
        return self.writer(file)(service, name, text, if_match)

    def clearer(self, name: str) -> Callable[[Service, str], Written]:
        """What removing the file does; Forbidden for a file that cannot be removed."""
        clear = self.file(name).clear
        if clear is None:
            raise Forbidden(f"{name} cannot be removed", name)
        return clear

    def writer(self, name: str) -> Writer:
        """The file's writer; Forbidden for a read-only file (after NotFound for no file)."""
        write = self.file(name).write
        if write is None:
            raise Forbidden(f"{name} is read-only", name)
        return write


# -- text forms shared by the views ------------------------------------------------------------
def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def events_text(events: list[dict]) -> str:
    """An event log as `events` files show it: one line each, oldest first; an audit
    event (a write request) ends with its result."""
    lines = []
    for event in events:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["time"]))
        vm = f" {event['vm_name']}" if event["vm_name"] else ""
        result = f": {event['result']}" if event.get("result") else ""
        lines.append(f"{stamp}{vm} {event['kind']}: {event['message']}{actor_text(event)}"
                     f"{result}\n")
    return "".join(lines)


def value_file(name: str, read: Reader, write: Writer | None = None, number: bool = False,
               from_json: Callable[[dict], str] | None = None, of_row: bool = False) -> File:
    """One value on one line: JSON {"NAME": value} through REST unless text is asked for."""

    def as_json(service: Service, dir_name: str, text: str, query: Query) -> dict:
        value = text.strip()
        return {name: int(value) if number else value or None}

    def value_text(body: dict) -> str:
        return str(body[name])

    return File(name, read, write, as_json=as_json, from_json=from_json or value_text,
                of_row=of_row)


def bytes_file(name: str, read: Reader, write_bytes: BytesWriter, **more: Any) -> File:
    """A file written with bytes; text (a JSON body's {"NAME": "text"}) goes as its UTF-8."""

    def write_text(service: Service, dir_name: str, text: str, if_match: int | None) -> Written:
        return write_bytes(service, dir_name, text.encode())

    def value_text(body: dict) -> str:
        value = body[name]
        if not isinstance(value, str):
            raise Invalid(f'expected {{"{name}": "the text"}}', name)
        return value

    return File(name, read, write_text, write_bytes=write_bytes, from_json=value_text, **more)


def binary_file(name: str, snapshot: Snapshot, content_type: str) -> File:
    """A read-only binary file made when it is read."""

    def no_text(service: Service, dir_name: str) -> str:
        raise Invalid(f"{name} is binary: read its bytes", name)

    return File(name, no_text, content_type=content_type, snapshot=snapshot)
