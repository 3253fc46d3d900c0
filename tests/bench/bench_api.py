"""Memory of the whole appliance and its REST latency/throughput, against a bare Falcon app.

One real `vmctl serve` (controller, gunicorn master and workers, mount child)
on the real libvirtd, with its own home and domain-name prefix:

1. 0 VMs: warm every route used below and the mount, then PSS/RSS of the
   serve process and all its descendants, and their idle CPU.
2. 1,000 VMs created through the REST API (POST /v1/vms?wait=false, state
   stopped): the controller defines 1,000 real (stopped) libvirt domains with
   their overlays and seed ISOs. Then GET /v1/vms/NAME p50 (sequential,
   keep-alive), GET /v1/vms p50, and throughput with `wrk` (or a threaded
   Python client if wrk is absent) against a bare Falcon app (tests/bench/
   bare_app.py) run by gunicorn with exactly appliance.serve.gunicorn_args.
   Rounds alternate; while one side is measured the other side's processes
   are SIGSTOPped (by pid), so that each has the machine to itself and the
   appliance's own background work (the controller's resync) counts against
   the appliance only. Then memory again.
3. 2,000 VMs: memory again (MB per 1,000 VMs), and the two p50s again.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.bench.common import (
    ROOT,
    KeepAlive,
    cmdline,
    descendants,
    idle_cpu_percent,
    memory_of_tree,
    ms,
    p50,
    pct,
    ppid,
    ratio,
    remove_domains,
    stop_pid,
    wait_http,
)


IDLE_CPU_GOAL = 5.0  # percent of one core, every process of the appliance, 2,000 stopped VMs (issue 10)


# -- the bare app ----------------------------------------------------------------------------------
def start_bare(base: Path, vm_body: bytes, list_body: bytes) -> tuple[subprocess.Popen, int]:
    from appliance.config import Config
    from appliance.serve import gunicorn_args
    from tests.appliance_process import free_port

    home = base / "bare-home"
    port = free_port()
    config = Config(home=home, listen=f"127.0.0.1:{port}")
    config.prepare()
    (home / "vm.json").write_bytes(vm_body)
    (home / "vms.json").write_bytes(list_body)
    args = gunicorn_args(config, wsgi_factory="tests.bench.bare_app:create")
    log = open(home / "gunicorn.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "BENCH_BARE_DIR": str(home)},
                            stdout=log, stderr=subprocess.STDOUT)
    wait_http(port, "/healthz", 30, proc)
    return proc, port


# -- load generation ---------------------------------------------------------------------------------
def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def throughput(port: int, path: str, token: str | None, seconds: float, connections: int) -> dict:
    if wrk_available():
        args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        if token:
            args += ["-H", f"Authorization: Bearer {token}"]
        out = subprocess.run([*args, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                             check=True, timeout=seconds + 30).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        errors = re.search(r"Socket errors:.*", out)
        if bad or errors:
            raise RuntimeError(f"wrk saw errors on {path}:\n{out}")
        return {"rps": round(rps, 1), "tool": f"wrk -t1 -c{connections} -d{seconds}s"}
    # Fallback: Python threads, each with its own keep-alive connection.
    stop_at = time.monotonic() + seconds
    counts = [0] * connections

    def client(i: int) -> None:
        conn = KeepAlive(port, token)
        while time.monotonic() < stop_at:
            status, _ = conn.get(path)
            if status != 200:
                raise RuntimeError(f"GET {path}: HTTP {status}")
            counts[i] += 1
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": round(sum(counts) / (time.monotonic() - started), 1),
            "tool": f"python threads x{connections} (wrk not installed; client-bound)"}


def signal_tree(pid: int, sig: int) -> None:
    signal_pids(descendants(pid), sig)


def signal_pids(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def gunicorn_workers(root: int) -> list[int]:
    """The gunicorn workers below root: gunicorn processes whose parent is gunicorn (the master)."""
    tree = descendants(root)
    gunicorn = {p for p in tree if "gunicorn" in cmdline(p)}
    return sorted(p for p in gunicorn if ppid(p) in gunicorn)


def one_worker_throughput(root: int, port: int, path: str, token: str | None, seconds: float,
                          connections: int) -> dict:
    """throughput() with every gunicorn worker of the side but one SIGSTOPped, so that one
    worker serves all the connections. gunicorn leaves the spread of connections to the
    kernel and uvicorn's loop accepts whatever is pending: wrk's 8 connections land all on
    one of the two workers in some runs and 1+7 or 2+6 in others, for either side, and the
    throughput doubles with the spread (seen 5,100 and 9,500 req/s in consecutive runs of
    the same app). One worker each makes the two sides' figures comparable run after run."""
    workers = gunicorn_workers(root)
    if not workers:
        raise RuntimeError(f"no gunicorn worker below pid {root}")
    signal_pids(workers[1:], signal.SIGSTOP)
    try:
        return {**throughput(port, path, token, seconds, connections), "workers": 1}
    finally:
        signal_pids(workers[1:], signal.SIGCONT)


