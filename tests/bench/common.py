"""Helpers shared by the benchmarks: timing, process memory, machine facts, cleanup.

Everything here touches only what the benchmark itself started: processes by
pid (and their descendants), libvirt domains by the benchmark's own name prefix.
"""
from __future__ import annotations

import http.client
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBVIRT_URI = os.environ.get("VMAPP_LIBVIRT_URI", "qemu:///system")


# -- numbers -----------------------------------------------------------------------------------
def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def ms(seconds: float, digits: int = 3) -> float:
    return round(seconds * 1000, digits)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- processes -----------------------------------------------------------------------------------
def descendants(pid: int) -> list[int]:
    """pid and every process below it, from /proc (ppid links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        parent = ppid(int(entry))
        if parent is not None:
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _role(cmd: str) -> str:
    if " serve " in f" {cmd} ":
        return "serve (controller)"
    if "gunicorn" in cmd:
        return "gunicorn"
    if " mount " in f" {cmd} ":
        return "mount"
    return cmd[:40]


def memory_of_tree(pid: int) -> dict:
    """RSS and PSS (from smaps_rollup) of pid and all its descendants, in MiB."""
    procs = []
    for p in descendants(pid):
        fields = {}
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("Rss", "Pss", "USS", "Private_Clean", "Private_Dirty"):
                        fields[key] = int(rest.split()[0])
        except OSError:
            continue
        uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        procs.append({"pid": p, "role": _role(cmdline(p)), "rss_mib": round(fields.get("Rss", 0) / 1024, 1),
                      "pss_mib": round(fields.get("Pss", 0) / 1024, 1), "uss_mib": round(uss / 1024, 1)})
    return {
        "processes": len(procs),
        "rss_mib": round(sum(p["rss_mib"] for p in procs), 1),
        "pss_mib": round(sum(p["pss_mib"] for p in procs), 1),
        "uss_mib": round(sum(p["uss_mib"] for p in procs), 1),
        "per_process": procs,
    }


def cpu_seconds_of_tree(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return total / tick


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """CPU the process tree burns while nobody asks it anything (percent of one core)."""
    before, started = cpu_seconds_of_tree(pid), time.monotonic()
    time.sleep(seconds)
    return round(100 * (cpu_seconds_of_tree(pid) - before) / (time.monotonic() - started), 1)


def stop_pid(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- HTTP -----------------------------------------------------------------------------------------
class KeepAlive:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1, as lean as the stdlib allows."""

    def __init__(self, port: int, token: str | None = None):
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request("GET", path, headers=self.headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                # the server closed an idle keep-alive connection: reconnect once
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def timed(self, paths: list[str]) -> list[float]:
        samples = []
        for path in paths:
            started = time.perf_counter()
            status, _ = self.get(path)
            samples.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"GET {path}: HTTP {status}")
        return samples

    def close(self) -> None:
        self.conn.close()


def wait_http(port: int, path: str, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}{path}")


# -- libvirt -------------------------------------------------------------------------------------
def remove_domains(prefix: str, uri: str = LIBVIRT_URI) -> int:
    """Destroy and undefine every domain whose name starts with prefix (ours only), with
    its snapshot and checkpoint metadata, which a plain undefine refuses to leave behind."""
    from tests.appliance_process import remove_prefixed_domains

    return remove_prefixed_domains(prefix, uri)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- the machine -----------------------------------------------------------------------------------
def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("falcon", "gunicorn", "pyfuse3"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "?"
    virsh = _run(["virsh", "-c", LIBVIRT_URI, "version"])
    lib = re.search(r"Using library: libvirt ([\d.]+)", virsh)
    hyp = re.search(r"Running hypervisor: (.+)", virsh)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libvirt": lib.group(1) if lib else "",
        "hypervisor": hyp.group(1).strip() if hyp else "",
        **versions,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        # the benchmarks run the working tree: say whether the measured code differs from the commit
        "uncommitted_in_measured_code": [line.split(maxsplit=1)[-1] for line in _run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "appliance", "fs", "exporter"]).splitlines()],
    }


def background() -> dict:
    """What else runs here: the 1-minute load average and the QEMU guests on the host (anyone's)."""
    guests = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and cmdline(int(entry)).startswith("/usr/bin/qemu-system"):
            guests += 1
    return {"loadavg_1min": round(os.getloadavg()[0], 2), "qemu_processes": guests}
