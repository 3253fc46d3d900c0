"""The appliance's own credentials for qemu+ssh and qemu+tls hosts (issue 16):
its ssh key and known_hosts (appliance/ssh_access.py), its CA (appliance/host_pki.py),
and the URI it opens for a host (appliance/host_access.py). The user gives host,
port and user; keyfile, known_hosts and pkipath come from the home only.
The real transports are tests/cluster/test_cluster_remote_transports.py."""
from __future__ import annotations

import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from falcon import testing

from appliance import host_pki, hosturi, ssh_access
from appliance.api.app import create_app
from appliance.cli.hosts import _added
from appliance.config import Config
from appliance.errors import Conflict, Failed, Invalid
from appliance.host_access import connection_uri

TOKEN = "sekrit"
REAL_SCAN = ssh_access.scan  # tests/unit/conftest.py replaces it in every test
KEY_A = "AAAAC3NzaC1lZDI1NTE5AAAAIEAUpYJ2aVVyQ58/OOoX7DxDoeBhGN8LOTBezOKCf9uv"
KEY_B = "AAAAC3NzaC1lZDI1NTE5AAAAIJ3J18UN11NRU12CMEJHrYeLHm3hT+bsz8eruhL6oT7X"


def query(uri: str) -> tuple[str, dict]:
    parts = urllib.parse.urlsplit(uri)
    return parts.scheme, dict(urllib.parse.parse_qsl(parts.query))


def test_an_ssh_host_is_opened_with_the_appliance_s_key_and_known_hosts(tmp_path):
    config = Config(home=tmp_path)
    scheme, params = query(connection_uri(
        "qemu+ssh://root@h2:2222/system?socket=/run/libvirt/libvirt-sock", config))
    assert scheme == "qemu+libssh2"
    assert params == {"socket": "/run/libvirt/libvirt-sock",
                      "keyfile": str(tmp_path / "ssh" / "id_ed25519"),
                      "known_hosts": str(tmp_path / "ssh" / "known_hosts"),
                      "known_hosts_verify": "normal", "sshauth": "privkey"}
    assert (tmp_path / "ssh" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert urllib.parse.urlsplit(connection_uri("qemu+ssh://root@h2:2222/system", config)).netloc \
        == "root@h2:2222"
    # no_verify=1, the admin's explicit choice, is libssh2's "ignore"
    assert query(connection_uri("qemu+ssh://h2/system?no_verify=1", config))[1][
        "known_hosts_verify"] == "ignore"


def test_a_tls_host_is_opened_with_the_appliance_s_pki(tmp_path):
    config = Config(home=tmp_path)
    scheme, params = query(connection_uri("qemu+tls://h2:16514/system", config))
    assert (scheme, params) == ("qemu+tls", {"pkipath": str(tmp_path / "pki")})
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == [
        "cacert.pem", "cakey.pem", "clientcert.pem", "clientkey.pem"]
    for other in ("qemu:///system", "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
                  "qemu+tcp://h2/system", "test:///default"):
        assert connection_uri(other, config) == other


@pytest.mark.parametrize("uri", [
    "qemu+tls://h2/system?pkipath=/tmp/pki",
    "qemu+ssh://h2/system?known_hosts=/tmp/k",
    "qemu+ssh://h2/system?known_hosts_verify=auto",
    "qemu+ssh://h2/system?sshauth=agent",
    "qemu+libssh://h2/system",
    "qemu+libssh2://h2/system",
    "qemu+ssh://h2/system?keyfile=/tmp/id",
])
def test_what_the_appliance_sets_a_user_cannot(uri):
    with pytest.raises(Invalid):
        hosturi.validate(uri, ["/run/libvirt"], "/home/ssh")


def test_the_key_is_made_once_in_openssh_format(tmp_path):
    path = ssh_access.ensure_key(tmp_path / "ssh")
    first = ssh_access.public_key(tmp_path / "ssh")
    assert ssh_access.ensure_key(tmp_path / "ssh") == path
    assert ssh_access.public_key(tmp_path / "ssh") == first and first.startswith("ssh-ed25519 ")
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert serialization.load_ssh_private_key(path.read_bytes(), None)
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / "ssh").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (tmp_path / "ssh").iterdir()) == ["id_ed25519", "id_ed25519.pub"]


def offering(monkeypatch, blob: str) -> None:
    monkeypatch.setattr(ssh_access, "scan", lambda host, port: [
        ssh_access.HostKey(ssh_access.known_hosts_name(host, port), "ssh-ed25519", blob)])


