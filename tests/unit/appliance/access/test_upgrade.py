"""A home made before users (schema v3, one token in HOME/token) upgrades
without losing anything: its VMs, groups, operations and events stay, in the
project default; HOME/token is the first admin's token (id home-token), with
which `vmctl` keeps working; revoked, it fails, and a restart does not bring it back.

The old home is built here as the code of that time left it: the store made by
the first three migrations only, rows with the v3 columns, HOME/token as
Config.token(create=True) writes it (not with the old code: CI's clone may
have no history to take it from)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils
from falcon import testing

from appliance.access.tokens import LEGACY_TOKEN_ID
from appliance.api.app import create_app
from appliance.config import Config
from appliance.model.spec import validate
from appliance.service import Service
from appliance.store import MIGRATIONS, Store
from tests.unit.conftest import TEST_HOST_INFO
from tests.unit.http_served import HttpServed

ROOT = Path(__file__).resolve().parents[4]
T0 = 1_700_000_000.0


def _v3_home(config: Config) -> str:
    """The store and token of a home from before users; the token."""
    token = config.token(create=True)
    db = sqlite_utils.Database(config.db_path)
    for migration in MIGRATIONS[:3]:
        migration(db)
    db.execute("PRAGMA user_version = 3")
    db.table("meta").insert({"key": "instance", "value": "old-instance"})
    db.table("hosts").insert({
        "name": "local", "uri": config.libvirt_uri, "state": "enabled", "up": 1, "last_seen": T0,
        "info": json.dumps(TEST_HOST_INFO), "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
        "reserved_memory_mib": 0, "labels": "{}", "storage": "shared", "migration_address": None,
        "created": T0, "down_since": None})
    db.table("images").insert({"name": "demo", "path": str(config.home / "images" / "demo.qcow2"),
                               "format": "qcow2", "virtual_size": 1 << 20, "actual_size": 1 << 16,
                               "created": T0, "source": "old"})
    db.table("groups").insert({"name": "db", "policy": "anti-affinity", "created": T0})
    for number, (name, state, group) in enumerate((("web1", "running", None), ("db1", "stopped", "db")), 1):
        spec = validate({"name": name, "image": "demo", "memory": 256, "group": group,
                         "labels": {"tier": name[:-1]}})
        vm_id = f"00000000-0000-0000-0000-00000000000{number}"
        db.table("vms").insert({
            "id": vm_id, "name": name, "spec": json.dumps(spec, sort_keys=True), "desired_state": state,
            "observed_state": state, "observed_reason": "", "host": "local", "generation": 3,
            "created": T0, "updated": T0, "state_changed": T0, "mac": f"52:54:00:00:00:0{number}",
            "domain_xml": "<domain/>", "restart_required": 0, "last_error": None, "addresses": "[]",
            "ready": 1 if state == "running" else 0, "boot_console_offset": 0})
        db.table("operations").insert({
            "id": f"op-{name}", "vm_id": vm_id, "vm_name": name, "kind": "create", "status": "succeeded",
            "progress": 100, "params": "{}", "error": None, "created": T0, "started": T0, "finished": T0 + 1})
        db.table("events").insert({"time": T0, "vm_id": vm_id, "vm_name": name, "kind": "created",
                                   "message": f"{name} created", "operation": f"op-{name}"})
    db.table("events").insert({"time": T0, "vm_id": None, "vm_name": None, "kind": "group-created",
                               "message": "server group db (anti-affinity) created", "operation": None})
    db.conn.close()
    return token


class Served:
    """The appliance as `vmctl serve` starts it on this home (no controller): the
    store migrated, the app made with HOME/token, served over HTTP."""

    def __init__(self, config: Config):
        self.store = Store(config.db_path)
        self.service = Service(self.store, config)
        self.app = create_app(self.service, config.token())
        self.http = HttpServed(self.app)
        self.url = self.http.url

    def client(self, token: str) -> testing.TestClient:
        return testing.TestClient(self.app, headers={"Authorization": f"Bearer {token}"})

    def stop(self) -> None:
        self.http.stop()
        self.store.close()


def vmctl(home: Path, url: str, *argv: str) -> subprocess.CompletedProcess:
    """The real `python -m appliance.cli` on the home, with its token (HOME/token)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VMCTL_TOKEN", "VMAPP_HOME")}
    env["VMCTL_URL"] = url
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def old_home(tmp_path):
    config = Config(home=tmp_path / "home", libvirt_uri="test:///default", allow_test_hosts=True)
    config.prepare()
    return config, _v3_home(config)


