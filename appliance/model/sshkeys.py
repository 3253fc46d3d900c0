"""OpenSSH public keys (issue 15, Nova's keypairs): the one-line text
`TYPE BASE64 [COMMENT]` checked by decoding its blob, as sshd would read it.

Allowed: ssh-ed25519, ecdsa-sha2-nistp256/384/521, and ssh-rsa of at least
2048 bits (shorter RSA keys are breakable; DSA is gone from OpenSSH). The
fingerprint is ssh-keygen's: SHA256 of the blob, base64 without padding.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import struct

from appliance.errors import Invalid

MAX_KEY_BYTES = 8 * 1024  # a 16384-bit RSA key is ~2.8 KiB of text
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 16384
ECDSA_POINT_BYTES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
KEY_TYPES = ("ssh-ed25519", *(f"ecdsa-sha2-{curve}" for curve in ECDSA_POINT_BYTES), "ssh-rsa")
MAX_COMMENT = 256


def _strings(blob: bytes) -> list[bytes]:
    """The blob's SSH wire strings (uint32 length, bytes), all of it."""
    parts, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ValueError("truncated")
        (size,) = struct.unpack(">I", blob[at:at + 4])
        at += 4
        if at + size > len(blob):
            raise ValueError("truncated")
        parts.append(blob[at:at + size])
        at += size
    return parts


def parse(text: object, field: str = "public_key") -> dict[str, object]:
    """{"key": the normalised line, "type", "bits", "comment", "fingerprint"}, or
    Invalid saying what is wrong."""
    if not isinstance(text, str):
        raise Invalid("must be an OpenSSH public key: one line 'TYPE BASE64 [COMMENT]'", field)
    if len(text.encode()) > MAX_KEY_BYTES:
        raise Invalid(f"must be at most {MAX_KEY_BYTES} bytes", field)
    text = text.strip()
    if "\n" in text or "\r" in text or not text.isprintable():
        raise Invalid("must be one line of printable text (one key)", field)
    kind, _, rest = text.partition(" ")
    data, _, comment = rest.strip().partition(" ")
    comment = comment.strip()
    if kind not in KEY_TYPES:
        raise Invalid(f"key type {kind[:40]!r} is not allowed; allowed: {', '.join(KEY_TYPES)} "
                      "(options before the type are not accepted)", field)
    if len(comment) > MAX_COMMENT:
        raise Invalid(f"the comment is at most {MAX_COMMENT} characters", field)
    try:
        blob = base64.b64decode(data, validate=True)
        parts = _strings(blob)
    except (binascii.Error, ValueError):
        raise Invalid("the key's base64 blob does not decode to an SSH key", field) from None
    if not parts or parts[0] != kind.encode():
        raise Invalid(f"the key's blob is not a {kind} key", field)
    bits = _bits(kind, parts[1:])
    if bits is None:
        raise Invalid(f"the key's blob is not a valid {kind} key", field)
    if kind == "ssh-rsa" and not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise Invalid(f"an RSA key must have {MIN_RSA_BITS}-{MAX_RSA_BITS} bits (this has {bits})",
                      field)
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    line = f"{kind} {data}" + (f" {comment}" if comment else "")
    return {"key": line, "type": kind, "bits": bits, "comment": comment,
            "fingerprint": f"SHA256:{digest}"}


def _bits(kind: str, fields: list[bytes]) -> int | None:
    if kind == "ssh-ed25519":
        return 256 if len(fields) == 1 and len(fields[0]) == 32 else None
    if kind == "ssh-rsa":
        if len(fields) != 2 or not fields[0] or not fields[1]:
            return None
        exponent, modulus = (int.from_bytes(f, "big") for f in fields)
        return modulus.bit_length() if exponent >= 3 and exponent % 2 else None
    curve = kind.removeprefix("ecdsa-sha2-")
    if len(fields) != 2 or fields[0] != curve.encode():
        return None
    point = fields[1]
    if len(point) != ECDSA_POINT_BYTES[curve] or point[0] != 4:  # uncompressed only
        return None
    return {"nistp256": 256, "nistp384": 384, "nistp521": 521}[curve]