def test_trust_on_first_use_then_a_changed_key_is_refused(tmp_path, monkeypatch):
    ssh_dir = tmp_path / "ssh"
    offering(monkeypatch, KEY_A)
    first, keys = ssh_access.trust(ssh_dir, "127.0.0.1", 2222)
    assert first["recorded_now"] and first["address"] == "[127.0.0.1]:2222"
    assert first["keys"] == [{"type": "ssh-ed25519", "fingerprint": ssh_access.fingerprint(KEY_A)}]
    assert not (ssh_dir / "known_hosts").exists()  # recorded only when the caller says so
    ssh_access.record(ssh_dir, keys)
    assert (ssh_dir / "known_hosts").read_text() == f"[127.0.0.1]:2222 ssh-ed25519 {KEY_A}\n"
    assert (ssh_dir / "known_hosts").stat().st_mode & 0o777 == 0o600
    ssh_access.record(ssh_dir, keys)  # a second add of the address meanwhile: kept once
    assert (ssh_dir / "known_hosts").read_text().count("\n") == 1
    assert ssh_access.trust(ssh_dir, "127.0.0.1", 2222) == ({**first, "recorded_now": False}, [])
    offering(monkeypatch, KEY_B)
    with pytest.raises(Conflict) as caught:
        ssh_access.trust(ssh_dir, "127.0.0.1", 2222)
    assert ssh_access.fingerprint(KEY_A) in caught.value.reason
    assert ssh_access.fingerprint(KEY_B) in caught.value.reason
    found, keys = ssh_access.trust(ssh_dir, "h2", None)
    assert found["address"] == "h2"  # another address: its own
    ssh_access.record(ssh_dir, keys)
    assert (ssh_dir / "known_hosts").read_text().count("\n") == 2


def test_keyscan_output_is_checked_line_by_line():
    text = "\n".join([f"[h]:2 ssh-ed25519 {KEY_A}", f"[other]:2 ssh-ed25519 {KEY_B}",
                      "[h]:2 ssh-ed25519 not*base64", f"[h]:2 ssh-dss {KEY_B}",
                      f"[h]:2 ssh-ed25519 {KEY_B} extra", "# comment"])
    assert ssh_access._parse(text, "[h]:2") == [ssh_access.HostKey("[h]:2", "ssh-ed25519", KEY_A)]


def test_no_ssh_server_is_a_failure_with_the_address(tmp_path):
    with pytest.raises(Failed, match=r"\[127.0.0.1\]:1"):
        REAL_SCAN("127.0.0.1", 1)  # nothing listens on port 1 (ssh-keyscan runs)