def _the_old_rows_are_all_there(client: testing.TestClient) -> None:
    vms = {vm["name"]: vm for vm in client.simulate_get("/v1/vms").json["items"]}
    assert set(vms) == {"web1", "db1"}
    assert {vm["project"] for vm in vms.values()} == {"default"}
    assert (vms["web1"]["state"], vms["db1"]["state"]) == ("running", "stopped")
    assert vms["db1"]["spec"]["group"] == "db" and vms["web1"]["spec"]["memory"] == 256
    assert vms["web1"]["host"] == "local" and vms["web1"]["generation"] == 3
    groups = client.simulate_get("/v1/groups").json["items"]
    assert [(g["name"], g["policy"], [m["name"] for m in g["members"]]) for g in groups] == [
        ("db", "anti-affinity", ["db1"])]
    ops = {op["id"]: op for op in client.simulate_get("/v1/operations").json["items"]}
    assert {"op-web1", "op-db1"} <= set(ops) and ops["op-web1"]["status"] == "succeeded"
    messages = [e["message"] for e in client.simulate_get("/v1/events").json["items"]]
    assert messages[:3] == ["web1 created", "db1 created", "server group db (anti-affinity) created"]
    assert [i["name"] for i in client.simulate_get("/v1/images").json["items"]] == ["demo"]
    assert [h["name"] for h in client.simulate_get("/v1/hosts").json["items"]] == ["local"]


def test_a_home_from_before_users_upgrades_and_its_token_is_the_admins(old_home):
    config, home_token = old_home
    served = Served(config)
    try:
        assert served.store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        old = served.client(home_token)
        assert old.simulate_get("/v1/me").json == {
            "user": "admin", "role": "admin", "projects": ["default"], "project": "default",
            "token_id": LEGACY_TOKEN_ID}
        _the_old_rows_are_all_there(old)

        # vmctl with the home (its HOME/token, nothing else), the real command.
        home = config.home
        whoami = vmctl(home, served.url, "whoami")
        assert whoami.returncode == 0, whoami.stderr
        assert whoami.stdout.split()[:4] == ["user", "admin", "role", "admin"]
        listed = vmctl(home, served.url, "list")
        assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [["db1", "stopped"],
                                                                               ["web1", "running"]]
        tokens = vmctl(home, served.url, "token", "list")
        rows = [line.split() for line in tokens.stdout.splitlines()[1:]]
        assert [r[:4] for r in rows] == [[LEGACY_TOKEN_ID, "admin", home_token[:4], "active"]]
        assert home_token not in tokens.stdout

        # A second admin token, then the home's revoked with itself.
        new_token = old.simulate_post("/v1/tokens", json={"description": "after the upgrade"}).json["token"]
        revoked = vmctl(home, served.url, "token", "revoke", LEGACY_TOKEN_ID)
        assert (revoked.returncode, revoked.stdout) == (0, f"{LEGACY_TOKEN_ID}: revoked\n")
        refused = vmctl(home, served.url, "whoami")
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
        assert old.simulate_get("/v1/vms").status_code == 401
    finally:
        served.stop()

    # A restart reads HOME/token again: it stays revoked; nothing else moved.
    served = Served(config)
    try:
        assert served.client(home_token).simulate_get("/v1/vms").status_code == 401
        admin = served.client(new_token)
        _the_old_rows_are_all_there(admin)
        states = {t["id"]: t["state"] for t in admin.simulate_get("/v1/tokens").json["items"]}
        assert states[LEGACY_TOKEN_ID] == "revoked" and len(states) == 2
    finally:
        served.stop()
