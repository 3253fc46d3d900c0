"""Run a real `vmctl serve` for tests and benchmarks, and clean up after it.

Each instance gets its own home, port and libvirt domain-name prefix, so that
it can share the machine's libvirtd with others; cleanup destroys and
undefines exactly the domains carrying that prefix, and stops only the process
it started, by pid.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import libvirt
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
DEMO_IMAGE = Path(os.environ.get("VMAPP_DEMO_IMAGE", ROOT / ".cache" / "images" / "demo.qcow2"))
LIBVIRT_URI = os.environ.get("VMAPP_LIBVIRT_URI", "qemu:///system")
BOOT_LINE = "vm-appliance demo guest: booted"
READY_LINE = "vm-appliance demo guest: ready"


def wait_for(what: str, check, timeout: float = 30, interval: float = 0.2):
    """check()'s first true value, asked every interval seconds for at most timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def require_demo_image() -> None:
    """Fail (not skip) a real-guest suite when the demo image was not built."""
    if not DEMO_IMAGE.exists():
        pytest.fail(f"{DEMO_IMAGE} is missing: run `make image` (packaging/build-demo-image.sh)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# With them: libvirt keeps a stopped domain that has snapshots or checkpoints otherwise.
UNDEFINE_METADATA = (libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE  # a suspended VM's
                     | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)  # a UEFI VM's (issue 14)


def remove_domains(domains) -> None:
    """Destroy and undefine each domain (with its snapshot and checkpoint
    metadata); one that is already gone is fine."""
    for dom in domains:
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(UNDEFINE_METADATA)
        except libvirt.libvirtError:
            pass


def remove_prefixed_domains(prefix: str, uri: str = LIBVIRT_URI) -> int:
    """remove_domains of every domain on `uri` whose name starts with `prefix` (a test's
    own: 6 characters at least); how many there were. A libvirtd that does not answer:
    0 (cleanup does what it can)."""
    assert prefix and len(prefix) >= 6, "refusing a short prefix"
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return 0
    try:
        mine = [d for d in conn.listAllDomains() if d.name().startswith(prefix)]
        remove_domains(mine)
        return len(mine)
    finally:
        conn.close()


class Appliance:
    def __init__(self, home: Path, accel: str = "tcg", port: int | None = None, prefix: str | None = None,
                 libvirt_uri: str = LIBVIRT_URI, extra_args: list[str] | None = None,
                 tls: bool = False, metadata: bool = False, demo_image: Path | None = None):
        self.home = Path(home)
        self.demo_image = demo_image or DEMO_IMAGE  # registered as image "demo" at first start
        self.accel = accel
        self.port = port or free_port()
        self.prefix = prefix or f"t{uuid.uuid4().hex[:6]}-"
        self.libvirt_uri = libvirt_uri
        self.extra_args = extra_args or []
        if not metadata:
            # The metadata service puts 169.254.169.254 on lo of each host's namespace:
            # only the tests that ask for it (in a namespace of their own) run it.
            self.extra_args.append("--no-metadata")
        self.proc: subprocess.Popen | None = None
        # tls: `serve --tls`, and every request verifies HOME/tls/server.crt (made at start)
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.http = requests.Session()
        if tls:
            self.extra_args.append("--tls")
            self.http.verify = str(self.home / "tls" / "server.crt")
            # else requests prefers REQUESTS_CA_BUNDLE from the environment to session.verify
            self.http.trust_env = False

    # -- process ------------------------------------------------------------
    def start(self, timeout: float = 60) -> "Appliance":
        args = [sys.executable, "-m", "appliance.cli", "--home", str(self.home), "serve",
                "--listen", f"127.0.0.1:{self.port}", "--accel", self.accel,
                "--libvirt-uri", self.libvirt_uri, "--domain-prefix", self.prefix,
                "--demo-image", str(self.demo_image), *self.extra_args]
        self.home.mkdir(parents=True, exist_ok=True)
        self.log = open(self.home / "serve.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vmctl serve exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                if self.http.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except OSError:  # requests' errors, and a CA file serve has not made yet
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"vmctl serve not ready in {timeout} s:\n{self.log_text()}")
        self.token = (self.home / "token").read_text().strip()
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self

    def log_text(self) -> str:
        try:
            return (self.home / "serve.log").read_text()[-5000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would; then wait until the API children it
        leaves (they get SIGTERM from the kernel) have let go of the port."""
        self.stop(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"port {self.port} still answers 20 s after SIGKILL: an orphan API?")

    def cleanup(self) -> None:
        """Stop the appliance, then remove every domain with our prefix, and a
        mount its killed mount child may have left ("transport endpoint is not
        connected"; a SIGKILLed serve's children get only SIGTERM, late)."""
        self.stop()
        from fs.mount import clear_stale

        clear_stale(self.home / "mnt")
        try:
            conn = libvirt.open(self.libvirt_uri)
        except libvirt.libvirtError:
            return
        remove_domains([dom for dom in conn.listAllDomains() if dom.name().startswith(self.prefix)])
        conn.close()

    # -- REST helpers -------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 180)
        return self.http.request(method, self.url + path, **kwargs)

    def create_vm(self, name: str, **spec) -> dict:
        resp = self.api("POST", "/v1/vms", json={"name": name, **spec})
        assert resp.status_code == 201, resp.text
        return resp.json()

    def console(self, name: str) -> str:
        return self.api("GET", f"/v1/vms/{name}/console").text

    def wait_console(self, name: str, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.console(name)
            if text in out:
                return out
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on {name}'s console within {timeout} s:\n{self.console(name)[-3000:]}")

    def wait_state(self, name: str, state: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            vm = self.api("GET", f"/v1/vms/{name}").json()
            if vm.get("state") == state:
                return vm
            time.sleep(0.2)
        raise AssertionError(f"{name} not {state} within {timeout} s: {vm}")

    def domain_names(self) -> list[str]:
        conn = libvirt.open(self.libvirt_uri)
        try:
            return sorted(d.name() for d in conn.listAllDomains() if d.name().startswith(self.prefix))
        finally:
            conn.close()
