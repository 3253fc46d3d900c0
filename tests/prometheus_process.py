"""A real Prometheus (Debian's /usr/bin/prometheus) for tests, and its query API.

Started on a free 127.0.0.1 port with the given config, stopped by pid
whatever happens.
"""
from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from tests.appliance_process import free_port

PROMETHEUS = "/usr/bin/prometheus"


@contextlib.contextmanager
def running_prometheus(tmp: Path, config_text: str) -> Iterator[str]:
    """Write prometheus.yml into tmp, start Prometheus on it, yield its URL."""
    (tmp / "prometheus.yml").write_text(config_text)
    port = free_port()
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - held until Prometheus is stopped
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            try:
                if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(prometheus: str, expr: str) -> list[dict]:
    resp = requests.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=5)
    assert resp.status_code == 200, f"{expr}: {resp.text}"
    body = resp.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def wait_query(prometheus: str, expr: str, check: Callable[[list[dict]], bool] = bool,
               timeout: float = 20) -> list[dict]:
    """Poll until the query returns a result `check` accepts."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(prometheus, expr)
        if result and check(result):
            return result
        assert time.monotonic() < deadline, f"no acceptable data for {expr} in {timeout} s: {result}"
        time.sleep(0.5)
