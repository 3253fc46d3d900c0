"""Random SIGKILL (issue 17): kill serve, the mount or a gunicorn worker at random
moments while clients create, start, stop, pause, rename, snapshot, migrate (between
two local hosts, tests/soak/migrations.py) and delete VMs, and upload and delete
images, through REST and the mount; after each kill, check that nothing was lost.

One round: the clients run for a random time (uniform within `gap`), the target is
SIGKILLed (serve is started again by us; the mount and a worker by serve and gunicorn),
the clients are paused (each finishes or loses its current operation), and then:
every VM reaches its desired state within `converge_timeout` (timed from the
recovery), every acknowledged write is there (clients.check_ledger, check_images:
a migrated VM on the host it was moved to, an uploaded image there), no orphan
(world.orphans) and `PRAGMA integrity_check` is ok. A round with any finding is
recorded with its details; the run goes on (bounded by its count and `budget`).
"""
from __future__ import annotations

import logging
import random
import threading
import time

from tests.soak.clients import Client, check_images, check_ledger
from tests.soak.migrations import add_second_host, delete_images, remove_second_host
from tests.soak.world import SoakWorld

log = logging.getLogger("soak.kill")
TARGETS = ("serve", "mount", "worker", "libvirtd")


def snapshots_of(world: SoakWorld):
    def names(vm: str) -> list[str]:
        resp = world.app.api("GET", f"/v1/vms/{vm}/snapshots", timeout=30)
        resp.raise_for_status()
        return [s["name"] for s in resp.json()["items"]]
    return names


def pause(clients: list[Client], go: threading.Event, timeout: float = 120) -> str:
    """Stop the clients after their current operation; what the last one waited for
    (its operation and how long it took), for the round's timing."""
    go.clear()
    deadline = time.monotonic() + timeout
    last = ""
    while any(c.busy for c in clients):
        if time.monotonic() > deadline:
            raise RuntimeError(f"clients still busy {timeout} s after the pause")
        last = next((f"{d[0]} {time.monotonic() - d[1]:.1f} s" for c in clients if c.busy
                     and (d := c.doing) is not None), last)
        time.sleep(0.05)
    return last


def run_kills(world: SoakWorld, target: str, kills: int, clients: int = 4, slots: int = 3,
              gap: tuple[float, float] = (0.5, 3.0), converge_timeout: float = 90, seed: int = 17,
              budget: float = 1800, migrate_paused: bool = True) -> dict:
    """`kills` rounds against `target` (one of TARGETS), at most `budget` seconds.
    migrate_paused: the clients move paused VMs too (see Client)."""
    if target not in TARGETS:
        raise ValueError(f"target: one of {TARGETS}")
    rng = random.Random(seed)
    go = threading.Event()
    # the last client works through the mount half of the time; the others through REST
    world.delete_all_vms()  # a part starts from none: its clients' ledger covers every VM
    delete_images(world, f"i{target[0]}")
    add_second_host(world)
    crowd = [Client(i, slots, world, go, seed * 100 + i, mount=(i == clients - 1), tag=target[0],
                    migrate_paused=migrate_paused) for i in range(clients)]
    for client in crowd:
        client.start()
    t_start = time.monotonic()
    rounds: list[dict] = []
    try:
        for n in range(kills):
            if time.monotonic() - t_start > budget:
                log.warning("%s: budget of %d s spent after %d kills", target, budget, n)
                break
            if target != "libvirtd":  # that part kills its libvirtd itself
                world.revive_libvirtds()
            go.set()
            t0 = time.monotonic()
            time.sleep(rng.uniform(*gap))
            t_kill = time.monotonic()
            if target == "serve":
                recovery = world.restart_serve()
            elif target == "mount":
                recovery = world.kill_mount()
            elif target == "worker":
                recovery = world.kill_worker()
            else:  # the local host's libvirtd: SIGKILLed, or restarted, in turn
                recovery = world.kill_libvirtd(graceful=n % 2 == 1)
            recovered = time.monotonic()
            time.sleep(rng.uniform(0, gap[0]))  # clients meet the recovered appliance too
            t_pause = time.monotonic()
            waited = pause(crowd, go)
            if target != "libvirtd":
                world.revive_libvirtds()
            t_check = time.monotonic()
            rounds.append(check_round(world, crowd, n, recovery, recovered, converge_timeout))
            phases = rounds[-1]["phases"]
            phases.update(gap=t_kill - t0, kill=recovered - t_kill, after=t_pause - recovered,
                          pause=t_check - t_pause)
            log.info("%s kill %d: %.1f s: %s (last: %s)", target, n, time.monotonic() - t0,
                     " ".join(f"{k} {v:.2f}" for k, v in phases.items()), waited or "-")
            if rounds[-1]["findings"]:
                log.warning("%s kill %d: %s", target, n, rounds[-1]["findings"])
            elif (n + 1) % 10 == 0:
                log.info("%s: %d kills of %d, all survived so far: %d", target, n + 1, kills,
                         sum(1 for r in rounds if not r["findings"]))
    finally:
        go.clear()
        for client in crowd:
            client.stopping = True
        for client in crowd:
            client.join(120)
        try:
            remove_second_host(world)  # the parts after the kill parts have one host
        except Exception:  # noqa: BLE001 - reported; the part's own error (if any) goes on up
            log.exception("%s: could not take host h2 out again", target)
    return {**summarize(target, rounds, crowd, time.monotonic() - t_start),
            "libvirtd_crashes": list(world.libvirtd_crashes)}


