"""The quota under real concurrency: `vmctl serve --workers 4` (gunicorn, four
API processes with their own store connections, on the real libvirtd), 20
creates sent at once against a quota of 5 VMs: exactly 5 are made, 15 refused
with the quota's reason; deleting one frees its share."""
from __future__ import annotations

import threading

import pytest
import requests

from tests.appliance_process import Appliance

pytestmark = pytest.mark.integration

CREATES, QUOTA = 20, 5


@pytest.fixture
def workers_appliance(tmp_path):
    app = Appliance(tmp_path / "home", extra_args=["--no-mount", "--workers", "4"])
    try:
        yield app.start()
    finally:
        app.cleanup()


def test_twenty_creates_across_four_workers_make_exactly_five(workers_appliance):
    app = workers_appliance
    made = app.api("POST", "/v1/projects", json={"name": "web", "quota": {"vms": QUOTA}})
    assert made.status_code == 201, made.text
    start = threading.Barrier(CREATES)
    answers: list[tuple[int, dict]] = []

    def create(i: int) -> None:
        # A session per thread: a connection of its own, which the kernel hands to
        # any of the workers (each accepts on the one listening socket).
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {app.token}"
            start.wait()
            resp = http.post(app.url + "/v1/vms", json={"name": f"q{i}", "state": "stopped"},
                             params={"project": "web", "wait": "false"}, timeout=60)
        answers.append((resp.status_code, resp.json()))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(CREATES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] * QUOTA + [409] * (CREATES - QUOTA), answers
    for status, body in answers:
        if status == 409:
            assert body["field"] == "quota", body
            assert body["reason"].startswith(f"quota exceeded in project web: VMs used {QUOTA}, "
                                             f"limit {QUOTA}"), body
    listed = app.api("GET", "/v1/vms", params={"project": "web"}).json()["items"]
    assert len(listed) == QUOTA
    assert app.api("GET", "/v1/projects/web").json()["usage"]["vms"] == QUOTA
    # deleting one (waited for: the controller removes it) frees its share
    victim = listed[0]["name"]
    assert app.api("DELETE", f"/v1/vms/{victim}", params={"project": "web"}).status_code == 204
    again = app.api("POST", "/v1/vms", json={"name": "again", "state": "stopped"},
                    params={"project": "web"})
    assert again.status_code == 201, again.text
    over = app.api("POST", "/v1/vms", json={"name": "over", "state": "stopped"},
                   params={"project": "web", "wait": "false"})
    assert over.status_code == 409 and over.json()["field"] == "quota"
