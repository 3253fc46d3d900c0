"""Mount the file system, serve it until a signal, unmount it.

Run by `vmctl mount PATH` (standalone, foreground) and, as a supervised child,
by `vmctl serve`. A mount left behind by a crash ("Transport endpoint is not
connected") is cleared before mounting again.

Other users reach the mount (allow_other) whenever FUSE lets this process
offer it: always as root, otherwise when /etc/fuse.conf has user_allow_other.
Who gets what is the map's (fs/identity.py) and the policy's (fs/guard.py),
decided per request, so a change of the map needs no new mount; a uid the map
does not name gets EACCES from every request.
"""
from __future__ import annotations

import grp
import logging
import os
import signal
import subprocess
from pathlib import Path

import pyfuse3
import trio

from appliance.access.principal import ANONYMOUS, set_caller
from appliance.config import Config
from appliance.notify import Notifier
from appliance.service import Service
from appliance.store import Store
from fs.handles import NOFLUSH
from fs.operations import ApplianceFS

log = logging.getLogger("vmctl.fs")
FSNAME = "vm-appliance"
FUSE_CONF = Path("/etc/fuse.conf")


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape")


def is_mounted(mountpoint: str | Path) -> bool:
    target = str(Path(mountpoint).absolute())
    with open("/proc/self/mountinfo") as f:
        return any(_unescape(line.split()[4]) == target for line in f)


def clear_stale(mountpoint: str | Path) -> bool:
    """Lazily unmount whatever is mounted at mountpoint (our own dead mount); True if there
    was one."""
    if not is_mounted(mountpoint):
        return False
    log.warning("clearing a stale mount at %s", mountpoint)
    # An argument list, no shell; fusermount3 from PATH as FUSE installs it (/bin or /usr/bin).
    result = subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)],  # noqa: S603, S607
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log.error("fusermount3 -u -z %s: %s", mountpoint, result.stderr.strip())
    return True


def mount_options(allow_other: bool = False) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions
    options.add(f"fsname={FSNAME}")
    options.add(f"subtype={FSNAME}")
    if allow_other:
        options.add("allow_other")
    return options


def may_allow_other(fuse_conf: Path = FUSE_CONF) -> bool:
    """Whether fusermount3 will mount with allow_other for this process."""
    if os.geteuid() == 0:
        return True
    try:
        lines = fuse_conf.read_text().splitlines()
    except OSError:
        return False
    return any(line.strip() == "user_allow_other" for line in lines)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def _serve_until_signal(asked: list[int]) -> None:
    # Every FUSE request acts as its caller (fs/guard.py); one that forgot to would act as
    # nobody (no project, no VM), never as the default SYSTEM. pyfuse3's tasks start from here.
    set_caller(ANONYMOUS)
    async with trio.open_nursery() as nursery:

        async def fuse_main() -> None:
            await pyfuse3.main()
            nursery.cancel_scope.cancel()  # unmounted from outside

        nursery.start_soon(fuse_main)
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            if asked:  # came before this receiver
                log.info("signal %s: unmounting", asked[0])
                nursery.cancel_scope.cancel()
                return
            async for signum in signals:
                log.info("signal %s: unmounting", signum)
                nursery.cancel_scope.cancel()
                break


def run(config: Config, mountpoint: str | Path, service: Service | None = None,
        group: str | None = None) -> int:
    """Mount and serve until SIGTERM/SIGINT. With group, the members of that group are
    operators in the default project unless the map names the group (fs/identity.py)."""
    mountpoint = Path(mountpoint).absolute()
    clear_stale(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if service is None:
        service = Service(Store(config.db_path), config, notify=Notifier(config.notify_socket))
    # A `cat` reads its VM's row at getattr and at open: served again while nothing was
    # committed since (appliance/store/unchanged.py), never stale.
    service.store.remember_vm_rows()
    gid = None if group is None else (int(group) if group.isdigit() else grp.getgrnam(group).gr_gid)
    shared = may_allow_other()
    if not NOFLUSH:
        log.warning("pyfuse3 without FileInfo.noflush (packaging/pyfuse3/build.sh): "
                    "every close costs a FLUSH request")
    if not shared:
        log.warning("only this mount's owner can use it: %s has no user_allow_other", FUSE_CONF)
    operations = ApplianceFS(service, group=gid, shared=shared)
    # Where the kernel shows the mount's files in /proc/PID/fd (fs/image_imports.py
    # held_elsewhere): resolved before the mount, which would otherwise answer it itself.
    operations.made.mountpoint = os.path.realpath(mountpoint)
    # Outside trio's receiver (before it, and once trio.run restores these at its end, during
    # the unmount), a stop signal is remembered, not fatal: `make run`'s Ctrl-C reaches serve
    # and this child, and serve's SIGTERM followed at once; its default action killed the
    # mount in the middle of unmounting, which stayed behind, stale.
    asked: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda number, _frame: asked.append(number))
    pyfuse3.init(operations, str(mountpoint), mount_options(allow_other=shared))
    log.info("mounted at %s (home %s)", mountpoint, config.home)
    try:
        trio.run(_serve_until_signal, asked)
    finally:
        pyfuse3.close(unmount=True)
        if is_mounted(mountpoint):  # still there: a stuck user keeps it busy
            clear_stale(mountpoint)
        log.info("unmounted %s", mountpoint)
    return 0
