"""Where things live and how the appliance runs, in one dataclass.

`vmctl serve` writes the config it runs with to HOME/config.json, so that the
gunicorn workers, the mount and `vmctl` itself all read the same settings from
nothing but the home directory.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
from pathlib import Path

from appliance.model.defaults import EVACUATE_AFTER, HEARTBEAT_AGE

log = logging.getLogger("vmctl.config")
DEFAULT_HOME = "./.appliance"
# An older appliance saved its defaults with the admin's choices, so an old
# default in a config.json cannot be told from a choice; each version says
# which defaults changed, and load() drops the old values of those.
# 2: metrics_public defaults to false (was true).
# 3: threads defaults to 32 (was 8: the API's front now caps long waits at 3/4).
CONFIG_VERSION = 3
DEFAULT_LISTEN = "127.0.0.1:8080"


@dataclasses.dataclass
class Config:
    # The appliance's home: its store, images, VMs' disks, token and TLS pair.
    home: Path
    config_version: int = CONFIG_VERSION
    # HOST:PORT of the REST API and the web page (HTTPS unless loopback: tls).
    listen: str = DEFAULT_LISTEN
    # The accelerator of new VMs: kvm, tcg (QEMU's emulation, slow), or auto
    # (kvm where /dev/kvm works, else tcg).
    accel: str = "auto"
    # The local libvirtd: the first host, where the controller runs VMs.
    libvirt_uri: str = "qemu:///system"
    # Prefixed to libvirt domain names, so that several appliances (or tests)
    # can share one libvirtd without their names colliding.
    domain_prefix: str = ""
    # API worker processes (gunicorn).
    workers: int = 2
    # Threads per API worker for the WSGI app (appliance/api/asgi.py); requests
    # that wait for their operation may hold at most 3/4 of them, the rest
    # always answer quick requests. Idle threads cost next to nothing.
    threads: int = 32
    # The largest request body the API reads (JSON and file writes); image
    # uploads stream to disk under their own bound.
    max_body_bytes: int = 1024 * 1024
    wait_timeout: float = 120.0  # how long a write waits for its operation by default
    max_wait: float = 3600.0  # the longest wait a client may ask for
    # /metrics wants the API token unless this is set (SECURITY.md).
    metrics_public: bool = False
    # /metrics reports the libvirt domains the appliance manages; this adds the
    # others on its hosts' libvirtds (managed="false"), which may be other tenants'.
    metrics_all_domains: bool = False
    # Port forwards are bound by QEMU, which runs as root: host ports below 1024
    # are refused unless the admin allows them here.
    allow_privileged_ports: bool = False
    # Where `vmctl serve` mounts the file system view: relative to home, or
    # absolute; None for no mount (--no-mount).
    mount: str | None = "mnt"
    # Host URIs (appliance/hosturi.py): the folders whose unix sockets a
    # qemu+unix host may name.
    host_socket_dirs: list[str] = dataclasses.field(default_factory=lambda: [
        "/run/libvirt", "/var/run/libvirt", "/var/lib/vm-appliance/local-hosts"])
    # Whether libvirt's test driver may be added as a host (the appliance's own tests only).
    allow_test_hosts: bool = False
    # `vmctl adopt` (service/adoption.py): the folders whose disk files (and their
    # backing files) an adopted domain may keep using in place; a disk elsewhere is
    # refused unless it is copied into the home (--copy-disks).
    adopt_disk_dirs: list[str] = dataclasses.field(default_factory=lambda: [
        "/var/lib/libvirt/images"])
    # Members of this group may use the mount too (allow_other); None: its owner only.
    mount_group: str | None = None
    # Placement: "spread" (most free RAM/CPU first, Nova's default) or "pack"
    # (fill a host before the next).
    placement: str = "spread"
    # Placement picks at random among the best N hosts (1: always the best).
    host_subset_size: int = 1
    # A host whose libvirt has not answered for this long is declared dead and
    # its VMs with run_strategy Always are restarted elsewhere (shared disks only).
    evacuate_after: float = EVACUATE_AFTER
    # A host's heartbeat older than this means the controller lost it.
    heartbeat_age: float = HEARTBEAT_AGE
    # POST /v1/images {"path"} copies only files inside this directory (relative
    # to home, or absolute); None: no imports from a path, uploads only.
    image_import_dir: str | None = "images/import"
    # The largest image an upload or import may be, as sent and once converted.
    max_image_bytes: int = 64 << 30
    # The event log (the audit trail included) keeps this many newest events; the
    # controller drops older ones every few minutes (every write adds one).
    events_kept: int = 200_000
    # HTTPS for the API (appliance/tls.py): "auto" is on unless listen is a
    # loopback address, so plain HTTP elsewhere is only ever "off", chosen.
    tls: str = "auto"
    # The admin's certificate (PEM; relative to home, or absolute; with tls_key):
    # None: a self-signed pair made into HOME/tls at first start.
    tls_cert: str | None = None
    # The private key of tls_cert (PEM; both or neither).
    tls_key: str | None = None
    # How long a console ticket (POST /v1/tickets) may wait for its WebSocket, in
    # seconds: long enough for a browser to open the page it is handed to.
    ticket_ttl: float = 60.0
    # The settings file serve was started with (`vmctl serve --config FILE`: the
    # .deb's /etc/vm-appliance/config.toml), absolute; None: none. Written by
    # serve, not read from that file: `vmctl admin backup` keeps the file with the home.
    config_file: str | None = None

    # The metadata service (http://169.254.169.254/ for guests, Nova's OpenStack and EC2
    # layouts) in the network namespace of each libvirt host of this machine; it puts
    # 169.254.169.254/32 on that namespace's lo (removed when it stops). Off: --no-metadata.
    metadata_service: bool = True
    # Whether it also serves the hosts in this machine's own network namespace
    # (qemu:///system), where 169.254.169.254/32 on the machine's lo hides the machine's
    # own metadata service (a cloud provider's, with the machine's credentials) from
    # the machine. Off: hosts in namespaces of their own only (packaging/local-hosts
    # up --netns); the guests of the others have their seed. On: --metadata-host-namespace.
    metadata_host_namespace: bool = False

    def __post_init__(self) -> None:
        self.home = Path(self.home).absolute()

    # -- paths -----------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "appliance.db"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def import_dir(self) -> Path | None:
        return None if self.image_import_dir is None else self.home / self.image_import_dir

    @property
    def vms_dir(self) -> Path:
        return self.home / "vms"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def ssh_dir(self) -> Path:
        """Where a qemu+ssh host's keyfile= may point: the appliance's own keys."""
        return self.home / "ssh"

    @property
    def pki_dir(self) -> Path:
        """The appliance's CA and client certificate for qemu+tls hosts (libvirt's
        pkipath; appliance/host_pki.py)."""
        return self.home / "pki"

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def config_path(self) -> Path:
        return self.home / "config.json"

    @property
    def notify_socket(self) -> Path:
        return self.run_dir / "controller.sock"

    @property
    def console_socket(self) -> Path:
        """The console broker's socket (appliance/consoles/): root only."""
        return self.run_dir / "consoles.sock"

    @property
    def mount_point(self) -> Path | None:
        return None if self.mount is None else self.home / self.mount

    def vm_dir(self, vm_id: str) -> Path:
        return self.vms_dir / vm_id

    def prepare(self) -> None:
        for path in (self.home, self.images_dir, self.vms_dir, self.run_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self.import_dir is not None:
            self.import_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)

    def token(self, create: bool = False) -> str:
        """The API's bearer token, made at first start (mode 0600)."""
        if create and not self.token_path.exists():
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
        return self.token_path.read_text().strip()

    # -- persistence --------------------------------------------------------------
    def save(self) -> None:
        data = dataclasses.asdict(self)
        data["home"] = str(self.home)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.config_path)

    @classmethod
    def load(cls, home: str | Path) -> Config:
        path = Path(home).absolute() / "config.json"
        if not path.exists():
            return cls(home=Path(home))
        data = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["home"] = Path(home)
        version = data.get("config_version", 1)
        if version < 2 and data.pop("metrics_public", False):
            log.warning(
                "%s: metrics_public was the old default and is now off: /metrics wants the token "
                '(set "metrics_public": true to keep it public)',
                path,
            )
        if version < 3 and data.get("threads") == 8:
            del data["threads"]
        data["config_version"] = CONFIG_VERSION
        return cls(**data)
