"""`vmctl serve --tls` (issue 11): a real appliance over HTTPS with its
self-signed certificate; vmctl pins it, a wrong pin is refused before the
token leaves, curl and Python's ssl trust the certificate as its own CA, a
real Prometheus scrapes it with the shipped example's tls_config, and plain
HTTP to the port gets nothing. No guests."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys

import pytest
import requests
import yaml

from appliance.config import Config
from appliance.selfsigned import ensure_self_signed
from tests.appliance_process import ROOT, Appliance
from tests.prometheus_process import running_prometheus, wait_query

pytestmark = pytest.mark.integration
SCRAPE_CONFIG = ROOT / "packaging" / "prometheus" / "prometheus.yml"


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    app = Appliance(tmp_path_factory.mktemp("tls-home"), tls=True, extra_args=["--no-mount"])
    try:
        yield app.start()
    finally:
        app.cleanup()


def vmctl(home, *args, env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMCTL_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)


def served_fingerprint(port: int) -> str:
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))
    return hashlib.sha256(der).hexdigest()


def requests_to(appliance, path: str) -> int:
    log = (appliance.home / "logs" / "access.log").read_text()
    return sum(f'"GET {path} ' in line for line in log.splitlines())


def test_serve_made_the_pair_and_prints_the_served_fingerprint(appliance):
    tls_dir = appliance.home / "tls"
    assert (tls_dir / "server.key").stat().st_mode & 0o777 == 0o600
    fingerprint = served_fingerprint(appliance.port)
    shown = vmctl(appliance.home, "tls", "fingerprint")
    assert shown.returncode == 0 and shown.stdout.strip() == fingerprint
    assert f"SHA-256 fingerprint {fingerprint}" in appliance.log_text()
    assert f"serving on https://127.0.0.1:{appliance.port}" in appliance.log_text()
    assert Config.load(appliance.home).tls == "on"


def test_vmctl_pins_the_home_certificate_and_refuses_another(appliance):
    home = appliance.home
    wrong = "00" * 32
    refused = vmctl(home, "--fingerprint", wrong, "list")
    assert refused.returncode == 1
    assert f"not the pinned {wrong}: refusing it" in refused.stderr
    refused = vmctl(home, "list", env={"VMCTL_FINGERPRINT": ":".join(["AB"] * 32)})
    assert refused.returncode == 1 and "not the pinned abab" in refused.stderr
    listed = vmctl(home, "list")  # the home's own certificate, pinned without being asked
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:2] == ["NAME", "STATE"]
    # the refused connections sent no request (and no token): only the last one arrived
    assert requests_to(appliance, "/v1/vms") == 1
    right = vmctl(home, "--fingerprint", served_fingerprint(appliance.port), "list")
    assert right.returncode == 0, right.stderr
    doctor = vmctl(home, "--json", "doctor")
    api = next(check for check in json.loads(doctor.stdout) if check["name"] == "api")
    assert api["status"] == "ok" and api["detail"].startswith("https://"), api


def test_vmctl_console_trusts_the_wss_as_it_trusts_rest(appliance):
    """The WebSocket of vmctl console takes the same pin, CA file or system CAs."""
    home = appliance.home
    pinned = vmctl(home, "console", "nosuchvm", env={"VMCTL_URL": appliance.url})
    assert pinned.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in pinned.stderr
    for trust in ([], ["--ca-file", str(home / "tls" / "server.crt")]):
        reached = vmctl(home, *trust, "console", "nosuchvm")  # over wss://, to the API's answer
        assert reached.returncode == 1 and reached.stderr.startswith("vmctl console: HTTP 404:"), \
            reached.stderr
    wrong = vmctl(home, "--fingerprint", "00" * 32, "console", "nosuchvm")
    assert wrong.returncode == 1 and f"not the pinned {'00' * 32}" in wrong.stderr
    assert "Traceback" not in pinned.stderr + reached.stderr + wrong.stderr


def test_vmctl_with_a_ca_file_or_the_system_cas(appliance):
    home, url = appliance.home, appliance.url
    by_ca = vmctl(home, "--ca-file", str(home / "tls" / "server.crt"), "list")
    assert by_ca.returncode == 0, by_ca.stderr
    # Another URL than the home's: no automatic pin, the system's CAs decide, and refuse.
    unpinned = vmctl(home, "list", env={"VMCTL_URL": url})
    assert unpinned.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in unpinned.stderr
    pinned = vmctl(home, "list", env={"VMCTL_URL": url,
                                      "VMCTL_FINGERPRINT": served_fingerprint(appliance.port)})
    assert pinned.returncode == 0, pinned.stderr


def test_curl_and_python_ssl_trust_server_crt_as_the_ca(appliance):
    cert = str(appliance.home / "tls" / "server.crt")
    curl = subprocess.run(["curl", "-sS", "--cacert", cert, f"{appliance.url}/healthz"],
                          capture_output=True, text=True, timeout=30)
    assert curl.returncode == 0 and '"ok"' in curl.stdout, curl.stderr
    context = ssl.create_default_context(cafile=cert)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", appliance.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 200")
    # without the CA file the certificate is not trusted
    failed = subprocess.run(["curl", "-sS", f"{appliance.url}/healthz"], capture_output=True,
                            text=True, timeout=30)
    assert failed.returncode == 60, failed.stderr  # curl: peer certificate cannot be authenticated


def test_plain_http_to_the_tls_port_gets_nothing(appliance):
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{appliance.port}/healthz", timeout=10)
    plain = vmctl(appliance.home, "list",
                  env={"VMCTL_URL": f"http://127.0.0.1:{appliance.port}"})
    assert plain.returncode == 1 and "cannot reach the appliance" in plain.stderr
    assert "does it serve https://?" in plain.stderr and "Traceback" not in plain.stderr
    assert appliance.api("GET", "/healthz").status_code == 200  # and it still serves HTTPS


def _commented_jobs(text: str) -> list[dict]:
    """The scrape jobs prometheus.yml ships commented out, parsed."""
    blocks, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# - job_name:"):
            current = []
            blocks.append(current)
        if current is not None:
            if not stripped.startswith("#"):
                current = None
                continue
            current.append(line.replace("  # ", "  ", 1)[2:])
    return [yaml.safe_load("\n".join(block))[0] for block in blocks]


def test_prometheus_scrapes_it_with_the_shipped_https_example(appliance, tmp_path):
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    example = next(job for job in _commented_jobs(SCRAPE_CONFIG.read_text())
                   if job["job_name"] == "vm-appliance")
    assert example["scheme"] == "https" and "ca_file" in example["tls_config"]
    example["tls_config"]["ca_file"] = str(appliance.home / "tls" / "server.crt")
    example["authorization"]["credentials_file"] = str(appliance.home / "token")
    example["static_configs"] = [{"targets": [f"127.0.0.1:{appliance.port}"]}]
    # the same job trusting another self-signed certificate must fail to scrape
    other = Config(home=tmp_path / "other")
    ensure_self_signed(other)
    wrong = yaml.safe_load(yaml.safe_dump(example)) | {"job_name": "wrong-ca"}
    wrong["tls_config"]["ca_file"] = str(other.tls_dir / "server.crt")
    config["scrape_configs"] = [example, wrong]
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    config.pop("rule_files", None)
    with running_prometheus(tmp_path, yaml.safe_dump(config)) as prometheus:
        wait_query(prometheus, 'up{job="vm-appliance"} == 1', timeout=30)
        wait_query(prometheus, 'vmappliance_host_up{host="local"} == 1', timeout=30)
        wait_query(prometheus, 'up{job="wrong-ca"} == 0', timeout=30)
