"""The processes' shared metric files live in memory (/dev/shm), not on the home's disk:
prometheus_client writes them through mmap into holes of files it grew, and on a full
disk that is SIGBUS. `make soak`'s disk-full part found the API workers and the mount
killed by it at their first request once the home was full. HOME/run/metrics is a
symlink to the directory, which `vmctl serve` removes when it stops (and the next
start, after a crash)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# `vmctl serve` up to appliance.serve, whose stand-in counts once and says where the file went.
SERVE = """
import json, os, sys, types
stand_in = types.ModuleType("appliance.serve")
def serve(config, demo_image=None):
    from appliance import metrics_scheduler
    metrics_scheduler.observe_decision(0.5, "placed", {"RamFilter": 1})
    shared = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    print(json.dumps({"dir": shared, "real": os.path.realpath(shared), "files": os.listdir(shared)}))
    return 0
stand_in.serve = serve
sys.modules["appliance.serve"] = stand_in
from appliance.cli import main
sys.exit(main(["--home", sys.argv[1], "serve", "--no-mount"]))
"""


def run_serve(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", SERVE, str(home)], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_metric_files_are_in_memory_and_go_with_serve(tmp_path):
    home = tmp_path / "home"
    seen = run_serve(home)
    assert seen["dir"] == str(home / "run" / "metrics")
    real = Path(seen["real"])
    assert real.parent == Path("/dev/shm") and real.name.startswith("vm-appliance-metrics-")
    assert seen["files"], "the count went to a file there"
    assert os.stat("/dev/shm").st_dev != os.stat(home).st_dev or not Path("/dev/shm").is_mount()
    assert not real.exists() and not (home / "run" / "metrics").is_symlink()  # serve stopped: gone


def test_what_a_killed_serve_left_in_memory_goes_at_the_next_start(tmp_path):
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    left = Path(__import__("tempfile").mkdtemp(prefix="vm-appliance-metrics-", dir="/dev/shm"))
    (left / "counter_1.db").write_bytes(b"x")
    (home / "run" / "metrics").symlink_to(left)  # as a SIGKILLed serve leaves it
    seen = run_serve(home)
    assert not left.exists()
    assert Path(seen["real"]) != left
