"""The URI the appliance opens for a host, from the URI an admin gave.

A host URI from a user names host, port and user only (appliance/hosturi.py);
the credentials are the appliance's own, in its home, and added here:

    qemu+ssh://root@h2:2222/system[?socket=S]
        -> qemu+libssh2://root@h2:2222/system?[socket=S&]keyfile=HOME/ssh/id_ed25519
           &known_hosts=HOME/ssh/known_hosts&known_hosts_verify=normal&sshauth=privkey
    qemu+tls://h2:16514/system
        -> qemu+tls://h2:16514/system?pkipath=HOME/pki

(libssh2 rather than the ssh binary, whose known_hosts is root's: appliance/
ssh_access.py; and rather than libssh, with which this process, holding several
connections from several threads, died of SIGSEGV in g_mutex_lock in 3 of 9
runs of tests/cluster/test_cluster_remote_transports.py, libvirt 9.0 and
libssh 0.10 of Debian 12; none with libssh2 in the runs since.) Every other URI
is opened as given. The controller, the console broker, /metrics and a
migration's destination (which the source libvirtd opens, peer to peer, with the
same files) all go through connection_uri.
"""
from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from appliance import ssh_access

if TYPE_CHECKING:
    from appliance.config import Config


def connection_uri(uri: str, config: Config) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("qemu+ssh", "qemu+tls"):
        return uri
    params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    scheme = parts.scheme
    if scheme == "qemu+ssh":
        scheme = "qemu+libssh2"
        verify = "ignore" if params.pop("no_verify", "0") == "1" else "normal"
        params.setdefault("keyfile", str(ssh_access.ensure_key(config.ssh_dir)))
        params.update(known_hosts=str(config.ssh_dir / ssh_access.KNOWN_HOSTS),
                      known_hosts_verify=verify, sshauth="privkey")
    else:
        from appliance import host_pki  # cryptography: only for a TLS host (~8 MiB a process)

        params["pkipath"] = str(host_pki.ensure(config.pki_dir))
    query = urllib.parse.urlencode(params, safe="/")
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, query, ""))


def ssh_address(uri: str) -> tuple[str, int | None] | None:
    """(host, port) of a qemu+ssh URI, None for other transports."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "qemu+ssh":
        return None
    return parts.hostname or "", parts.port