# -- the appliance side -------------------------------------------------------------------------------
def create_vms(app, start: int, count: int, clients: int = 4) -> float:
    session_local = threading.local()

    def one(i: int) -> None:
        http = getattr(session_local, "http", None)
        if http is None:
            http = session_local.http = requests.Session()
            http.headers["Authorization"] = f"Bearer {app.token}"
        resp = http.post(f"{app.url}/v1/vms", params={"wait": "false"},
                         json={"name": f"vm{i:04d}", "state": "stopped"}, timeout=60)
        if resp.status_code != 202:
            raise RuntimeError(f"POST vm{i:04d}: {resp.status_code} {resp.text}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(start, start + count)))
    return time.perf_counter() - started


def wait_defined(app, total: int, timeout: float) -> float:
    """Until every VM is defined in libvirt and observed stopped (no pending create)."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = app.api("GET", "/v1/vms").json()["items"]
        if len(items) == total and all(vm["state"] == "stopped" for vm in items):
            return time.perf_counter() - started
        time.sleep(1)
    raise RuntimeError(f"{total} VMs not all defined within {timeout} s")


def warm(app, mnt: Path, names: list[str]) -> None:
    """Touch every route measured below on fresh connections (so both workers see them), and the mount."""
    for _ in range(20):
        conn = KeepAlive(app.port, app.token)
        conn.get("/v1/vms")
        for name in names[:5]:
            conn.get(f"/v1/vms/{name}")
        conn.get("/healthz")
        conn.close()
    if mnt is not None:
        subprocess.run(["ls", "-l", str(mnt / "vms")], stdout=subprocess.DEVNULL, check=True, timeout=60)
        for name in names[:5]:
            (mnt / "vms" / name / "state").read_text()


def memory_point(app, mnt: Path | None, names: list[str], idle_seconds: float, resync_wait: float = 6) -> dict:
    warm(app, mnt, names)
    time.sleep(resync_wait)  # one controller resync period (6 s) passes over the full store
    cpu = idle_cpu_percent(app.proc.pid, idle_seconds)
    mem = memory_of_tree(app.proc.pid)
    return {**mem, "idle_cpu_percent_of_one_core": cpu, "controller_resync_s": resync_seconds(app)}


def resync_seconds(app) -> float | None:
    """How long the controller's last full resync took (what it publishes for /metrics)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{app.home / 'appliance.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'metrics.reconcile_seconds'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return round(float(row[0]), 3) if row else None


def get_latency(port: int, token: str | None, paths: list[str]) -> dict:
    conn = KeepAlive(port, token)
    try:
        conn.timed(paths[:50])  # warm this connection
        samples = conn.timed(paths)
    finally:
        conn.close()
    return {"p50_ms": ms(p50(samples)), "p90_ms": ms(pct(samples, 0.9)), "n": len(samples)}


def run(base: Path, vms: int = 1000, extra: int = 1000, latency_n: int = 2000, list_n: int = 30,
        wrk_seconds: int = 5, wrk_rounds: int = 4, connections: int = 8, idle_seconds: float = 10,
        resync_wait: float = 6) -> dict:
    """`idle_seconds` and `resync_wait` shorten the memory points' waits (--quick: a check that it runs)."""
    from fs.mount import is_mounted
    from tests.appliance_process import Appliance

    prefix = f"bm{uuid.uuid4().hex[:6]}-"
    app = Appliance(base / "api-home", prefix=prefix)
    mnt = app.home / "mnt"
    bare = None
    out: dict = {"prefix_note": "domains named <prefix>vmNNNN, removed at the end"}
    try:
        app.start(timeout=90)
        deadline = time.monotonic() + 20
        while not (is_mounted(mnt) and (mnt / "vms").is_dir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        out["memory_0"] = memory_point(app, mnt, [], min(5, idle_seconds), resync_wait)

        create_s = create_vms(app, 0, vms)
        define_s = wait_defined(app, vms, 600)
        out["populate_1000"] = {"post_s": round(create_s, 1), "until_all_defined_s": round(create_s + define_s, 1)}
        names = [f"vm{i:04d}" for i in range(vms)]
        rng = random.Random(1)
        paths = [f"/v1/vms/{rng.choice(names)}" for _ in range(latency_n)]

        # the reference, with bodies of the same size as the appliance's answers
        vm_body = app.api("GET", paths[0]).content
        list_body = app.api("GET", "/v1/vms").content
        bare, bare_port = start_bare(base, vm_body, list_body)
        warm_bare = KeepAlive(bare_port)
        for _ in range(50):
            warm_bare.get("/vm")
            warm_bare.get("/vms")
        warm_bare.close()

        lat_app, lat_bare, list_app, list_bare, rps_app, rps_bare = [], [], [], [], [], []
        for round_ in range(wrk_rounds):
            sides = ("bare", "app") if round_ % 2 == 0 else ("app", "bare")
            for side in sides:
                other = app.proc.pid if side == "bare" else bare.pid
                signal_tree(other, signal.SIGSTOP)
                try:
                    time.sleep(0.2)
                    if side == "app":
                        lat_app.append(get_latency(app.port, app.token, paths))
                        list_app.append(get_latency(app.port, app.token, ["/v1/vms"] * list_n))
                        rps_app.append(one_worker_throughput(app.proc.pid, app.port, paths[0], app.token,
                                                           wrk_seconds, connections))
                    else:
                        lat_bare.append(get_latency(bare_port, None, ["/vm"] * latency_n))
                        list_bare.append(get_latency(bare_port, None, ["/vms"] * list_n))
                        rps_bare.append(one_worker_throughput(bare.pid, bare_port, "/vm", None, wrk_seconds,
                                                            connections))
                finally:
                    signal_tree(other, signal.SIGCONT)
        app_get_p50 = p50([r["p50_ms"] for r in lat_app])
        bare_get_p50 = p50([r["p50_ms"] for r in lat_bare])
        app_rps = p50([r["rps"] for r in rps_app])
        bare_rps = p50([r["rps"] for r in rps_bare])
        app_list_p50 = p50([r["p50_ms"] for r in list_app])
        out["get_vm"] = {
            "vms": vms, "body_bytes": len(vm_body),
            "p50_ms": app_get_p50, "bare_p50_ms": bare_get_p50, "latency_ratio": ratio(app_get_p50, bare_get_p50),
            "goal_p50_ms": 1.0, "pass_p50": app_get_p50 <= 1.0,  # raised from 2 ms by issue 10
            "rps": app_rps, "bare_rps": bare_rps, "throughput_ratio": ratio(app_rps, bare_rps),
            "goal_throughput_ratio": 0.8, "pass_throughput": app_rps >= 0.8 * bare_rps,  # raised from 0.5
            "load": f'{rps_app[0]["tool"]}, one worker', "rounds": wrk_rounds,
            "samples": {"app": lat_app, "bare": lat_bare, "app_rps": [r["rps"] for r in rps_app],
                        "bare_rps": [r["rps"] for r in rps_bare]},
        }
        out["list_vms"] = {
            "vms": vms, "body_bytes": len(list_body),
            "p50_ms": app_list_p50, "bare_p50_ms": p50([r["p50_ms"] for r in list_bare]),
            "goal_p50_ms": 50.0, "pass": app_list_p50 <= 50.0, "n": list_n * wrk_rounds,
        }
        out["list_vms"]["ratio_to_bare"] = ratio(app_list_p50, out["list_vms"]["bare_p50_ms"])
        stop_pid(bare)
        bare = None

        out["memory_1000"] = memory_point(app, mnt, names, idle_seconds, resync_wait)

        create_s = create_vms(app, vms, extra)
        define_s = wait_defined(app, vms + extra, 600)
        out["populate_2000"] = {"post_s": round(create_s, 1), "until_all_defined_s": round(create_s + define_s, 1)}
        names2 = [f"vm{i:04d}" for i in range(vms + extra)]
        # issue 10's idle goal is set here: twice the window, four resync passes at the default
        out["memory_2000"] = memory_point(app, mnt, names2, 2 * idle_seconds, resync_wait)
        paths2 = [f"/v1/vms/{rng.choice(names2)}" for _ in range(latency_n)]
        out["at_2000"] = {"get_vm": get_latency(app.port, app.token, paths2),
                          "list_vms": get_latency(app.port, app.token, ["/v1/vms"] * list_n)}
        m0, m1, m2 = out["memory_0"]["pss_mib"], out["memory_1000"]["pss_mib"], out["memory_2000"]["pss_mib"]
        out["memory"] = {
            "pss_mib_0": m0, "pss_mib_1000": m1, "pss_mib_2000": m2,
            "rss_mib_0": out["memory_0"]["rss_mib"], "rss_mib_1000": out["memory_1000"]["rss_mib"],
            "rss_mib_2000": out["memory_2000"]["rss_mib"],
            "mib_per_1000_vms_0_to_1000": round(m1 - m0, 1), "mib_per_1000_vms_1000_to_2000": round(m2 - m1, 1),
            "goal_mib_at_1000": 200, "pass": m1 <= 200,
            "idle_cpu_percent": [out[k]["idle_cpu_percent_of_one_core"] for k in ("memory_0", "memory_1000", "memory_2000")],
            "controller_resync_s": [out[k]["controller_resync_s"] for k in ("memory_0", "memory_1000", "memory_2000")],
            "goal_idle_cpu_percent_at_2000": IDLE_CPU_GOAL,
            "pass_idle_cpu": out["memory_2000"]["idle_cpu_percent_of_one_core"] <= IDLE_CPU_GOAL,
        }
        return out
    finally:
        if bare is not None:
            signal_tree(bare.pid, signal.SIGCONT)
            stop_pid(bare)
        if app.proc is not None:
            signal_tree(app.proc.pid, signal.SIGCONT)
        app.cleanup()
        remove_domains(prefix)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


if __name__ == "__main__":
    import tempfile

    os.chdir(ROOT)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        print(json.dumps(run(Path(tmp), vms=n, extra=n), indent=2))
