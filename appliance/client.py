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


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Checks the certificate's fingerprint right after the handshake, before
    the request (and its token) is written."""

    pinned = ""

    def connect(self) -> None:
        super().connect()
        seen = tls.der_fingerprint(self.sock.getpeercert(binary_form=True) or b"")
        if seen != self.pinned:
            self.sock.close()
            raise FingerprintMismatch(
                f"the server's certificate has SHA-256 fingerprint {seen}, not the pinned "
                f"{self.pinned}: refusing it (a different server, or one in between)")


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pinned: str):
        # The chain and name are not checked: the pin decides, in connect().
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(context=context)
        self.pinned = pinned

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req, context=self._context)  # type: ignore[attr-defined]

    def _connection(self, host: str, **kwargs: Any) -> _PinnedHTTPSConnection:
        conn = _PinnedHTTPSConnection(host, **kwargs)
        conn.pinned = self.pinned
        return conn


def _opener(https: bool, fingerprint: str | None,
            ca_file: str | None) -> urllib.request.OpenerDirector:
    if fingerprint is not None or ca_file is not None:
        if not https:
            # a pin or a CA on plain HTTP would be ignored: say so rather than run unchecked
            raise ValueError("--fingerprint and --ca-file need the appliance's URL to be https://")
    if fingerprint is not None:
        pinned = tls.normalize_fingerprint(fingerprint)
        return urllib.request.build_opener(_PinnedHTTPSHandler(pinned))
    if ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except OSError as err:  # ssl.SSLError too: not a PEM CA file
            raise ValueError(f"cannot use the CA file {ca_file}: {err}") from None
        return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener()  # the system's CAs for https


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
        self._opener = _opener(scheme == "https", fingerprint, ca_file)
        self.project = project

    @classmethod
    def from_home(cls, home: str, fingerprint: str | None = None,
                  ca_file: str | None = None, project: str | None = None) -> Client:
        """The home's own listener (https when its config has TLS on, pinned to
        the home's certificate) unless VMCTL_URL names another."""
        config = Config.load(home)
        url = os.environ.get("VMCTL_URL")
        if url is None:
            https = tls.tls_enabled(config)
            url = f"{'https' if https else 'http'}://{config.listen}"
            if https and fingerprint is None and ca_file is None:
                fingerprint = _home_fingerprint(config)
        token = os.environ.get("VMCTL_TOKEN")
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
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
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
        if not payload:
            return None
        if "json" in kind:
            return json.loads(payload)
        return payload.decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)


def _home_fingerprint(config: Config) -> str | None:
    """The home's certificate's fingerprint; None when there is none to read
    yet (the server has not started), and the system's CAs decide."""
    cert, _ = tls.cert_files(config)
    try:
        return tls.fingerprint(cert.read_bytes())
    except (OSError, ValueError):
        return None
