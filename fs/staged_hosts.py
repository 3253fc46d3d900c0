"""hosts/NAME made with mkdir before the host exists (fs/tree.py's module docstring):
a directory in this mount's memory holding one writable file, `uri`, until a write to
it adds the host (service.add_host); `rmdir` drops it, unmount forgets it."""
from __future__ import annotations

import errno
from collections.abc import Callable

import pyfuse3

from appliance import errors
from appliance.service import Service
from fs.nodes import Node

STAGED_HOST_FILE = "uri"  # what a directory staged by `mkdir hosts/NAME` holds


class StagedHosts:
    def __init__(self, service: Service, clock: Callable[[], float], started: float):
        self.service = service
        self.clock = clock
        self.started = started
        self.made: dict[str, float] = {}  # name -> when, not yet in the store

    def host(self, name: str) -> dict | None:
        """The host's view; None for a directory staged by mkdir (NotFound for neither)."""
        try:
            return self.service.get_host(name)
        except errors.NotFound:
            if name in self.made:
                return None
            raise

    def stat(self, name: str, path: tuple[str, ...]) -> Node:
        """hosts/NAME or hosts/NAME/uri of a staged directory (its uri, to write)."""
        made = self.made[name]
        if len(path) == 2 or (len(path) == 3 and path[2] == STAGED_HOST_FILE):
            return Node(len(path) == 2, writable=len(path) == 3, created=made, changed=made)
        raise errors.NotFound(f"no {'/'.join(path)!r} here")

    def entries(self) -> list[tuple[str, Node]]:
        """hosts/: the hosts, then the directories staged and not yet hosts."""
        hosts = self.service.list_hosts()
        known = {host["name"] for host in hosts}
        return ([(host["name"], Node(True, created=self.started,
                                     changed=host["last_seen"] or self.started))
                 for host in hosts]
                + [(name, Node(True, created=made, changed=made))
                   for name, made in list(self.made.items()) if name not in known])

    def add(self, name: str, uri: str) -> None:
        """The staged directory's uri written: the host is added, the directory is its."""
        self.service.add_host({"name": name, "uri": uri.strip()})
        self.made.pop(name, None)

    def stage(self, name: str) -> None:
        """mkdir hosts/NAME: a directory in this mount's memory until its uri is written."""
        if name in self.made or any(h["name"] == name for h in self.service.list_hosts()):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self.made[name] = self.clock()

    def remove(self, name: str) -> None:
        """rmdir hosts/NAME: a staged directory goes at once, a host through the service."""
        if self.host(name) is not None:
            self.service.delete_host(name)
        self.made.pop(name, None)
