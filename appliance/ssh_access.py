"""The appliance's own ssh identity and known_hosts, for qemu+ssh hosts.

An admin adds `qemu+ssh://root@h2/system`; the user gives host, port and user
only (appliance/hosturi.py). The appliance brings the rest:

- its key pair, HOME/ssh/id_ed25519 (0600) and .pub, made on first use; the
  public line is what the admin appends to the host's authorized_keys
  (`vmctl host ssh-key`, and `vmctl host add` shows it);
- HOME/ssh/known_hosts, which it manages: the first `host add` of an address
  records the keys the server offers once the add has committed (a refused add
  records nothing; trust on first use, their SHA256
  fingerprints shown to the admin), and a later add of the same address whose
  server offers none of the recorded keys is refused, as ssh's
  StrictHostKeyChecking does.

libvirt's `ssh` transport runs the ssh binary, whose known_hosts is root's
~/.ssh and not the appliance's; its `libssh2` transport takes `keyfile=`,
`known_hosts=` and `known_hosts_verify=`, so the appliance opens a qemu+ssh
host as qemu+libssh2 with those pointing into HOME/ssh (connection_uri in
appliance/host_access.py). An unknown or changed key is then refused by libvirt
itself (no callback accepts it), at every connection, not only at add.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import Conflict, Failed

KEY_NAME = "id_ed25519"
KNOWN_HOSTS = "known_hosts"
# The host key types the appliance records, strongest first (what ssh-keyscan asks for).
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
SCAN_SECONDS = 10
KEYSCAN = shutil.which("ssh-keyscan") or "/usr/bin/ssh-keyscan"  # openssh-client
MAX_SCAN_BYTES = 64 * 1024


def key_path(ssh_dir: Path) -> Path:
    return ssh_dir / KEY_NAME


def ensure_key(ssh_dir: Path) -> Path:
    """HOME/ssh/id_ed25519 (0600, OpenSSH format) and its .pub, made once; the key's path.
    Written under a temporary name and linked into place, so that two callers at
    once keep one key and a crash leaves no half file."""
    private = key_path(ssh_dir)
    if private.exists():
        return private
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # cryptography (~8 MiB per process) only where a key is made, not in every
    # process that imports this module (serve, the mount, each API worker)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=ssh_dir)  # 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        pub_tmp = Path(tmp + ".pub")
        pub_tmp.write_bytes(public + b" vm-appliance\n")
        os.chmod(pub_tmp, 0o644)
        try:
            os.link(tmp, private)
        except FileExistsError:
            return private  # another caller made it first: theirs stays
        os.replace(pub_tmp, private.with_suffix(".pub"))
    finally:
        for leftover in (Path(tmp), Path(tmp + ".pub")):
            leftover.unlink(missing_ok=True)
    return private


def public_key(ssh_dir: Path) -> str:
    """The line to append to the host's ~root/.ssh/authorized_keys."""
    ensure_key(ssh_dir)
    return key_path(ssh_dir).with_suffix(".pub").read_text().strip()


def known_hosts_name(host: str, port: int | None) -> str:
    """How known_hosts names an address: `h2`, or `[h2]:2222` off port 22."""
    return host if port in (None, 22) else f"[{host.strip('[]')}]:{port}"


def fingerprint(blob_b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(blob_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class HostKey:
    name: str  # as known_hosts names the address
    type: str
    blob: str  # base64

    def line(self) -> str:
        return f"{self.name} {self.type} {self.blob}"

    def view(self) -> dict[str, str]:
        return {"type": self.type, "fingerprint": fingerprint(self.blob)}


def _parse(text: str, name: str) -> list[HostKey]:
    """The keys for `name` in known_hosts (or ssh-keyscan) text; other lines are skipped.
    Every field is checked: a key type from KEY_TYPES and base64 that decodes."""
    keys = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3 or fields[0] != name or fields[1] not in KEY_TYPES:
            continue
        try:
            base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        keys.append(HostKey(*fields))
    return keys


def recorded(ssh_dir: Path, name: str) -> list[HostKey]:
    try:
        return _parse((ssh_dir / KNOWN_HOSTS).read_text(), name)
    except FileNotFoundError:
        return []


def scan(host: str, port: int | None) -> list[HostKey]:
    """The host keys the server at host:port offers (ssh-keyscan; host and port were
    checked by appliance/hosturi.py: no option, no shell)."""
    name = known_hosts_name(host, port)
    try:
        proc = subprocess.run(  # noqa: S603 - an argument list, host checked, after --
            [KEYSCAN, "-T", str(SCAN_SECONDS), "-p", str(port or 22), "--", host.strip("[]")],
            capture_output=True, text=True, timeout=SCAN_SECONDS + 5, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Failed(f"cannot read the ssh host key of {name}: {err}") from None
    keys = _parse(proc.stdout[:MAX_SCAN_BYTES], name)
    if not keys:
        raise Failed(f"no ssh server answered at {name} (ssh-keyscan found no host key)")
    return keys


def trust(ssh_dir: Path, host: str, port: int | None) -> tuple[dict, list[HostKey]]:
    """Trust on first use: the keys host:port offers, to be recorded (by record(),
    once whatever needs them has committed) when none are recorded yet; when some
    are, check that the server still offers one of them (Conflict if not, naming
    both fingerprints). What was found, for the admin to compare with the host's own
    `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`, and the keys to record ([]
    when known_hosts already has the address). Nothing is written here."""
    name = known_hosts_name(host, port)
    offered = scan(host, port)
    known = recorded(ssh_dir, name)
    if known:
        if not {(k.type, k.blob) for k in known} & {(k.type, k.blob) for k in offered}:
            raise Conflict(
                f"the ssh host key of {name} changed: recorded {known[0].view()['fingerprint']}"
                f" ({known[0].type}), offered now {offered[0].view()['fingerprint']}"
                f" ({offered[0].type}); if the host was reinstalled, remove its lines from"
                f" {ssh_dir / KNOWN_HOSTS} and add it again", "uri")
        return {"address": name, "recorded_now": False, "keys": [k.view() for k in known]}, []
    return {"address": name, "recorded_now": True, "keys": [k.view() for k in offered]}, offered


def record(ssh_dir: Path, keys: list[HostKey]) -> None:
    """Append `keys` to known_hosts (0600), under an exclusive lock, skipping an
    address that got keys meanwhile (a concurrent add of the same address)."""
    if not keys:
        return
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(ssh_dir / KNOWN_HOSTS, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        if _parse(out.read(), keys[0].name):
            return
        out.write("".join(k.line() + "\n" for k in keys))
