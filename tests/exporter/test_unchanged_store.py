"""The API's /metrics keeps the store's part only while the store is unchanged, and
for at most max_age seconds (exporter/unchanged_store.py)."""
from __future__ import annotations

import threading
import time

from falcon import testing

from appliance.api.app import create_app
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store
from exporter.unchanged_store import UnchangedStore


def test_an_answer_is_reused_until_a_commit_or_max_age(tmp_path):
    store = Store(tmp_path / "s.db")
    now = [100.0]
    unchanged = UnchangedStore(store, max_age=1.0, clock=lambda: now[0])
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    assert unchanged.get("k", compute) == 1
    assert unchanged.get("k", compute) == 1  # nothing committed, young enough
    store.set_meta("x", "1")  # this thread's own commit
    assert unchanged.get("k", compute) == 2
    other = threading.Thread(target=lambda: Store(tmp_path / "s.db").set_meta("y", "2"))
    other.start()
    other.join()  # another connection's commit
    assert unchanged.get("k", compute) == 3
    now[0] += 1.5  # unchanged, but older than max_age (clock-derived values)
    assert unchanged.get("k", compute) == 4
    assert unchanged.get("k", compute) == 4


def test_metrics_show_a_store_change_at_the_next_scrape(tmp_path):
    """A VM added between two scrapes is in the second, however close they are."""
    config = Config(home=tmp_path / "home", libvirt_uri="test:///default")
    config.prepare()
    store = Store(config.db_path)
    client = testing.TestClient(create_app(Service(store, config), "sekret"))
    auth = {"Authorization": "Bearer sekret"}
    first = client.simulate_get("/metrics", headers=auth).text
    assert 'vmappliance_vms_observed{state="running"}' not in first
    store.insert_vm({"id": "v1", "name": "a", "spec": {}, "desired_state": "running",
                     "observed_state": "running", "generation": 1, "created": 0.0,
                     "state_changed": time.time() - 30})
    second = client.simulate_get("/metrics", headers=auth).text
    assert 'vmappliance_vms_observed{state="running"} 1.0' in second
    assert 'vmappliance_vm_ready{vm="a"}' in second
