"""appliance/home_lock.py: one serve per home; the lock is the serve process's alone."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from appliance import home_lock

TRY_LOCK = """
import sys
from appliance import home_lock
try:
    home_lock.acquire(sys.argv[1], "127.0.0.1:2")
except home_lock.AlreadyServing as err:
    print(err)
    sys.exit(1)
print("locked")
"""


def try_lock(home) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", TRY_LOCK, str(home)], capture_output=True,
                          text=True, timeout=30, check=False)
    return done.returncode, done.stdout.strip()


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_address(tmp_path):
    lock = home_lock.acquire(tmp_path / "home", "127.0.0.1:8123")
    try:
        code, out = try_lock(tmp_path / "home")
        assert code == 1
        assert out == (f"already serving {tmp_path / 'home'} (pid {os.getpid()}, "
                       "listening on 127.0.0.1:8123)")
    finally:
        lock.release()
    assert try_lock(tmp_path / "home") == (0, "locked")


def test_a_forked_child_does_not_keep_the_home_locked(tmp_path):
    lock = home_lock.acquire(tmp_path, "127.0.0.1:8123")
    pid = os.fork()
    if pid == 0:
        time.sleep(5)  # still alive when the parent lets go
        os._exit(0)
    try:
        assert try_lock(tmp_path)[0] == 1
        lock.release()
        assert try_lock(tmp_path) == (0, "locked")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_an_unreadable_holder_is_named_without_a_pid(tmp_path):
    lock = home_lock.acquire(tmp_path, "127.0.0.1:8123")
    try:
        home_lock.lock_path(tmp_path).write_text("")
        with pytest.raises(home_lock.AlreadyServing, match=r"\(pid \?, listening on \?\)"):
            # in this process: flock locks of two descriptors conflict there too
            home_lock.acquire(tmp_path, "127.0.0.1:1")
    finally:
        lock.release()


def test_a_serve_during_a_restore_says_a_restore_holds_the_home(tmp_path):
    """vmctl admin restore holds the same lock: a serve started meanwhile names it
    (it said "listening on (vmctl admin restore)" before)."""
    from appliance.home_backup import serve_lock

    home = tmp_path / "home"
    with serve_lock(home):
        code, out = try_lock(home)
    assert code == 1
    assert out == f"{home} is being restored (pid {os.getpid()}, vmctl admin restore)"
    assert try_lock(home) == (0, "locked")
