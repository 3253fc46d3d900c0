"""`vmctl exporter --tls` (issue 11): /metrics over HTTPS with the home's
self-signed certificate, on libvirt's test driver."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import requests

from appliance import tls
from tests.appliance_process import ROOT, free_port


def _https_session(cert) -> requests.Session:
    session = requests.Session()
    session.verify = str(cert)
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment wins over verify
    return session


def test_exporter_serves_https_with_the_home_cert_and_handshakes_per_connection(tmp_path):
    home, port = tmp_path / "exporter-home", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "--home", str(home), "exporter", "--listen",
         f"127.0.0.1:{port}", "--libvirt-uri", "test:///default", "--host-name", "h1", "--tls",
         "--any-appliance"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cert = home / "tls" / "server.crt"
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                session = _https_session(cert)
                first = session.get(url, timeout=2)
                break
            except OSError:  # not listening yet, or the certificate not made yet
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert first.status_code == 401  # the token check is still there, behind TLS
        assert (home / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
        token = (home / "token").read_text().strip()
        session.headers["Authorization"] = f"Bearer {token}"
        # A client that connects and never starts its handshake holds only its own thread.
        with socket.create_connection(("127.0.0.1", port)):
            resp = session.get(url, timeout=5)
        assert resp.status_code == 200 and 'vmappliance_host_up{host="h1"} 1.0' in resp.text
        # Plain HTTP gets no answer, and the exporter keeps serving HTTPS.
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert session.get(url, timeout=5).status_code == 200
        pinned = tls.fingerprint(cert.read_bytes())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"fingerprint {pinned}" in err.decode()
    assert "Traceback" not in err.decode()  # failed handshakes are not logged as crashes
