"""`vmctl serve`'s children (API, console broker, mount) forked from serve
instead of exec'd, so that they share the modules serve has already imported.

Memory (issue 10, BENCHMARKS.md section 2): every child used to be a fresh
interpreter importing pydantic, sqlite-utils, libvirt, prometheus_client and
most of the appliance again, 25-40 MiB of Python objects each. A forked child
starts with serve's pages and shares them copy-on-write (PSS divides shared
pages among the processes); `gc.freeze()` before the fork keeps the children's
collectors from writing to the inherited objects.

Forking is only safe while serve has a single thread and no open SQLite or
libvirt connection: `vmctl serve` starts its children before the controller
(and its threads) exist, and `fork_child` checks the thread count itself and
answers None when the process has more than one, in which case the caller
execs the same command line as before (restarts after a child's exit do).
The child runs the same entry point `python -m MODULE ARGS` would run, with
the same environment, output file and process title, and dies with serve
(PR_SET_PDEATHSIG) as an exec'd child does.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

M_ARENA_MAX = -8  # mallopt(3)


def limit_malloc_arenas(count: int = 2) -> None:
    """glibc gives each thread its own malloc arena, which keeps what a large
    answer freed (BENCHMARKS.md, the notes on memory): what MALLOC_ARENA_MAX does
    for an exec'd child, for this process and the children it forks."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, count)


def _gunicorn(argv: list[str]) -> object:
    from gunicorn.app.wsgiapp import run

    sys.argv = ["gunicorn", *argv]
    return run(prog="gunicorn")


def _consoles(argv: list[str]) -> object:
    from appliance.consoles.__main__ import main

    return main(argv)


def _cli(argv: list[str]) -> object:
    from appliance.cli import main

    return main(argv)


# `python -m MODULE`'s entry point, for the modules serve starts.
ENTRY_POINTS: dict[str, Callable[[list[str]], object]] = {
    "gunicorn": _gunicorn, "appliance.consoles": _consoles, "appliance.cli": _cli,
}


def single_threaded() -> bool:
    """Every thread, Python's or a library's, is a task of this process."""
    return len(os.listdir("/proc/self/task")) == 1


class ForkedChild:
    """A forked child, with the parts of subprocess.Popen that serve uses."""

    def __init__(self, pid: int, args: list[str]):
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.05)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # never a pid that was reaped, and maybe reused
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_child(args: list[str], env: dict, log_path: Path | None,
               die_with_parent: Callable[[], None]) -> ForkedChild | None:
    """Fork a child that runs `args` (`[python, "-m", MODULE, ...]`, as
    spawn_child would exec it); None when this process cannot fork safely or
    MODULE is not one of ENTRY_POINTS."""
    entry = ENTRY_POINTS.get(args[2]) if len(args) > 2 and args[1] == "-m" else None
    if entry is None or not single_threaded():
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    gc.collect()
    gc.freeze()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return ForkedChild(pid, args)
    _run_child(entry, args, env, log_path, die_with_parent, parent)  # never returns
    return None


def _run_child(entry: Callable[[list[str]], object], args: list[str], env: dict,
               log_path: Path | None, die_with_parent: Callable[[], None], parent: int) -> None:
    code: object = 1
    try:
        # serve's handlers are serve's: before the parent-death signal is armed,
        # so that a SIGTERM for serve's death kills this child, never sets serve's
        # (copied) stop event here.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        die_with_parent()
        if os.getppid() != parent:  # serve died before the line above
            raise SystemExit(1)
        if log_path is not None:
            out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(out)
        # serve's other descriptors stay open: the objects owning them (such as
        # prometheus_client's files of this process's metrics, closed at the
        # first metric the child touches) close them, and a number closed here
        # could be reused by the child and then closed under it by its owner.
        from setproctitle import setproctitle

        # what `ps` showed for the exec'd child; before the environment changes,
        # which setproctitle needs to find where the title can go
        setproctitle(" ".join(args))
        os.environ.clear()
        os.environ.update(env)
        code = entry(args[3:])
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:  # noqa: BLE001 - the child must not return into serve
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))
