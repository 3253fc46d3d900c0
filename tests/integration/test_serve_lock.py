"""One instance per home (issue 16): a second `vmctl serve` on a served home exits at
once, naming the first, and leaves it alone; a crashed serve leaves no lock behind."""
from __future__ import annotations

import subprocess
import sys
import time

from tests.appliance_process import ROOT, Appliance, free_port


def second_serve(home) -> tuple[subprocess.CompletedProcess, float]:
    """`vmctl serve` on the same home with another port (a config it would save)."""
    args = [sys.executable, "-m", "appliance.cli", "--home", str(home), "serve",
            "--listen", f"127.0.0.1:{free_port()}", "--accel", "tcg", "--no-mount"]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    return done, time.monotonic() - started


def last_event(app: Appliance) -> int:
    items = app.api("GET", "/v1/events").json()["items"]
    return max((event["id"] for event in items), default=0)


def test_a_second_serve_on_the_same_home_exits_at_once(tmp_path):
    app = Appliance(tmp_path / "home", extra_args=["--no-mount"])
    try:
        app.start()
        assert app.proc is not None
        config_before = (app.home / "config.json").read_bytes()
        metrics_before = sorted(p.name for p in (app.home / "run" / "metrics").iterdir())
        events_before = last_event(app)

        done, took = second_serve(app.home)

        assert done.returncode == 1
        assert done.stderr == (f"vmctl serve: already serving {app.home} (pid {app.proc.pid}, "
                               f"listening on 127.0.0.1:{app.port})\n")
        assert done.stdout == ""
        assert took < 10, took  # an interpreter's start, not serve's 20 s wait for the port
        time.sleep(2)  # what the second would have started by now, had it gone on
        assert app.proc.poll() is None
        assert app.api("GET", "/readyz").status_code == 200
        assert last_event(app) == events_before
        assert (app.home / "config.json").read_bytes() == config_before
        assert sorted(p.name for p in (app.home / "run" / "metrics").iterdir()) == metrics_before
    finally:
        app.cleanup()


def test_a_killed_serve_leaves_the_home_free(tmp_path):
    app = Appliance(tmp_path / "home", extra_args=["--no-mount"])
    try:
        app.start()
        app.kill()  # SIGKILL: no code of serve runs; the kernel drops the lock
        app.start()
        assert app.api("GET", "/readyz").status_code == 200
    finally:
        app.cleanup()
