"""appliance/forked.py: serve's children forked rather than exec'd.

Each case runs in a fresh interpreter (the test process may have threads of
its own, and a fork must not run pytest's code twice)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PRELUDE = textwrap.dedent("""
    import os, sys, threading, time
    from appliance import forked

    def entry(argv):
        print("argv", argv, "home", os.environ.get("VMAPP_HOME"), flush=True)
        print("title", open("/proc/self/cmdline", "rb").read().rstrip(b"\\0").decode(), flush=True)
        return int(argv[0])

    forked.ENTRY_POINTS["tests.child"] = entry
    args = [sys.executable, "-m", "tests.child"]
""")


def run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_forked_child_runs_the_entry_point_with_its_environment_log_and_title(tmp_path):
    log = tmp_path / "child.log"
    out = run(f"""
        child = forked.fork_child([*args, "3", "--x"], {{"VMAPP_HOME": "/h"}}, {str(log)!r}, lambda: None)
        assert isinstance(child, forked.ForkedChild), child
        print("code", child.wait(timeout=30))
        print("again", child.poll())
        child.terminate()  # reaped: never signals a pid that may be reused
    """)
    assert "code 3" in out and "again 3" in out
    written = log.read_text()
    assert "argv ['3', '--x'] home /h" in written
    assert f"title {sys.executable} -m tests.child 3 --x" in written


def test_a_child_killed_by_a_signal_reports_it_as_popen_does():
    out = run("""
        import signal
        def entry(argv):
            time.sleep(60)
        forked.ENTRY_POINTS["tests.child"] = entry
        child = forked.fork_child(args, dict(os.environ), None, lambda: None)
        time.sleep(0.2)
        try:
            child.wait(timeout=0.1)
        except forked.subprocess.TimeoutExpired:
            print("still running")
        child.kill()
        print("code", child.wait(timeout=30))
    """)
    assert "still running" in out and "code -9" in out


def test_no_fork_once_the_process_has_a_second_thread_or_for_another_module():
    out = run("""
        print("other module", forked.fork_child([sys.executable, "-m", "os"], {}, None, lambda: None))
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        print("threaded", forked.fork_child(args, {}, None, lambda: None))
        stop.set()
    """)
    assert "other module None" in out and "threaded None" in out
