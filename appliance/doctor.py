"""`vmctl doctor`: what is wrong with this host, and what to do about it.

Works without a running appliance: it checks libvirt, KVM, FUSE and disk
space directly, and the API only if one is configured in the home.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from appliance.config import Config


def _check(name: str, status: str, detail: str, fix: str = "") -> dict:
    return {"name": name, "status": status, "detail": detail, **({"fix": fix} if fix else {})}


def run_checks(home: str) -> list[dict]:
    config = Config.load(home)
    results = []

    try:
        import libvirt

        conn = libvirt.open(config.libvirt_uri)
        version = conn.getLibVersion()
        results.append(_check("libvirt", "ok", f"{config.libvirt_uri} answers (libvirt "
                              f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000})"))
        if config.db_path.exists():
            from appliance.store import Store

            results.append(wedged_check(conn.listAllDomains(), Store(config.db_path), time.time()))
        conn.close()
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        results.append(_check("libvirt", "fail", f"{config.libvirt_uri}: {err}",
                              "run packaging/setup-host.sh (starts virtlogd and libvirtd)"))

    verdict = None
    if config.db_path.exists():
        from appliance.store import Store

        raw = Store(config.db_path).get_meta("accel_verdict")
        verdict = json.loads(raw) if raw else None
    if not os.path.exists("/dev/kvm"):
        results.append(_check("kvm", "warn", "/dev/kvm is missing: guests run under TCG (slow)",
                              "enable virtualisation in the firmware or load kvm_intel/kvm_amd"))
    elif verdict is None:
        results.append(
            _check(
                "kvm",
                "warn",
                "/dev/kvm exists; not probed yet (vmctl serve --accel auto probes once, at a start"
                " that finds an image named demo)",
            )
        )
    elif verdict["accel"] == "kvm":
        results.append(_check("kvm", "ok", f"usable: {verdict['reason']}"))
    else:
        results.append(_check("kvm", "warn", f"not used: {verdict['reason']}; guests run under TCG",
                              "on nested virtualisation, enable nested KVM on the outer host"))

    if os.path.exists("/dev/fuse") and shutil.which("fusermount3"):
        results.append(_check("fuse", "ok", "/dev/fuse and fusermount3 present"))
    else:
        results.append(_check("fuse", "fail", "FUSE unavailable: the file tree cannot be mounted",
                              "apt-get install fuse3; modprobe fuse"))

    target = config.home if config.home.exists() else Path.cwd()
    usage = shutil.disk_usage(target)
    free_gib = usage.free / (1 << 30)
    if free_gib < 1:
        results.append(
            _check("disk", "fail", f"{free_gib:.1f} GiB free under {target}", "free some space")
        )
    elif free_gib < 5:
        results.append(_check("disk", "warn", f"{free_gib:.1f} GiB free under {target}"))
    else:
        results.append(_check("disk", "ok", f"{free_gib:.0f} GiB free under {target}"))

    results.append(_metadata_check(config))

    if config.config_path.exists():
        from appliance.client import APIError, Client

        client = Client.from_home(home)
        client.timeout = 5
        try:
            client.get("/readyz")
            results.append(_check("api", "ok", f"{client.base_url} ready"))
        except APIError as err:
            status = "warn" if err.status == 0 else "fail"
            detail = err.body if isinstance(err.body, dict) else str(err)
            results.append(
                _check(
                    "api",
                    status,
                    f"{client.base_url}: {detail}",
                    "start it with `make run` or `vmctl serve`" if err.status == 0 else "",
                )
            )
    return results


def _metadata_check(config: Config) -> dict:
    if not config.metadata_service:
        return _check("metadata", "ok", "off (--no-metadata): guests have their seed only")
    if config.metadata_host_namespace:
        return _check("metadata", "ok", "http://169.254.169.254/ in the network namespace of "
                      "each local host, this machine's own included")
    return _check("metadata", "ok",
                  "http://169.254.169.254/ in the local hosts' own network namespaces only "
                  "(local-hosts up --netns): hosts in this machine's namespace (qemu:///system) "
                  "are not served, their guests have their seed only, and the machine keeps "
                  "its own 169.254.169.254 (a cloud provider's metadata)",
                  "to serve them: metadata_host_namespace = true or vmctl serve "
                  "--metadata-host-namespace (README \"Metadata service\")")


WEDGED_MINUTES = 10  # a start passes through paused (starting up) in seconds, even under TCG


def wedged_check(domains: list[Any], store: Any, now: float) -> dict:
    """Domains libvirt shows paused (starting up) for over WEDGED_MINUTES by the appliance's
    record: libvirt 9.0 restores a domain its libvirtd was starting when SIGKILLed so, with
    a start job no one owns, and every call on it fails after 30 s ("cannot acquire state
    change lock"; the API answers 503). Its state is read without that lock; the pid 0
    in its status file is not shown by libvirt's API, hence the record's time instead."""
    import libvirt

    wedged = []
    for dom in domains:
        try:
            state = tuple(dom.state())
        except libvirt.libvirtError:  # undefined since the listing (a VM deleted meanwhile)
            continue
        if state != (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP):
            continue
        row = store.get_vm_by_id(dom.UUIDString())
        if row is None or (row["observed_state"], row["observed_reason"]) != ("paused",
                                                                              "starting-up"):
            continue
        if row["state_changed"] is not None and now - row["state_changed"] > WEDGED_MINUTES * 60:
            wedged.append(f"{dom.name()} (VM {row['name']})")
    if not wedged:
        return _check("wedged", "ok", f"no domain paused (starting up) for over {WEDGED_MINUTES} "
                      "minutes")
    return _check("wedged", "warn",
                  f"paused (starting up) for over {WEDGED_MINUTES} minutes, libvirt holding a "
                  f"start job no one owns: {', '.join(wedged)}",
                  "if no qemu process runs for it (pgrep -f guest=NAME): stop libvirtd (its stop "
                  "waits 30 s for that job), remove /run/libvirt/qemu/NAME.xml, start libvirtd; "
                  'the appliance then sees it stopped (README "A wedged domain")')
