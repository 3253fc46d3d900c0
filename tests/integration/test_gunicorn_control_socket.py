"""gunicorn's control socket stays out of the shared ~/.gunicorn (issue 9, finding 15).

gunicorn >= 25 opens a control socket at ~/.gunicorn/gunicorn.ctl by default
(or $XDG_RUNTIME_DIR/gunicorn.ctl): every appliance on the machine shares that
path, and the first to exit removes the socket of the others.
"""
from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.appliance_process import Appliance


def test_gunicorn_control_socket_stays_out_of_the_shared_home(tmp_path, monkeypatch):
    """Two real appliances under one user HOME: no gunicorn.ctl appears in
    ~/.gunicorn; if an appliance kept a control socket at all, it would live
    under its own HOME/run, and the other's exit would leave it alone."""
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    first = Appliance(tmp_path / "first")
    second = Appliance(tmp_path / "second")
    try:
        first.start()
        second.start()
        time.sleep(1.0)  # gunicorn's arbiter opens the socket right after the workers start
        shared = user_home / ".gunicorn" / "gunicorn.ctl"
        assert not shared.exists(), f"{shared} was created: appliances share (and remove) it"
        for app in (first, second):
            stray = [p for p in Path(app.home).rglob("*.ctl") if not p.is_relative_to(app.home / "run")]
            assert not stray, stray
        first.stop()
        second_sockets = sorted((second.home / "run").glob("*.ctl"))
        assert all(p.exists() for p in second_sockets)
        assert requests.get(second.url + "/healthz", timeout=1.0).status_code == 200
    finally:
        first.cleanup()
        second.cleanup()
