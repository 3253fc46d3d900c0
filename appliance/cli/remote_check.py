"""`vmctl remote add` asks the server before it keeps the remote, as `incus remote
add` does (issue 16): a remote that cannot be used is refused with one line, and
nothing is written.

1. Over https, with neither --fingerprint nor --ca-file, the certificate: when
   this machine's CAs trust it for the URL's name, nothing is pinned; when they do
   not (the appliance's self-signed pair), its SHA-256 fingerprint is shown and
   pinned once accepted: with --accept-certificate, or by the user on a terminal
   (`ok (y/n/[fingerprint])?`, Incus's question); off a terminal it is refused,
   naming the fingerprint to check with `vmctl tls fingerprint` on the server.
   Nothing but the handshake reaches a server not yet trusted: no token.
2. GET /healthz with that trust: the server answers, as an appliance.
3. With a token file, GET /v1/me: the token is accepted (whose it is is shown).

`--no-check` skips all three (a remote prepared before its server is up): then
a https remote keeps only the trust its flags give.
"""
from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from appliance.cli.remotes import RemoteError
from appliance.client import APIError, Client
from appliance.tls import der_fingerprint, normalize_fingerprint

CHECK_SECONDS = 10.0


def _reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError):
        return err.reason or str(err)
    if isinstance(err, TimeoutError):
        return f"no answer within {CHECK_SECONDS:g} s"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def offered_fingerprint(host: str, port: int) -> str:
    """The SHA-256 fingerprint of the certificate the server offers (unchecked: a
    handshake and nothing else)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=CHECK_SECONDS) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls:
            return der_fingerprint(tls.getpeercert(binary_form=True) or b"")
    except OSError as err:
        raise RemoteError(f"cannot reach https://{host}:{port}: {_reason(err)}") from None


def _system_trusts(host: str, port: int, url: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CHECK_SECONDS) as sock, \
                ssl.create_default_context().wrap_socket(sock, server_hostname=host):
            return True
    except ssl.SSLCertVerificationError:
        return False
    except OSError as err:
        raise RemoteError(f"cannot reach {url}: {_reason(err)}") from None


def ask_on_terminal() -> Callable[[str], str] | None:
    """input() with its question on stderr, when both ends are a terminal; else None."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None

    def ask(question: str) -> str:
        sys.stderr.write(question)
        sys.stderr.flush()
        return sys.stdin.readline().strip()

    return ask


def certificate_pin(url: str, fingerprint: str | None, ca_file: str | None, accept: bool,
                    ask: Callable[[str], str] | None) -> tuple[str | None, bool]:
    """The fingerprint to pin (None: the system's CAs, or --ca-file, decide), and
    whether it was accepted here (shown, not given with --fingerprint)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or fingerprint is not None or ca_file is not None:
        return fingerprint, False
    host, port = parts.hostname or "", parts.port or 443
    if _system_trusts(host, port, url):
        return None, False
    seen = offered_fingerprint(host, port)
    if accept:
        return seen, True
    if ask is None:
        raise RemoteError(f"the certificate of {url} is not signed by a CA this machine trusts "
                          f"(SHA-256 fingerprint {seen}): compare it with `vmctl tls fingerprint` "
                          f"on the server, then add --fingerprint {seen} (or --accept-certificate)")
    answer = ask(f"Certificate fingerprint: {seen}\nok (y/n/[fingerprint])? ")
    if answer.lower() in ("y", "yes"):
        return seen, True
    try:
        typed = normalize_fingerprint(answer)
    except ValueError:
        raise RemoteError(f"the certificate of {url} was not accepted") from None
    if typed != seen:
        raise RemoteError(f"the server's certificate has fingerprint {seen}, not {typed}: "
                          "refused (a different server, or one in between)")
    return seen, True


def check(url: str, token: str | None, fingerprint: str | None,
          ca_file: str | None) -> dict[str, Any] | None:
    """GET /healthz, then (with a token) GET /v1/me with this trust: who the token
    names (None without one). RemoteError, one line, when either fails."""
    try:
        client = Client(url, token, timeout=CHECK_SECONDS, fingerprint=fingerprint,
                        ca_file=ca_file)
    except ValueError as err:
        raise RemoteError(str(err)) from None
    try:
        client.get("/healthz")
    except APIError as err:
        if err.status == 0:
            raise RemoteError(str(err.body.get("reason") if isinstance(err.body, dict)
                                  else err)) from None
        raise RemoteError(f"{url} does not answer as a vm-appliance (GET /healthz: "
                          f"{err})") from None
    if token is None:
        return None
    try:
        me: dict[str, Any] = client.get("/v1/me")
    except APIError as err:
        if err.status in (401, 403):
            raise RemoteError(f"{url} refused the token (HTTP {err.status}): is it this "
                              "appliance's? (vmctl token create on the server)") from None
        raise RemoteError(f"{url}: GET /v1/me: {err}") from None
    return me
