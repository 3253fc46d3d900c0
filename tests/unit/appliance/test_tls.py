"""TLS (issue 11): when it is on, the self-signed pair in HOME/tls, the
fingerprint, and the client's pinning against a real HTTPS listener."""
from __future__ import annotations

import http.server
import ipaddress
import re
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from appliance import tls
from appliance.client import APIError, Client
from appliance.config import Config
from appliance.selfsigned import ensure_self_signed
from appliance.serve import gunicorn_args, prepare_tls


@pytest.mark.parametrize("listen, loopback", [
    ("127.0.0.1:8080", True), ("127.1.2.3:8080", True), ("[::1]:8080", True),
    ("localhost:8080", True), ("0.0.0.0:8080", False), ("[::]:8080", False),
    (":8080", False), ("10.0.0.5:8080", False), ("appliance.example:8080", False),
    ("localhost.evil.example:8080", False), ("[::ffff:127.0.0.1]:8080", False),
])
def test_only_loopback_listeners_default_to_plain_http(tmp_path, listen, loopback):
    config = Config(home=tmp_path, listen=listen)
    assert tls.is_loopback(listen) is loopback
    assert tls.tls_enabled(config) is not loopback
    https = "--certfile" in gunicorn_args(config)
    assert https is not loopback
    config.tls = "on"
    assert tls.tls_enabled(config) and "--certfile" in gunicorn_args(config)
    config.tls = "off"  # the explicit choice, the only way to plain HTTP off loopback
    assert not tls.tls_enabled(config) and "--certfile" not in gunicorn_args(config)


@pytest.mark.parametrize("changes, reason", [
    ({"tls": "yes"}, "tls must be one of auto, on, off"),
    ({"tls_cert": "/etc/ssl/my.crt"}, "tls_cert and tls_key go together"),
    ({"tls_key": "/etc/ssl/my.key", "tls": "off"}, "tls_cert and tls_key go together"),
])
def test_tls_settings_that_cannot_be_honoured_are_refused(tmp_path, changes, reason):
    config = Config(home=tmp_path, listen="0.0.0.0:8080", **changes)
    with pytest.raises(tls.TLSConfigError, match=reason):
        tls.tls_enabled(config)


def test_serve_refuses_a_certificate_it_cannot_load_rather_than_serve_plain_http(tmp_path, capsys):
    home = tmp_path / "home"
    config = Config(home=home, listen="0.0.0.0:8080", tls_cert=str(tmp_path / "missing.crt"),
                    tls_key=str(tmp_path / "missing.key"))
    config.prepare()
    # exit status 2, a configuration error: the units' RestartPreventExitStatus=2 holds
    with pytest.raises(SystemExit) as stopped:
        prepare_tls(config)
    assert stopped.value.code == 2
    assert re.search("cannot use the TLS certificate .*missing.crt", capsys.readouterr().err)
    # a key that is not the certificate's
    ensure_self_signed(Config(home=tmp_path / "a"))
    ensure_self_signed(Config(home=tmp_path / "b"))
    config.tls_cert, config.tls_key = str(tmp_path / "a/tls/server.crt"), str(tmp_path / "b/tls/server.key")
    with pytest.raises(SystemExit) as stopped:
        prepare_tls(config)
    assert stopped.value.code == 2 and "cannot use the TLS certificate" in capsys.readouterr().err
    config.tls_key = str(tmp_path / "a/tls/server.key")
    assert prepare_tls(config) == (tmp_path / "a/tls/server.crt", tmp_path / "a/tls/server.key")
    assert not (home / "tls").exists()  # the admin's pair: nothing made


def test_self_signed_pair_is_made_once_with_private_key_and_sans(tmp_path):
    config = Config(home=tmp_path / "home", listen="192.0.2.7:8443")
    assert tls.prepare(config) == (config.tls_dir / "server.crt", config.tls_dir / "server.key")
    crt, key = config.tls_dir / "server.crt", config.tls_dir / "server.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert config.tls_dir.stat().st_mode & 0o077 == 0
    first = crt.read_bytes(), key.read_bytes()
    print_ = tls.fingerprint(first[0])
    # idempotent: later starts (another listen address too) keep the pair and its fingerprint
    config.listen = "0.0.0.0:9000"
    assert ensure_self_signed(config) is False
    tls.prepare(config)
    assert (crt.read_bytes(), key.read_bytes()) == first
    assert tls.fingerprint(crt.read_bytes()) == print_
    assert [p.name for p in config.home.iterdir() if p.name.startswith(".tls-")] == []

    cert = x509.load_pem_x509_certificate(first[0])
    assert print_ == cert.fingerprint(hashes.SHA256()).hex()
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {"localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.7")}
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_sans_name_the_hostname_and_a_named_listen_host_but_no_wildcard(tmp_path):
    from appliance.selfsigned import subject_alt_names

    names = subject_alt_names("[::]:8443", "node1.lab")
    assert x509.DNSName("node1.lab") in names
    assert not any(isinstance(n, x509.IPAddress) and n.value.is_unspecified for n in names)
    assert x509.DNSName("api.lab") in subject_alt_names("api.lab:8443", "node1")
    assert len(subject_alt_names("localhost:1", "localhost")) == 3  # no repeats


