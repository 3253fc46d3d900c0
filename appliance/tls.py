"""TLS for the API and the exporter: when it is on, which certificate, and the
fingerprint clients pin.

When: config `tls` is "on", "off" or "auto" (the default): on unless the
listen address is loopback. Plain HTTP on any other address is therefore only
ever the admin's explicit choice (`tls: "off"`, `vmctl serve --insecure-http`).

What: the admin's certificate and key (config `tls_cert` and `tls_key`), or a
self-signed pair made into HOME/tls/ the first time TLS is on, as Incus does
(appliance/selfsigned.py), and never replaced afterwards. A client trusts it
by its SHA-256 fingerprint (vmctl) or as a CA file (Prometheus, curl).
"""
from __future__ import annotations

import hashlib
import ipaddress
import ssl
from pathlib import Path

from appliance.config import Config

TLS_MODES = ("auto", "on", "off")
CERT_NAME, KEY_NAME = "server.crt", "server.key"


class TLSConfigError(ValueError):
    """The config asks for something TLS cannot do; serve refuses to start."""


def listen_host(listen: str) -> str:
    """The host part of HOST:PORT, without an IPv6 address's brackets."""
    return listen.rpartition(":")[0].strip("[]")


def is_loopback(listen: str) -> bool:
    """Only 127.0.0.0/8, ::1 and localhost: an empty host, a wildcard or any
    other name or address may be reached from other machines."""
    host = listen_host(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_enabled(config: Config) -> bool:
    if config.tls not in TLS_MODES:
        raise TLSConfigError(f'tls must be one of {", ".join(TLS_MODES)}, not {config.tls!r}')
    if (config.tls_cert is None) != (config.tls_key is None):
        raise TLSConfigError("tls_cert and tls_key go together: set both, or neither "
                             "for the self-signed pair in HOME/tls")
    if config.tls == "auto":
        return not is_loopback(config.listen)
    return config.tls == "on"


def cert_files(config: Config) -> tuple[Path, Path]:
    """The certificate and key to serve: the admin's (relative to home, or
    absolute) or the self-signed pair in HOME/tls."""
    if config.tls_cert is not None and config.tls_key is not None:
        return config.home / config.tls_cert, config.home / config.tls_key
    return config.tls_dir / CERT_NAME, config.tls_dir / KEY_NAME


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the DER form of the file's first certificate (the server's
    own, in a chain file), in lowercase hex as Incus shows it. The standard
    library's PEM reader: vmctl's client pins with it and stays quick to start
    (cryptography takes ~80 ms to import)."""
    text = cert_pem.decode("ascii", errors="replace")
    start = text.find(ssl.PEM_HEADER)
    end = text.find(ssl.PEM_FOOTER, start)
    if start < 0 or end < 0:
        raise ValueError("no PEM certificate in it")
    der = ssl.PEM_cert_to_DER_cert(text[start:end + len(ssl.PEM_FOOTER)])
    return hashlib.sha256(der).hexdigest()


def der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(value: str) -> str:
    """A fingerprint as hex, with or without colons, in any case -> plain lowercase hex."""
    digits = value.strip().replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"a SHA-256 fingerprint is 64 hex digits (colons allowed), "
                         f"not {value[:100]!r}")
    return digits


def prepare(config: Config) -> tuple[Path, Path] | None:
    """What `vmctl serve` and `vmctl exporter` call before listening: None for
    plain HTTP, else the certificate and key, made when they are the
    self-signed pair and missing, and checked to load together.
    Raises TLSConfigError with what to do."""
    if not tls_enabled(config):
        return None
    if config.tls_cert is None:
        from appliance.selfsigned import ensure_self_signed  # cryptography: only when serving

        ensure_self_signed(config)
    cert, key = cert_files(config)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise TLSConfigError(f"cannot use the TLS certificate {cert} with the key {key}: {err}"
                             ) from None
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """For the exporter's own listener: TLS 1.2 and up, Python's defaults otherwise."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