def test_the_ca_signs_a_server_certificate_for_the_host_s_addresses(tmp_path):
    placed = host_pki.issue_server(tmp_path / "pki", tmp_path / "out", ["127.0.0.1", "h2.lan"])
    assert sorted(placed.values()) == ["/etc/pki/CA/cacert.pem", "/etc/pki/libvirt/private/serverkey.pem",
                                       "/etc/pki/libvirt/servercert.pem"]
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "cacert.pem").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "out" / "servercert.pem").read_bytes())
    client = x509.load_pem_x509_certificate((tmp_path / "pki" / "clientcert.pem").read_bytes())
    for leaf, purpose in ((server, ExtendedKeyUsageOID.SERVER_AUTH),
                          (client, ExtendedKeyUsageOID.CLIENT_AUTH)):
        leaf.verify_directly_issued_by(ca)
        assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [purpose]
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["h2.lan"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (tmp_path / "out" / "serverkey.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pki" / "cakey.pem").stat().st_mode & 0o777 == 0o600
    # a second host's certificate comes from the same CA
    host_pki.issue_server(tmp_path / "pki", tmp_path / "out2", ["h3"])
    assert (tmp_path / "pki" / "cacert.pem").read_bytes() == (tmp_path / "out2" / "cacert.pem").read_bytes()


def test_adding_an_ssh_host_answers_with_both_keys_and_refuses_a_changed_one(service, monkeypatch):
    client = testing.TestClient(create_app(service, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    offering(monkeypatch, KEY_A)
    resp = client.simulate_post("/v1/hosts", params={"wait": "false"},
                                json={"name": "s1", "uri": "qemu+ssh://root@127.0.0.1:2222/system"})
    assert resp.status_code == 201, resp.text
    ssh = resp.json["ssh"]
    assert ssh["public_key"] == ssh_access.public_key(service.config.ssh_dir)
    assert ssh["host_key"]["recorded_now"]
    text = _added({**resp.json, "observed_state": "connecting", "reason": "not connected yet"})
    assert "recorded now (trust on first use)" in text and ssh_access.fingerprint(KEY_A) in text
    assert ssh["public_key"] in text
    assert any(e["kind"] == "host-key" for e in service.list_events())
    offering(monkeypatch, KEY_B)
    resp = client.simulate_post("/v1/hosts", json={"name": "s2",
                                                   "uri": "qemu+ssh://127.0.0.1:2222/system"})
    assert resp.status_code == 409 and "changed" in resp.text, resp.text
    assert [h["name"] for h in client.simulate_get("/v1/hosts").json["items"]] == ["local", "s1"]
    resp = client.simulate_patch("/v1/hosts/s1", json={"uri": "qemu+ssh://127.0.0.1:2222/system"})
    assert resp.status_code == 409, resp.text
    assert client.simulate_get("/v1/hosts/s1").json["uri"] == "qemu+ssh://root@127.0.0.1:2222/system"


def test_an_ssh_host_without_a_server_is_added_down_with_nothing_recorded(service):
    client = testing.TestClient(create_app(service, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    resp = client.simulate_post("/v1/hosts", params={"wait": "false"},
                                json={"name": "s1", "uri": "qemu+ssh://root@127.0.0.1:1/system"})
    assert resp.status_code == 201 and "ssh" not in resp.json, resp.text
    assert not (service.config.ssh_dir / "known_hosts").exists()


def test_vmctl_host_ssh_key_and_trust_work_on_the_home(tmp_path, capsys):
    from appliance.cli import main

    home = tmp_path / "home"
    assert main(["--home", str(home), "host", "ssh-key"]) == 0
    shown = capsys.readouterr().out.strip()
    assert shown == ssh_access.public_key(home / "ssh")
    assert main(["--home", str(home), "host", "trust", "127.0.0.1", "h2.lan", "--out",
                 str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'out' / 'serverkey.pem'} -> /etc/pki/libvirt/private/serverkey.pem" in out
    assert main(["--home", str(home), "host", "trust", "h2;touch /tmp/x", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "not a host name" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_a_refused_host_add_records_no_host_key(service, monkeypatch):
    """The add's transaction refuses (another host has the URI; it was added while
    its ssh server did not answer): known_hosts stays as it was, no host-key event.
    A later PATCH of the first host's uri records it, once that committed."""
    client = testing.TestClient(create_app(service, TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    uri = "qemu+ssh://root@127.0.0.1:2222/system"
    resp = client.simulate_post("/v1/hosts", params={"wait": "false"}, json={"name": "s1", "uri": uri})
    assert resp.status_code == 201 and "ssh" not in resp.json, resp.text
    offering(monkeypatch, KEY_A)
    resp = client.simulate_post("/v1/hosts", params={"wait": "false"}, json={"name": "s2", "uri": uri})
    assert resp.status_code == 409 and "already has this URI" in resp.text, resp.text
    assert not (service.config.ssh_dir / "known_hosts").exists()
    assert not any(e["kind"] == "host-key" for e in service.list_events())
    resp = client.simulate_patch("/v1/hosts/s1", json={"uri": uri})
    assert resp.status_code == 200 and resp.json["ssh"]["host_key"]["recorded_now"], resp.text
    assert (service.config.ssh_dir / "known_hosts").read_text() == \
        f"[127.0.0.1]:2222 ssh-ed25519 {KEY_A}\n"
    assert [e for e in service.list_events() if e["kind"] == "host-key"]


def test_every_key_and_certificate_is_synced_before_it_replaces_the_old(tmp_path, monkeypatch):
    """A crash after the rename must find the whole new key, not an empty file: each file is
    written beside, synced, then renamed (durable.replacing); a key 0600 from its first byte."""
    import os

    synced: list[int] = []
    renamed: list[tuple[str, bool, int]] = []  # (name, synced before, mode at the rename)
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])

    def replace(src, dst):
        renamed.append((os.path.basename(dst), bool(synced), os.stat(src).st_mode & 0o777))
        synced.clear()
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    host_pki.issue_server(tmp_path / "pki", tmp_path / "out", ["127.0.0.1"])
    assert sorted(renamed) == sorted([
        ("cakey.pem", True, 0o600), ("cacert.pem", True, 0o644), ("clientkey.pem", True, 0o600),
        ("clientcert.pem", True, 0o644), ("serverkey.pem", True, 0o600),
        ("servercert.pem", True, 0o644), ("cacert.pem", True, 0o644)])
