"""What a libvirt error may tell an API user.

libvirt's messages quote whatever it was reading when it failed: opening
`test:///etc/shadow` answers with the file's first line, and a configuration
file's syntax error quotes the line. Events, operation errors and host views
are read by API users, so what goes there is a short reason chosen from the
error's code; the full message goes to the server log only (HOME/logs, 0700).
"""
from __future__ import annotations

import libvirt

from appliance.virt.driver import MAX_REASON, shorten  # noqa: F401 - MAX_REASON: the limit, for callers

# Error code -> the reason shown. Codes not listed get GENERIC.
_CONNECT_REASONS = {
    libvirt.VIR_ERR_NO_CONNECT: "libvirt does not answer at this URI",
    libvirt.VIR_ERR_SYSTEM_ERROR: "the connection failed (refused, no such socket, or no route)",
    libvirt.VIR_ERR_RPC: "the libvirt protocol failed on this connection",
    libvirt.VIR_ERR_AUTH_FAILED: "authentication failed",
    libvirt.VIR_ERR_AUTH_CANCELLED: "authentication was cancelled",
    libvirt.VIR_ERR_AUTH_UNAVAILABLE: "no authentication method is available",
    libvirt.VIR_ERR_OPERATION_TIMEOUT: "the connection timed out",
    libvirt.VIR_ERR_ACCESS_DENIED: "libvirt denied access",
    libvirt.VIR_ERR_NO_SUPPORT: "this libvirt does not support the request",
    libvirt.VIR_ERR_XML_ERROR: "libvirt could not parse what it read",
    libvirt.VIR_ERR_XML_DETAIL: "libvirt could not parse what it read",
    libvirt.VIR_ERR_XML_INVALID_SCHEMA: "libvirt could not parse what it read",
    libvirt.VIR_ERR_CONF_SYNTAX: "a libvirt configuration file has a syntax error",
    libvirt.VIR_ERR_INVALID_ARG: "libvirt refused the URI",
}
GENERIC = "libvirt refused the connection"


def connect_reason(err: libvirt.libvirtError) -> str:
    """A fixed, short reason for a failed connection (never libvirt's text)."""
    return (
        f"{_CONNECT_REASONS.get(err.get_error_code() or -1, GENERIC)} "
        f"(code {err.get_error_code()}; "
        "the server log has libvirt's message)"
    )


# Operations act on domains, disks and networks the appliance made itself, so
# libvirt's message names those and helps the user (a port in use, a network
# down, a lock held); it is kept, cut short, except where it quotes a file.
_QUOTES_FILES = (
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_XML_INVALID_SCHEMA,
    libvirt.VIR_ERR_CONF_SYNTAX,
)


def operation_reason(err: BaseException) -> str:
    """What an operation's error, its event and the VM's last_error say."""
    if isinstance(err, libvirt.libvirtError):
        if err.get_error_code() in _QUOTES_FILES:
            return (
                _CONNECT_REASONS[err.get_error_code()] + " (the server log has libvirt's message)"
            )
        text = err.get_error_message() or GENERIC
    else:
        text = str(err)
    return shorten(text)
