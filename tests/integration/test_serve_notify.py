"""vm-appliance.service's readiness for real: `vmctl serve --config FILE` (the
unit's ExecStart, with a TOML file as the package ships) under a NOTIFY_SOCKET
sends READY=1 only once its API answers /readyz, and STOPPING=1 at SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests

from tests.appliance_process import LIBVIRT_URI, ROOT, free_port

pytestmark = pytest.mark.integration


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
@pytest.mark.parametrize("host, scheme", [("127.0.0.1", "http"), ("0.0.0.0", "https")])
def test_ready_comes_when_readyz_answers_and_stopping_at_sigterm(tmp_path, host, scheme):
    """0.0.0.0: TLS on (tls auto), the self-signed pair made at this first start,
    and the readiness poll pinned to it, as an admin's listen = "0.0.0.0:8443" runs."""
    port = free_port()
    home = tmp_path / "home"
    config = tmp_path / "config.toml"
    config.write_text(f'home = "{home}"\nlisten = "{host}:{port}"\naccel = "tcg"\n'
                      f'libvirt_uri = "{LIBVIRT_URI}"\ndomain_prefix = "n{uuid.uuid4().hex[:6]}-"\n'
                      'mount = ""\nworkers = 1\nmetadata_service = false\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(120)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--config", str(config)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Before READY=1, /readyz may not answer yet; once it came, it must.
        message = notify.recv(4096).decode()
        ready_at = time.monotonic()
        assert message.startswith(f"READY=1\nSTATUS=serving on {host}:{port} (home {home})")
        # the check of the certificate is Client's (pinned); here only the answer matters
        answer = requests.get(f"{scheme}://127.0.0.1:{port}/readyz", timeout=10,
                              verify=False)  # noqa: S501
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - ready_at < 10
        assert (home / "config.json").exists()  # serve still writes the home's config for its children
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        log.close()


def test_a_stop_while_starting_is_an_orderly_stop(tmp_path):
    """SIGTERM (systemctl stop or restart of an activating unit) right after serve
    started its children, before it is ready: serve stops them itself and exits
    0, as at any other stop. Had it died of the signal, systemd's KillMode=mixed
    would SIGKILL the children at once (the mount unmounts on SIGTERM)."""
    port = free_port()
    home = tmp_path / "home"
    config = tmp_path / "config.toml"
    config.write_text(f'home = "{home}"\nlisten = "127.0.0.1:{port}"\naccel = "tcg"\n'
                      f'libvirt_uri = "{LIBVIRT_URI}"\ndomain_prefix = "n{uuid.uuid4().hex[:6]}-"\n'
                      'workers = 1\n')
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--config", str(config)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        # the mount is the last child serve starts
        while "forked -m appliance.cli" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
        text = log_path.read_text()
        assert "vmctl.serve INFO stopped" in text, text[-3000:]
        children = [int(line.rsplit("(pid ", 1)[1].rstrip(")"))
                    for line in text.splitlines() if " forked -m " in line]
        assert len(children) == 3, text[-3000:]
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}"), pid  # stopped, and reaped by serve
        assert not os.path.ismount(home / "mnt")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
