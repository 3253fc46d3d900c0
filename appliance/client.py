"""A small REST client for vmctl: the URL and token come from the home directory.

Over HTTPS it trusts the server by one of, first found: a pinned SHA-256
fingerprint (--fingerprint, VMCTL_FINGERPRINT), a CA file (--ca-file,
VMCTL_CA_FILE), the home's own certificate when it talks to the home's own
listener, or else the system's CAs. Verification is never switched off.
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from appliance import tls
from appliance.config import Config


class APIError(Exception):
    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        if isinstance(body, dict):
            reason = body.get("reason") or body.get("description") or body.get("title") or ""
            field = body.get("field")
            message = f"{reason} (field: {field})" if field else reason
        else:
            message = str(body)
        super().__init__(f"HTTP {status}: {message}")


class FingerprintMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one: nothing was sent to it."""


class _PinnedSSLSocket(ssl.SSLSocket):
    """Checks the certificate's fingerprint right after the handshake, before
    anything (a request and its token) is written: for urllib and for the
    WebSocket of `vmctl console` alike, as both wrap sockets with the context."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        pinned = getattr(self.context, "pinned", "")
        seen = tls.der_fingerprint(self.getpeercert(binary_form=True) or b"")
        if seen != pinned:
            raise FingerprintMismatch(
                f"the server's certificate has SHA-256 fingerprint {seen}, not the pinned "
                f"{pinned}: refusing it (a different server, or one in between)")


class _PinnedContext(ssl.SSLContext):
    """The chain and name are not checked: the pin decides, in the handshake."""

    sslsocket_class = _PinnedSSLSocket
    pinned = ""


def tls_context(https: bool, fingerprint: str | None,
                ca_file: str | None) -> ssl.SSLContext | None:
    """How vmctl trusts the appliance: the pinned fingerprint, else the CA file,
    else the system's CAs; None for plain HTTP."""
    if fingerprint is not None or ca_file is not None:
        if not https:
            # a pin or a CA on plain HTTP would be ignored: say so rather than run unchecked
            raise ValueError("--fingerprint and --ca-file need the appliance's URL to be https://")
    if not https:
        return None
    if fingerprint is not None:
        context = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.pinned = tls.normalize_fingerprint(fingerprint)
        return context
    try:
        return ssl.create_default_context(cafile=ca_file)  # the system's CAs when None
    except OSError as err:  # ssl.SSLError too: not a PEM CA file
        raise ValueError(f"cannot use the CA file {ca_file}: {err}") from None


class Client:
    def __init__(self, base_url: str, token: str | None, timeout: float = 600,
                 fingerprint: str | None = None, ca_file: str | None = None,
                 project: str | None = None):
        """project: the project every request acts in (`?project=`); None: the token's own."""
        scheme = urllib.parse.urlsplit(base_url).scheme
        if scheme not in ("http", "https"):
            # urlopen would also take file: and ftp: URLs, and send the token there
            raise ValueError(
                f"the appliance's URL must start with http:// or https://, not {base_url[:40]!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # the same trust for the REST calls and for console's WebSocket (appliance/cli/consoles.py)
        self.ssl_context = tls_context(scheme == "https", fingerprint, ca_file)
        self.pinned = getattr(self.ssl_context, "pinned", None)
        https = [urllib.request.HTTPSHandler(context=self.ssl_context)] if self.ssl_context else []
        self._opener = urllib.request.build_opener(*https)
        self.project = project

    @classmethod
    def from_home(cls, home: str, fingerprint: str | None = None,
                  ca_file: str | None = None, project: str | None = None) -> Client:
        """The home's own listener (https when its config has TLS on, pinned to
        the home's certificate) unless VMAPPLIANCE_URL (or VMCTL_URL) names another."""
        config = Config.load(home)
        url = os.environ.get("VMAPPLIANCE_URL") or os.environ.get("VMCTL_URL")
        if url is None:
            https = tls.tls_enabled(config)
            url = f"{'https' if https else 'http'}://{config.listen}"
            if https and fingerprint is None and ca_file is None:
                fingerprint = home_fingerprint(config)
        token = os.environ.get("VMAPPLIANCE_TOKEN") or os.environ.get("VMCTL_TOKEN")
        if token is None and config.token_path.exists():
            token = config.token()
        return cls(url, token, fingerprint=fingerprint, ca_file=ca_file, project=project)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        headers: dict | None = None,
        raw: bytes | Iterable[bytes] | None = None,
        content_type: str | None = None,
        binary: bool = False,
    ) -> Any:
        """The answer's JSON, or its text; its bytes with binary=True (screen.png).
        raw may be an iterable of byte chunks, sent as they come (with headers giving
        its Content-Length): an image upload never held whole in memory."""
        url = self.base_url + path
        if self.project is not None:
            query = {**(query or {}), "project": self.project}
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = raw
        all_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        elif content_type:
            all_headers["Content-Type"] = content_type
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310 - http(s), see __init__
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                payload = resp.read()
                kind = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = payload.decode(errors="replace")
            raise APIError(err.code, parsed) from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, FingerprintMismatch):
                raise APIError(0, {"reason": str(err.reason.args[0])}) from None
            raise APIError(
                0, {"reason": f"cannot reach the appliance at {self.base_url}: {err.reason}"}
            ) from None
        except (http.client.HTTPException, OSError) as err:
            # e.g. plain HTTP to an HTTPS port: the server closes without an answer
            hint = " (does it serve https://?)" if self.base_url.startswith("http:") else ""
            raise APIError(0, {"reason": f"cannot reach the appliance at {self.base_url}: "
                                         f"{err or type(err).__name__}{hint}"}) from None
        if binary:
            return payload
        if not payload:
            return None
        if "json" in kind:
            return json.loads(payload)
        return payload.decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)


def home_fingerprint(config: Config) -> str | None:
    """The home's certificate's fingerprint; None when there is none to read
    yet (the server has not started), and the system's CAs decide."""
    cert, _ = tls.cert_files(config)
    try:
        return tls.fingerprint(cert.read_bytes())
    except (OSError, ValueError):
        return None
