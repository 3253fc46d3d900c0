"""create→running: POST /v1/vms (wait) against raw `virsh create` of the same domain XML.

The reference XML is the appliance's own: a VM created stopped gives its
defined (inactive) domain XML through GET /v1/vms/NAME/domain.xml; each
reference run gets a new name (same prefix, so cleanup finds it), a new uuid,
its own qcow2 overlay on the same image, its own copy of the seed ISO and its
own console log, and the appliance's <metadata> identity is dropped so that
its controller does not see a stranger carrying its id. Nothing else changes.

Runs are interleaved (the order alternates each round) after one warm-up run
of each, and every guest is destroyed right after it is measured, so that no
TCG guest booting in the background steals CPU from the next measurement.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from tests.bench.common import LIBVIRT_URI, ms, p50, ratio, remove_domains

METADATA_NS = "urn:vm-appliance:domain:1"


def reference_xml(template: str, name: str, disk: Path, seed: Path, console: Path) -> str:
    root = ET.fromstring(template)
    root.find("name").text = name
    root.find("uuid").text = str(uuid.uuid4())
    metadata = root.find("metadata")
    if metadata is not None:
        for child in list(metadata):
            if child.tag.startswith("{" + METADATA_NS + "}"):
                metadata.remove(child)
        if not len(metadata):
            root.remove(metadata)
    disks = root.findall("./devices/disk")
    for element in disks:
        source = element.find("source")
        if source is None:
            continue
        path = source.get("file", "")
        if path.endswith("root.qcow2"):
            source.set("file", str(disk))
            backing = element.find("backingStore")  # libvirt reads the chain from the overlay itself
            if backing is not None:
                element.remove(backing)
        elif path.endswith("cidata.iso"):
            source.set("file", str(seed))
    for element in root.iter("log"):
        element.set("file", str(console))
    return ET.tostring(root, encoding="unicode")


def _overlay(image: str, path: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "qcow2", str(path)], check=True)


def run(base: Path, rounds: int = 7) -> dict:
    from tests.appliance_process import Appliance

    prefix = f"bc{uuid.uuid4().hex[:6]}-"
    app = Appliance(base / "create-home", prefix=prefix, extra_args=["--no-mount"])
    refdir = base / "create-ref"
    refdir.mkdir(parents=True)
    try:
        app.start()
        resp = app.api("POST", "/v1/vms", json={"name": "template", "state": "stopped"})
        assert resp.status_code == 201, resp.text
        template = app.api("GET", "/v1/vms/template/domain.xml").text
        vm_dir = Path(ET.fromstring(template).find("./devices/disk/source").get("file")).parent
        image = app.api("GET", "/v1/images/demo").json()["path"]

        def appliance_once(i: int) -> dict:
            name = f"a{i}"
            started = time.perf_counter()
            resp = app.api("POST", "/v1/vms", json={"name": name, "state": "running"})
            elapsed = time.perf_counter() - started
            assert resp.status_code == 201, resp.text
            body = resp.json()
            if body["state"] != "running":  # not seen so far; kept so the number stays honest
                app.wait_state(name, "running", 60)
                elapsed = time.perf_counter() - started
            op = body["operation"]
            parts = {"queue_ms": ms(op["started"] - op["created"]), "controller_ms": ms(op["finished"] - op["started"])}
            # The VM's own events split the controller's work: defined (observed stopped), then running.
            events = app.api("GET", f"/v1/vms/{name}/events", headers={"Accept": "application/json"}).json()["items"]
            defined = [e["time"] for e in events if e["kind"] == "state-changed" and e["message"].startswith("now stopped")]
            running = [e["time"] for e in events if e["kind"] == "state-changed" and e["message"].startswith("now running")]
            if defined and running:
                parts.update(define_ms=ms(defined[0] - op["started"]), start_ms=ms(running[0] - defined[0]),
                             after_start_ms=ms(op["finished"] - running[0]))
            parts["http_and_wait_ms"] = ms(elapsed - (op["finished"] - op["created"]))
            assert app.api("DELETE", f"/v1/vms/{name}", params={"force": "true"}).status_code == 204
            return {"s": elapsed, **parts}

        def appliance_start_once(i: int) -> dict:
            """Defined ahead (created stopped: overlay, seed ISO and defineXML done, untimed); the
            start is all that remains: PUT state running (wait) until the guest runs."""
            name = f"s{i}"
            resp = app.api("POST", "/v1/vms", json={"name": name, "state": "stopped"})
            assert resp.status_code == 201, resp.text
            started = time.perf_counter()
            resp = app.api("PUT", f"/v1/vms/{name}/state", json={"state": "running"})
            elapsed = time.perf_counter() - started
            assert resp.status_code == 200 and resp.json()["operation"]["status"] == "succeeded", resp.text
            assert app.api("GET", f"/v1/vms/{name}/state").json()["state"] == "running"
            assert app.api("DELETE", f"/v1/vms/{name}", params={"force": "true"}).status_code == 204
            return {"s": elapsed}

        def virsh_once(i: int) -> dict:
            name = f"{prefix}ref{i}"
            disk, seed, console = refdir / f"{name}.qcow2", refdir / f"{name}-cidata.iso", refdir / f"{name}.log"
            shutil.copyfile(vm_dir / "cidata.iso", seed)
            xml_path = refdir / f"{name}.xml"
            xml_path.write_text(reference_xml(template, name, disk, seed, console))
            started = time.perf_counter()
            _overlay(image, disk)
            overlay_s = time.perf_counter() - started
            subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "create", str(xml_path)], check=True,
                           stdout=subprocess.DEVNULL)
            elapsed = time.perf_counter() - started
            state = subprocess.run(["virsh", "-c", LIBVIRT_URI, "domstate", name], capture_output=True,
                                   text=True, check=True).stdout.strip()
            assert state == "running", state
            subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "destroy", name], check=True, stdout=subprocess.DEVNULL)
            disk.unlink()
            return {"s": elapsed - overlay_s, "with_overlay_s": elapsed, "overlay_s": overlay_s}

        def libvirt_once(i: int) -> dict:
            """Context: what the controller itself calls, define + create, from Python, no HTTP or store."""
            name = f"{prefix}lv{i}"
            disk, seed, console = refdir / f"{name}.qcow2", refdir / f"{name}-cidata.iso", refdir / f"{name}.log"
            shutil.copyfile(vm_dir / "cidata.iso", seed)
            xml = reference_xml(template, name, disk, seed, console)
            _overlay(image, disk)
            conn = libvirt.open(LIBVIRT_URI)
            try:
                started = time.perf_counter()
                dom = conn.defineXML(xml)
                dom.create()
                elapsed = time.perf_counter() - started
                dom.destroy()
                dom.undefine()
            finally:
                conn.close()
            disk.unlink()
            return {"s": elapsed}

        appliance_once(0)  # warm-up, not counted
        appliance_start_once(0)
        virsh_once(0)
        libvirt_once(0)
        ours, starts, refs, lv = [], [], [], []
        sides = {appliance_once: ours, appliance_start_once: starts, virsh_once: refs, libvirt_once: lv}
        load_before = os.getloadavg()[0]
        for i in range(1, rounds + 1):
            order = [appliance_once, appliance_start_once, virsh_once, libvirt_once]
            order = order[i % 4:] + order[:i % 4]  # rotate, so no side always runs first
            for fn in order:
                time.sleep(0.5)  # let the destroyed guest's teardown settle
                sides[fn].append(fn(i))
        load_after = os.getloadavg()[0]
        api_p50 = p50([r["s"] for r in ours])
        virsh_p50 = p50([r["s"] for r in refs])
        virsh_overlay_p50 = p50([r["with_overlay_s"] for r in refs])
        start_p50 = p50([r["s"] for r in starts])
        return {
            # The goal since issue 10: defined ahead, the start is all that remains.
            "start_p50_ms": ms(start_p50, 1),
            "start_ratio": ratio(start_p50, virsh_p50),
            "start_goal_ratio": 1.0,
            "start_pass": start_p50 / virsh_p50 <= 1.0,
            "start_samples_ms": [ms(r["s"], 1) for r in starts],
            "rounds": rounds,
            "api_p50_ms": ms(api_p50, 1),
            "virsh_create_p50_ms": ms(virsh_p50, 1),
            "ratio": ratio(api_p50, virsh_p50),
            "goal_ratio": 1.2,
            "pass": api_p50 / virsh_p50 <= 1.2,
            "virsh_with_overlay_p50_ms": ms(virsh_overlay_p50, 1),
            "ratio_to_virsh_with_overlay": ratio(api_p50, virsh_overlay_p50),
            "api_samples_ms": [ms(r["s"], 1) for r in ours],
            "virsh_samples_ms": [ms(r["s"], 1) for r in refs],
            "api_breakdown_p50_ms": {
                "op_queued_until_controller_picked_it_up": round(p50([r["queue_ms"] for r in ours]), 1),
                "controller_create_define_start": round(p50([r["controller_ms"] for r in ours]), 1),
                **{key: round(p50([r[key] for r in ours if key in r]), 1)
                   for key in ("define_ms", "start_ms", "after_start_ms") if any(key in r for r in ours)},
                "http_validation_store_and_poll": round(p50([r["http_and_wait_ms"] for r in ours]), 1),
            },
            "overlay_p50_ms": ms(p50([r["overlay_s"] for r in refs]), 1),
            # each round's appliance run over the same round's virsh run (adjacent in time, similar background)
            "paired_ratio_median": round(p50([a["s"] / v["s"] for a, v in zip(ours, refs, strict=True)]), 3),
            "api_min_ms": ms(min(r["s"] for r in ours), 1),
            "virsh_create_min_ms": ms(min(r["s"] for r in refs), 1),
            "libvirt_define_create_p50_ms": ms(p50([r["s"] for r in lv]), 1),
            "libvirt_define_create_min_ms": ms(min(r["s"] for r in lv), 1),
            "libvirt_samples_ms": [ms(r["s"], 1) for r in lv],
            "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        }
    finally:
        app.cleanup()
        remove_domains(prefix)
        shutil.rmtree(refdir, ignore_errors=True)


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-create-") as tmp:
        print(json.dumps(run(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 7), indent=2))