def test_a_half_pair_in_home_tls_is_refused_never_overwritten(tmp_path):
    config = Config(home=tmp_path, listen="0.0.0.0:8443")
    config.tls_dir.mkdir()
    (config.tls_dir / "server.key").write_text("the admin's key\n")
    with pytest.raises(tls.TLSConfigError, match="server.crt"):
        tls.prepare(config)
    assert (config.tls_dir / "server.key").read_text() == "the admin's key\n"


def test_fingerprint_formats():
    plain = "ab" * 32
    assert tls.normalize_fingerprint(":".join(["AB"] * 32)) == plain
    assert tls.normalize_fingerprint(f" {plain.upper()}\n") == plain
    for wrong in ("ab" * 31, "zz" * 32, "", "ab" * 33):
        with pytest.raises(ValueError, match="64 hex digits"):
            tls.normalize_fingerprint(wrong)
    with pytest.raises(ValueError, match="no PEM certificate"):
        tls.fingerprint(b"not a certificate")


@pytest.fixture
def https_server(tmp_path):
    """A real HTTPS listener with the self-signed pair; records each request it gets."""
    config = Config(home=tmp_path / "srv", listen="127.0.0.1:0", tls="on")
    cert, key = tls.prepare(config)
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls.server_context(cert, key).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", cert, seen
    finally:
        server.shutdown()
        server.server_close()


def test_client_pins_the_fingerprint_and_sends_nothing_to_another_certificate(https_server):
    url, cert, seen = https_server
    right = tls.fingerprint(cert.read_bytes())
    assert Client(url, "t0ken", fingerprint=right).get("/x") == {"ok": True}
    colons = ":".join(right[i:i + 2].upper() for i in range(0, 64, 2))
    assert Client(url, "t0ken", fingerprint=colons).get("/x") == {"ok": True}
    assert seen == ["Bearer t0ken"] * 2
    wrong = ("0" if right[0] != "0" else "1") + right[1:]
    with pytest.raises(APIError, match=f"fingerprint {right}, not the pinned {wrong}"):
        Client(url, "t0ken", fingerprint=wrong).get("/x")
    assert seen == ["Bearer t0ken"] * 2  # the token never left


def test_client_trusts_a_ca_file_and_else_the_system_cas_never_nothing(https_server, tmp_path):
    url, cert, seen = https_server
    assert Client(url, "t", ca_file=str(cert)).get("/x") == {"ok": True}
    with pytest.raises(APIError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(url, "t").get("/x")  # self-signed, not in the system's CAs
    other = Config(home=tmp_path / "other", tls="on")
    other_cert, _ = tls.prepare(other)
    with pytest.raises(APIError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(url, "t", ca_file=str(other_cert)).get("/x")
    assert len(seen) == 1
    with pytest.raises(ValueError, match="cannot use the CA file"):
        Client(url, "t", ca_file=str(tmp_path / "nope.crt"))
    with pytest.raises(ValueError, match="need the appliance's URL to be https"):
        Client(url.replace("https", "http"), "t", fingerprint="ab" * 32)


def test_python_ssl_verifies_the_self_signed_cert_as_its_own_ca_strictly(https_server):
    """What Prometheus's ca_file and curl --cacert do: the cert as the only trust
    anchor, with the host name checked, and OpenSSL's strict X.509 checks."""
    url, cert, _ = https_server
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    port = int(url.rsplit(":", 1)[1])
    import socket

    for name in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                context.wrap_socket(raw, server_hostname=name) as conn:
            assert conn.version() in ("TLSv1.2", "TLSv1.3")


def test_client_from_home_uses_https_and_pins_the_home_cert(tmp_path, monkeypatch):
    monkeypatch.delenv("VMCTL_URL", raising=False)
    config = Config(home=tmp_path, listen="0.0.0.0:8443")
    config.save()
    client = Client.from_home(str(tmp_path))
    assert client.base_url == "https://0.0.0.0:8443"
    # no certificate yet (serve has not started): nothing to pin, the system's CAs decide
    assert client.pinned is None
    tls.prepare(config)
    pinned = Client.from_home(str(tmp_path))
    assert pinned.pinned == tls.fingerprint((tmp_path / "tls/server.crt").read_bytes())
    loopback = Config(home=tmp_path / "lo")
    loopback.prepare()
    loopback.save()
    assert Client.from_home(str(tmp_path / "lo")).base_url == "http://127.0.0.1:8080"
