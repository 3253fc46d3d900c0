"""gunicorn's master imports the app's modules before forking its workers
(appliance/api/gunicorn_conf.py), and nothing else: no app is built there."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from appliance.config import Config
from appliance.serve import gunicorn_args

ROOT = Path(__file__).resolve().parents[4]


def imported_after(app_uri: str) -> list[str]:
    """The appliance modules a fresh interpreter holds after preload(app_uri), and its threads."""
    script = textwrap.dedent(f"""
        import sys, threading
        before = set(sys.modules)
        from appliance.api import gunicorn_conf
        class App: app_uri = {app_uri!r}
        class Server: app = App()
        gunicorn_conf.on_starting(Server())
        print(threading.active_count())
        print(*sorted(m for m in set(sys.modules) - before if m.startswith("appliance")))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out[0] == "1", "the master must not start threads before it forks"
    return out[1].split()


def test_the_api_app_and_what_get_app_imports_are_preloaded(tmp_path):
    args = gunicorn_args(Config(home=tmp_path))
    assert args[args.index("--config") + 1] == "python:appliance.api.gunicorn_conf"
    modules = imported_after(args[-1])
    for module in ("appliance.api.app", "appliance.api.websocket", "appliance.service",
                   "appliance.store", "appliance.notify"):
        assert module in modules


def test_another_app_gets_only_its_own_module():
    modules = imported_after("appliance.api.asgi:get_app('appliance.jsonio:loads')")
    assert "appliance.jsonio" in modules and "appliance.service" not in modules
    assert "appliance.service" not in imported_after("somewhere.else:app")