def check_round(world: SoakWorld, crowd: list[Client], n: int, recovery: float, recovered: float,
                converge_timeout: float) -> dict:
    """converge_s: from the recovery (serve answering again) until every VM is in its desired
    state and no operation is pending, the operations the clients started meanwhile included."""
    phases: dict[str, float] = {}
    t = time.monotonic()

    def lap(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        phases[name] = now - t
        t = now
    converged, vms = world.converge(converge_timeout)
    lap("converge")
    if converged is not None:
        converged = time.monotonic() - recovered
    findings: dict[str, list[str]] = {}
    if converged is None:
        findings["not converged"] = [f"{vm['name']}: {vm['state']} (wants {vm['desired_state']})"
                                     for vm in vms if vm["state"] != vm["desired_state"]] or \
            [f"operations still busy: {[op['kind'] for op in world.busy_operations()]}"]
    findings.update(check_ledger(crowd, vms, snapshots_of(world)))
    lap("ledger")
    findings.update(check_images(crowd, [i["name"] for i in world.app.api("GET", "/v1/images", timeout=30)
                                         .json()["items"]]))
    lap("images")
    findings.update({f"orphan {k}": v for k, v in world.orphans(vms).items()})
    lap("orphans")
    integrity = world.integrity()
    lap("integrity")
    if integrity != "ok":
        findings["integrity_check"] = [integrity]
    for client in crowd:
        if client.tally.anomalies:
            findings.setdefault("answered missing", []).extend(client.tally.anomalies)
            client.tally.anomalies.clear()
    return {"kill": n, "recovery_s": round(recovery, 3), "converge_s": None if converged is None else
            round(converged, 3), "vms": len(vms), "running": sum(vm["state"] == "running" for vm in vms),
            "findings": findings, "phases": phases}


def summarize(target: str, rounds: list[dict], crowd: list[Client], took: float) -> dict:
    converge = [r["converge_s"] for r in rounds if r["converge_s"] is not None]
    acked = sum((c.tally.acked for c in crowd), start=type(crowd[0].tally.acked)())
    refused = sum((c.tally.refused for c in crowd), start=type(crowd[0].tally.refused)())
    lost = sum((c.tally.lost_answers for c in crowd), start=type(crowd[0].tally.lost_answers)())

    def count(prefix: str) -> int:
        return sum(len(v) for r in rounds for k, v in r["findings"].items() if k.startswith(prefix))
    return {
        "target": target, "kills": len(rounds), "took_s": round(took, 1),
        "survived": sum(1 for r in rounds if not r["findings"]),
        "vms_lost": count("lost VMs"), "writes_lost": count("lost writes"),
        "unexpected_vms": count("unexpected VMs"), "orphans": count("orphan"),
        "not_converged": sum(1 for r in rounds if r["converge_s"] is None),
        "integrity_failures": count("integrity_check"), "answered_missing": count("answered missing"),
        "converge_max_s": max(converge, default=None),
        "converge_p50_s": sorted(converge)[len(converge) // 2] if converge else None,
        "recovery_max_s": max((r["recovery_s"] for r in rounds), default=None),
        "vms_max": max((r["vms"] for r in rounds), default=0),
        "running_max": max((r["running"] for r in rounds), default=0),
        "operations_acked": sum(acked.values()), "operations_refused": sum(refused.values()),
        "answers_lost": sum(lost.values()),
        "server_errors": [e for c in crowd for e in c.tally.server_errors][:20],
        "server_error_count": sum(len(c.tally.server_errors) for c in crowd),
        "acked_by_kind": dict(sorted(acked.items())),
        "refused_by_kind": dict(sorted(refused.most_common(12))),
        "failed_rounds": [r for r in rounds if r["findings"]][:10],
        "phase_mean_s": {k: round(sum(r["phases"][k] for r in rounds) / len(rounds), 2)
                         for k in (rounds[0]["phases"] if rounds else ())},
    }
