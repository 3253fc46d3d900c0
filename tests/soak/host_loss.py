"""Host loss (issue 17, `make soak PART=host-loss`): a whole host killed, as a power loss
would, and brought back, round after round; no guest ever runs twice.

Two private libvirt hosts (packaging/local-hosts, tests/local_hosts.py) under one real
`vmctl serve` (its first host `local` is one of them, `h2` is added over REST), with the
soak's never-booting guests (tests/soak/world.py) running on both: per host one VM of
each run strategy that runs (Always, RerunOnFailure, Manual) and a stopped one (Halted).
`evacuate_after` is GRACE seconds (60 by default) so that a round is short.

One round, the hosts killed in turn:
  1. power loss: every process of the host is SIGKILLed at once, by pid: the namespace
     holder, its libvirtd and virtlogd (all in the host's mount namespace) and its QEMUs
     (libvirt's pid files; each in a mount namespace of libvirt's). Nothing else: the
     namespace is checked to be the host's, not ours.
  2. evacuation as configured (controller/evacuation.py): after the grace, the host's
     VMs with run strategy Always that should run are running on the other host; its
     other VMs are `lost` and stay on it; none moved before the grace; the other host's
     VMs untouched. Timed from the kill (the grace included).
  3. the host back (`local-hosts up`: a new namespace, /run/libvirt empty as after a
     boot, so libvirtd sees its guests shut off): every VM converges to its desired
     state with no operation busy; each VM's domain is defined on the host the store
     says and on no other (the stale copies of evacuated VMs undefined), active only
     there; RerunOnFailure VMs run again on their host, Manual ones stay stopped.
     Timed from the host answering again.
  4. integrity_check ok, no orphan (world.orphans: VM dirs, image and upload files,
     DHCP reservations, mounts), and throughout the round a sampler looking at every
     QEMU process of this machine (both hosts' guests are processes here) never saw one
     VM's guest twice.
Then the Manual VMs are started again, so that every round loses one of each kind.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from pathlib import Path

from tests.appliance_process import wait_for

log = logging.getLogger("soak.host_loss")

GRACE = 3.0  # evacuate_after for the soak (the default is 60 s)
STRATEGIES = ("Always", "RerunOnFailure", "Manual")  # running; and one Halted, stopped
HOSTS = ("local", "h2")
WAIT = 120.0  # bound on each wait (TCG under load: generous)


def _mnt_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _comm(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def host_processes(host) -> list[int]:
    """Every process of a local host: the holder and what runs in its mount namespace
    (libvirtd, virtlogd, dnsmasq), and its QEMUs (libvirt's pid files in its run/)."""
    try:
        holder = int((host.base / "holder.pid").read_text())
    except (OSError, ValueError):
        return []
    ns = _mnt_ns(holder)
    if _comm(holder) != "sleep" or ns is None or ns == _mnt_ns("self"):
        raise RuntimeError(f"{host.name}: pid {holder} is not its namespace holder")
    pids = [holder] + [int(p) for p in os.listdir("/proc")
                       if p.isdigit() and int(p) not in (holder, os.getpid()) and _mnt_ns(p) == ns]
    for pidfile in (host.base / "run" / "qemu").glob("*.pid"):
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            continue
        if _comm(pid).startswith("qemu") and pid not in pids:
            pids.append(pid)
    return pids


def power_off(host) -> int:
    """SIGKILL all of a host's processes at once; wait until they are gone. How many."""
    pids = host_processes(host)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        if _comm(pid):
            host.kill_pid(pid)  # waits until it is gone (SIGKILL again is harmless)
    return len(pids)


class TwiceSampler(threading.Thread):
    """Looks at every QEMU of ours on this machine every `interval` s: any VM seen twice."""

    def __init__(self, world, interval: float = 0.2):
        super().__init__(daemon=True)
        self.world, self.interval = world, interval
        self.seen: set[str] = set()
        self.samples = 0
        self.guests_max = 0  # the most QEMUs of ours seen at once (the sampler sees guests)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            count = self.world.guest_processes()
            self.seen.update(f"{n} x{c}" for n, c in count.items() if c > 1)
            self.guests_max = max(self.guests_max, sum(count.values()))
            self.samples += 1
            self.stopping.wait(self.interval)

    def take(self) -> list[str]:
        seen, self.seen = sorted(self.seen), set()
        return seen


class HostLoss:
    def __init__(self, world, hosts: dict):
        self.world, self.app, self.hosts = world, world.app, hosts  # hosts: name -> LocalHost
        self.strategy: dict[str, str] = {}  # vm name -> run strategy
        self.rng = random.Random(17)

    # -- set-up ----------------------------------------------------------------------------
    def add_h2(self) -> None:
        resp = self.app.api("POST", "/v1/hosts", json={"name": "h2", "uri": self.hosts["h2"].uri})
        if resp.status_code != 201:
            raise RuntimeError(f"adding h2: {resp.status_code} {resp.text}")
        wait_for("h2 up", lambda: self.host("h2")["up"], WAIT)

    def create_vms(self) -> None:
        for host in HOSTS:
            for strategy in (*STRATEGIES, "Halted"):
                name = f"{host[0]}{strategy.lower()[:6]}"
                state = "stopped" if strategy == "Halted" else "running"
                resp = self.app.api("POST", "/v1/vms", json={
                    "name": name, "memory": "32M", "state": state, "host": host, "run_strategy": strategy})
                if resp.status_code != 201:
                    raise RuntimeError(f"creating {name}: {resp.status_code} {resp.text}")
                self.strategy[name] = strategy
        self.settle()

    # -- looks ---------------------------------------------------------------------------------
    def host(self, name: str) -> dict:
        return self.app.api("GET", f"/v1/hosts/{name}", timeout=30).json()

    def vms(self) -> dict[str, dict]:
        return {vm["name"]: vm for vm in self.world.vms()}

    def domains(self) -> dict[str, dict[str, bool]]:
        """vm id -> {host: active} over both hosts, from libvirt (a dead host shows nothing)."""
        import libvirt

        found: dict[str, dict[str, bool]] = {}
        for name, host in self.hosts.items():
            try:
                conn = libvirt.open(host.uri)
            except libvirt.libvirtError:
                continue
            try:
                for dom in conn.listAllDomains():
                    if dom.name().startswith(self.app.prefix):
                        found.setdefault(dom.UUIDString(), {})[name] = bool(dom.isActive())
            finally:
                conn.close()
        return found

    def misplaced(self, vms: dict[str, dict]) -> list[str]:
        """Each VM's domain defined on its store host only, active only if it runs there."""
        domains = self.domains()
        out = []
        for vm in vms.values():
            where = domains.pop(vm["id"], {})
            if set(where) != {vm["host"]}:
                out.append(f"{vm['name']} (store: {vm['host']}) defined on {sorted(where)}")
            active = sorted(h for h, a in where.items() if a)
            if active != ([vm["host"]] if vm["state"] in ("running", "paused") else []):
                out.append(f"{vm['name']} ({vm['state']} on {vm['host']}) active on {active}")
        out += [f"domain {vm_id} of no VM on {sorted(where)}" for vm_id, where in domains.items()]
        return out

    def settled(self) -> dict[str, dict] | None:
        vms = self.vms()
        if all(vm["state"] == vm["desired_state"] for vm in vms.values()) \
                and not self.world.busy_operations() and not self.misplaced(vms):
            return vms
        return None

    def settle(self, timeout: float = WAIT) -> dict[str, dict]:
        return wait_for("every VM in its desired state, where the store says", self.settled, timeout, 0.3)

    # -- one round -----------------------------------------------------------------------------
    def round(self, n: int, sampler: TwiceSampler, down_more: float = 3.0) -> dict:
        """busy rounds (the 3rd and 4th of every 4): each VM that should move is asked to pause
        as its host dies, so that an operation waits on the dead host. Hasty rounds (the 5th
        to 8th of every 8): the host returns as soon as the evacuation is decided (the store
        names the other host), while the restarts there are still under way."""
        victim = HOSTS[n % 2]
        busy = (n // 2) % 2 == 1
        hasty = (n // 4) % 2 == 1
        survivor = HOSTS[1 - n % 2]
        before = self.settle()
        sampler.take()
        findings: dict[str, list[str]] = {}
        moving = {name for name, vm in before.items() if vm["host"] == victim
                  and self.strategy[name] == "Always" and vm["desired_state"] == "running"}
        left = {name for name, vm in before.items() if vm["host"] == victim} - moving
        staying = {name for name, vm in before.items() if vm["host"] == survivor}

        t0 = time.monotonic()
        killed = power_off(self.hosts[victim])
        prefix = self.app.prefix
        findings["QEMU alive after the power loss"] = [
            d for d in self.world.guest_processes() if before.get(d.removeprefix(prefix), {}).get("host") == victim]
        asked = {name: "paused" for name in sorted(moving) if busy and self.set_state(name, "paused") == 202}
        early: list[str] = []

        def evacuated() -> dict | None:
            vms = self.vms()
            if time.monotonic() - t0 < GRACE * 0.9:
                early.extend(name for name in moving if vms[name]["host"] != victim)
            done = all(vms[n]["host"] == survivor and (hasty or vms[n]["state"] == asked.get(n, "running"))
                       for n in moving) and \
                all(vms[n]["state"] == "lost" and vms[n]["host"] == victim for n in left)
            return vms if done else None
        try:
            vms = wait_for(f"{victim}'s VMs evacuated", evacuated, GRACE + WAIT)
            evacuation_s = None if hasty else time.monotonic() - t0
        except AssertionError as err:  # wait_for's "not within"
            vms, evacuation_s = self.vms(), None
            findings["not evacuated"] = [str(err)] + [
                f"{n}: {vms[n]['state']} on {vms[n]['host']}" for n in sorted(moving | left)]
        if early:
            findings["evacuated before the grace"] = sorted(set(early))
        findings["survivor's VMs disturbed"] = [
            f"{n}: {vms[n]['state']} on {vms[n]['host']}" for n in sorted(staying)
            if vms[n]["host"] != survivor or vms[n]["state"] != before[n]["state"]]

        time.sleep(0 if hasty else self.rng.uniform(0, down_more))  # down a while longer, or not
        t1 = time.monotonic()
        self.hosts[victim].up()
        wait_for(f"{victim} up again", lambda: self.host(victim)["up"], WAIT)
        back_s = time.monotonic() - t1
        try:
            after = self.settle()
            converge_s = time.monotonic() - t1
        except AssertionError as err:
            after, converge_s = self.vms(), None
            findings["not converged"] = [str(err)] + self.misplaced(after) + [
                f"{vm['name']}: {vm['state']} (wants {vm['desired_state']})" for vm in after.values()
                if vm["state"] != vm["desired_state"]]
        findings["not as configured"] = self.configured(after, before, moving, survivor, victim, asked)
        findings["guests twice"] = sampler.take()
        findings.update({f"orphan {k}": v for k, v in self.world.orphans(list(after.values())).items()
                         if k not in ("domains", "missing domains")})  # both hosts: misplaced()
        integrity = self.world.integrity()
        if integrity != "ok":
            findings["integrity_check"] = [integrity]
        findings = {k: v for k, v in findings.items() if v}
        self.restore(after)
        return {"round": n, "host": victim, "busy": busy, "hasty": hasty, "asked": len(asked),
                "processes_killed": killed, "moved": len(moving),
                "lost": len(left), "evacuation_s": None if evacuation_s is None else round(evacuation_s, 2),
                "back_s": round(back_s, 2), "converge_s": None if converge_s is None else round(converge_s, 2),
                "findings": findings}

    def configured(self, after: dict, before: dict, moving: set[str], survivor: str, victim: str,
                   asked: dict[str, str]) -> list[str]:
        """Where each VM should be after the round, by its run strategy."""
        out = []
        for name, vm in after.items():
            was = before[name]
            strategy = self.strategy[name]
            want_host = survivor if name in moving else was["host"]
            if name in asked:
                want_state = asked[name]
            elif was["host"] == victim and strategy == "Manual":
                want_state = "stopped"  # lost, back stopped: Manual leaves it so
            else:
                want_state = was["state"]  # Always moved and runs; RerunOnFailure rerun; Halted stopped
            if vm["host"] != want_host or vm["state"] != want_state:
                out.append(f"{name} ({strategy}): {vm['state']} on {vm['host']}, "
                           f"expected {want_state} on {want_host}")
        return out

    def set_state(self, name: str, verb: str) -> int:
        return self.app.api("PUT", f"/v1/vms/{name}/state", data=verb, params={"wait": "false"},
                            headers={"Content-Type": "text/plain"}, timeout=60).status_code

    def restore(self, vms: dict) -> None:
        """Every VM but the Halted ones running again (Manual ones lost, paused ones)."""
        for name, vm in vms.items():
            if self.strategy[name] != "Halted" and vm["desired_state"] != "running":
                self.set_state(name, "running")


def run_host_loss(base: Path, rounds: int, budget: float, down_more: float = 3.0) -> dict:
    """`rounds` host losses (the two hosts in turn), at most `budget` seconds."""
    from appliance.config import Config
    from tests.local_hosts import LocalHost
    from tests.soak.world import SoakWorld

    t_start = time.monotonic()
    results: list[dict] = []
    set_up = None
    with LocalHost() as one, LocalHost() as two:
        world = SoakWorld(base, local_host=one)
        world.app.home.mkdir(parents=True, exist_ok=True)
        Config(home=world.app.home, evacuate_after=GRACE).save()
        sampler = TwiceSampler(world)
        try:
            world.start()
            loss = HostLoss(world, {"local": one, "h2": two})
            loss.add_h2()
            loss.create_vms()
            set_up = time.monotonic() - t_start
            log.info("host-loss: two hosts, serve and %d VMs up in %.1f s", len(loss.strategy), set_up)
            sampler.start()
            for n in range(rounds):
                if time.monotonic() - t_start > budget:
                    log.warning("host-loss: budget of %d s spent after %d rounds", budget, n)
                    break
                results.append(loss.round(n, sampler, down_more))
                log.info("host-loss round %d (%s): %s", n, results[-1]["host"],
                         results[-1]["findings"] or "ok")
        finally:
            sampler.stopping.set()
            for host in (one, two):
                try:
                    host.up()  # a host left powered off: the cleanup goes through its libvirtd
                except Exception:  # noqa: BLE001 - down() below removes it anyway
                    pass
            world.close()
            t_down = time.monotonic()
    log.info("host-loss: torn down in %.1f s", time.monotonic() - t_down)
    return summarize(results, time.monotonic() - t_start, set_up, sampler)


def _p50(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def summarize(rounds: list[dict], took: float, set_up: float | None, sampler: TwiceSampler) -> dict:
    evac = [r["evacuation_s"] for r in rounds if r["evacuation_s"] is not None]
    conv = [r["converge_s"] for r in rounds if r["converge_s"] is not None]
    survived = sum(1 for r in rounds if not r["findings"])
    return {
        "rounds": len(rounds), "rounds_survived": survived, "failures": len(rounds) - survived,
        "grace_s": GRACE, "took_s": round(took, 1), "set_up_s": None if set_up is None else round(set_up, 1),
        "guests_twice": sum(len(r["findings"].get("guests twice", [])) for r in rounds),
        "twice_samples": sampler.samples, "guests_seen_max": sampler.guests_max,
        "moved": sum(r["moved"] for r in rounds), "lost": sum(r["lost"] for r in rounds),
        "evacuation_p50_s": _p50(evac), "evacuation_max_s": max(evac, default=None),
        "back_max_s": max((r["back_s"] for r in rounds), default=None),
        "converge_p50_s": _p50(conv), "converge_max_s": max(conv, default=None),
        "per_round": [f"{r['host']}{' busy' if r['busy'] else ''}{' hasty' if r['hasty'] else ''}: "
                      f"{r['moved']} moved, {r['lost']} lost, evacuated {r['evacuation_s']} s, "
                      f"converged {r['converge_s']} s{'' if not r['findings'] else ', FAILED'}" for r in rounds],
        "failed_rounds": [r for r in rounds if r["findings"]][:10],
    }


def host_loss_section(results: dict) -> list[str]:
    """RELIABILITY.md's lines for the part (tests/soak/report.py)."""
    r = results.get("host-loss")
    if not r:
        return []
    if "error" in r:
        return ["## Host loss", "", f"FAILED: {r['error']}", ""]

    def n(value, unit=" s"):
        return "–" if value is None else f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"
    out = ["## Host loss", "",
           "Two private libvirt hosts (packaging/local-hosts) under one real `vmctl serve`, per host one "
           "never-booting VM of each run strategy that runs (Always, RerunOnFailure, Manual) and a stopped "
           "one (Halted); `evacuate_after` = " + n(r["grace_s"]) + ". Each round powers a host off (every "
           "process of it SIGKILLed at once: its namespace, libvirtd, virtlogd, QEMUs; the two hosts in "
           "turn), waits for the evacuation (Always VMs running on the other host, the others `lost` "
           "where they were, none moved before the grace), brings the host back with /run/libvirt empty "
           "as after a boot, and checks: every VM in its desired state with each domain defined and "
           "active only on the host the store says (stale copies undefined, never resumed), "
           "RerunOnFailure VMs rerun and Manual ones stopped on their host, integrity_check ok, no "
           "orphan, and no guest ever seen twice by a sampler of every QEMU process (every 0.2 s). "
           "*evacuated in*: kill to every Always VM running elsewhere (the grace included); *converged "
           "in*: host answering again to all of the above.", "",
           "| rounds | survived | guests twice | VMs moved / lost | evacuated in p50 (max) | "
           "host back in (max) | converged in p50 (max) | took |", "|---|---|---|---|---|---|---|---|",
           f"| {r['rounds']} | {r['rounds_survived']} | {r['guests_twice']} | {r['moved']} / {r['lost']} | "
           f"{n(r['evacuation_p50_s'])} ({n(r['evacuation_max_s'])}) | {n(r['back_max_s'])} | "
           f"{n(r['converge_p50_s'])} ({n(r['converge_max_s'])}) | {n(r['took_s'])} |"]
    import json

    for failed in r.get("failed_rounds", [])[:5]:
        out.append(f"\nhost-loss round {failed['round']} ({failed['host']}): "
                   f"{json.dumps(failed['findings'])[:600]}")
    return out + [""]
