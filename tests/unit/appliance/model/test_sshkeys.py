"""OpenSSH public keys as the appliance accepts them (appliance/model/sshkeys.py):
the allowed types, RSA's minimum size, the blob decoded and checked, and the
fingerprint exactly as ssh-keygen -l prints it."""
from __future__ import annotations

import base64
import shutil
import struct
import subprocess

import pytest

from appliance.errors import Invalid
from appliance.model import sshkeys

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


def keygen(tmp_path, kind: str, bits: int | None = None) -> str:
    path = tmp_path / f"k-{kind}-{bits}"
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "me@laptop", "-t", kind, "-f", str(path),
                    *(["-b", str(bits)] if bits else [])], check=True)
    return (tmp_path / f"k-{kind}-{bits}.pub").read_text()


def fingerprint(text: str, tmp_path) -> str:
    path = tmp_path / "fp.pub"
    path.write_text(text)
    return subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True,
                          text=True, check=True).stdout.split()[1]


@needs_keygen
@pytest.mark.parametrize("kind, bits, shown_bits", [
    ("ed25519", None, 256), ("ecdsa", 256, 256), ("ecdsa", 384, 384), ("ecdsa", 521, 521),
    ("rsa", 2048, 2048)])
def test_allowed_keys_are_parsed_with_ssh_keygen_s_fingerprint(tmp_path, kind, bits, shown_bits):
    text = keygen(tmp_path, kind, bits)
    parsed = sshkeys.parse(text + "\n")
    assert parsed["bits"] == shown_bits and parsed["comment"] == "me@laptop"
    assert parsed["key"] == text.strip()
    assert parsed["fingerprint"] == fingerprint(text, tmp_path)


def blob(*parts: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(p)) + p for p in parts)).decode()


RSA_1024 = "ssh-rsa " + blob(b"ssh-rsa", b"\x01\x00\x01", b"\x80" + b"\x01" * 127)
ED = "ssh-ed25519 " + blob(b"ssh-ed25519", b"\x07" * 32)


@pytest.mark.parametrize("text, says", [
    (RSA_1024, "2048-16384 bits (this has 1024)"),
    ("ssh-dss " + blob(b"ssh-dss", b"p", b"q", b"g", b"y"), "not allowed"),
    ('command="rm -rf /" ' + ED, "not allowed"),  # options are authorized_keys', not a key's
    ("ssh-ed25519 not-base64!", "does not decode"),
    ("ssh-ed25519 " + blob(b"ssh-rsa", b"\x01\x00\x01", b"\x80" * 256), "not a ssh-ed25519 key"),
    ("ssh-ed25519 " + blob(b"ssh-ed25519", b"\x07" * 31), "not a valid ssh-ed25519 key"),
    ("ssh-ed25519 " + blob(b"ssh-ed25519", b"\x07" * 32)[:-4], "does not decode"),
    ("ecdsa-sha2-nistp256 " + blob(b"ecdsa-sha2-nistp256", b"nistp384", b"\x04" * 65),
     "not a valid"),
    (ED + "\n" + ED, "one line"),
    (ED + " " + "c" * 300, "comment"),
    ("ssh-ed25519 " + "A" * 9000, "at most 8192 bytes"),
    (None, "OpenSSH public key"),
])
def test_refused_keys_say_why(text, says):
    with pytest.raises(Invalid) as err:
        sshkeys.parse(text)
    assert says in err.value.reason and err.value.field == "public_key"


def test_a_key_without_comment_is_kept_as_type_and_blob():
    assert sshkeys.parse(f"  {ED}  ")["key"] == ED and sshkeys.parse(ED)["comment"] == ""
