"""The self-signed certificate `vmctl serve` makes into HOME/tls at first
start when TLS is on and the config names no certificate (as Incus does).

EC P-384, valid ten years, SANs for localhost, 127.0.0.1, ::1, the hostname
and the listen address. It is its own CA (basicConstraints CA:TRUE, keyUsage
keyCertSign), so that a client that cannot pin a fingerprint (Prometheus,
curl, Python's ssl) trusts it by naming server.crt as its CA file.
Made with `cryptography` rather than by running openssl: no subprocess, and
the extensions are objects, not an openssl.cnf.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.config import Config
from appliance.tls import CERT_NAME, KEY_NAME, listen_host

# Incus's self-signed server certificates are valid for ten years too: the
# fingerprint is what clients trust, and it must not change under them.
VALIDITY = datetime.timedelta(days=3650)


def subject_alt_names(listen: str, hostname: str) -> list[x509.GeneralName]:
    """localhost, 127.0.0.1, ::1, the machine's hostname, and the listen host
    unless it is a wildcard (clients never connect to 0.0.0.0 by name)."""
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    if hostname and hostname != "localhost":
        names.append(x509.DNSName(hostname))
    host = listen_host(listen)
    try:
        address = ipaddress.ip_address(host)
        if not address.is_unspecified:
            names.append(x509.IPAddress(address))
    except ValueError:
        if host:
            names.append(x509.DNSName(host))
    return list(dict.fromkeys(names))  # without repeats, in order


def make_self_signed(listen: str, hostname: str) -> tuple[bytes, bytes]:
    """A new EC P-384 key and a self-signed certificate for it, as PEM (cert, key)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vm-appliance"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"vm-appliance@{hostname}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a client's clock a bit behind
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(listen, hostname)),
                       critical=False)
        # Its own CA: a client may take this file as its trust anchor (ca_file).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA384())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_self_signed(config: Config, hostname: str | None = None) -> bool:
    """Make HOME/tls/server.{crt,key} unless HOME/tls exists; True when made.

    The pair is written into a fresh directory (mkdtemp: 0700, the key 0600)
    that is then renamed to HOME/tls in one step, so that a crash leaves no
    half pair and two starts at once keep the first pair, never overwrite it."""
    target = config.tls_dir
    if target.exists():
        return False
    cert_pem, key_pem = make_self_signed(config.listen, hostname or socket.gethostname())
    config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tls-", dir=config.home))
    try:
        fd = os.open(staging / KEY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_pem)
        (staging / CERT_NAME).write_bytes(cert_pem)
        os.chmod(staging / CERT_NAME, 0o644)
        try:
            staging.rename(target)
        except OSError:
            if not target.exists():
                raise
            return False  # another start made it first: theirs stays
    finally:
        if staging.exists():
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()
    return True
