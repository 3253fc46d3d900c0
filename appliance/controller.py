"""The controller: the only libvirt writer. It converges libvirt to the store.

It runs operations recorded by the service (create, start, stop, ...), each
written to be safe to run again: after a crash, an operation found `running`
in the store is simply executed once more. Observed state comes from libvirt
lifecycle events; a periodic resync corrects anything an event missed (a
libvirtd restart, a crash of this process) and enforces run strategies.
"""
from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import libvirt
import libvirt_qemu

from appliance.config import Config
from appliance.errors import Failed
from appliance.notify import Listener, Notifier
from appliance.probes import Prober
from appliance.store import Store
from appliance.virt import cloudinit, domain, images
from appliance.virt.host import LibvirtHost, describe_state, start_event_loop

log = logging.getLogger(__name__)

HOST_NAME = "local"
RESYNC_SECONDS = 5.0
HEARTBEAT_SECONDS = 2.0
MAX_BACKOFF = 300.0


class Controller:
    def __init__(
        self,
        store: Store,
        config: Config,
        instance_id: str,
        domain_type: str,
        open_connection: Callable[[str], libvirt.virConnect] = libvirt.open,
        clock: Callable[[], float] = time.time,
        workers: int = 8,
    ):
        self.store = store
        self.config = config
        self.instance_id = instance_id
        self.domain_type = domain_type
        self.clock = clock
        self.host = LibvirtHost(HOST_NAME, config.libvirt_uri, self._on_libvirt_event, open_connection)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._busy: set[str] = set()  # VM ids with an operation in a worker
        self._busy_lock = threading.Lock()
        self._observe_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = Listener(config.notify_socket)
        self._nudge = Notifier(config.notify_socket)
        self._thread: threading.Thread | None = None
        self._backoff: dict[str, tuple[int, float]] = {}  # vm id -> (failures, not before)
        self._direct_io = images.supports_direct_io(config.vms_dir)
        self._host_up = False  # connected at the last look (for the host-down event)
        self._reported_down = False  # this outage has had its event
        self.reconcile_seconds = 0.0  # duration of the last resync, for metrics
        self._identities: dict[str, dict | None] = {}  # domain uuid -> its appliance <metadata>
        self.prober = Prober(store, config, self.host, self._liveness_failed, clock)

    # -- life of the controller ------------------------------------------------
    def start(self) -> None:
        start_event_loop()
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._nudge()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.prober.stop()
        self.host.disconnect()
        self._listener.close()

    def _run(self) -> None:
        next_resync = next_heartbeat = 0.0
        while not self._stop.is_set():
            try:
                if not self.host.connected:
                    if not self._reconnect():
                        self._listener.wait(1.0)  # retry about once a second, or when nudged
                        continue
                    next_resync = 0.0
                self._drain_events()
                now = self.clock()
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + HEARTBEAT_SECONDS
                if now >= next_resync and self.host.connected:
                    self.resync()
                    next_resync = now + RESYNC_SECONDS
                self._dispatch()
                if self.host.connected:
                    self.prober.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("controller loop")
                time.sleep(0.5)
            self._listener.wait(0.5)

    def _reconnect(self) -> bool:
        """Connect (again); False while libvirt is unreachable. An outage is one
        host-down event and one warning, however many attempts it takes."""
        if self._host_up:
            self._host_up = False
            log.warning("lost the connection to %s; reconnecting", self.host.uri)
            self.store.add_event("host-down", f"lost the connection to libvirt at {self.host.uri}")
            self._reported_down = True
        try:
            self.host.connect()
        except libvirt.libvirtError as err:
            self._record_host(up=False)
            if not self._reported_down:
                self._reported_down = True
                reason = err.get_error_message()
                log.warning("libvirt at %s unreachable (%s); retrying every second", self.host.uri, reason)
                self.store.add_event("host-down", f"libvirt at {self.host.uri} unreachable: {reason}")
            return False
        self._host_up, self._reported_down = True, False
        log.info("connected to %s", self.host.uri)
        self.store.add_event("host-up", f"libvirt at {self.host.uri} reachable")
        return True

    def _record_host(self, up: bool, info: dict | None = None) -> None:
        row = {"name": HOST_NAME, "uri": self.host.uri, "up": int(up), "last_seen": self.clock()}
        if info is not None:
            row["info"] = info
        existing = [h for h in self.store.list_hosts() if h["name"] == HOST_NAME]
        if not existing:
            row.setdefault("state", "enabled")
        self.store.upsert_host(row)

    def _heartbeat(self) -> None:
        up = self.host.connected
        info = None
        if up:
            try:
                info = self.host.inventory()
            except libvirt.libvirtError:
                up = False
        self._record_host(up, info)

    # -- libvirt events -------------------------------------------------------------
    def _on_libvirt_event(self, vm_id: str, event: int, detail: int) -> None:
        self.events.put((vm_id, event, detail))
        self._nudge()

    def _drain_events(self) -> None:
        seen = set()
        while True:
            try:
                vm_id, _event, _detail = self.events.get_nowait()
            except queue.Empty:
                break
            seen.add(vm_id)
        for vm_id in seen:
            row = self.store.get_vm_by_id(vm_id)
            if row is None:
                continue
            dom = self.host.lookup(vm_id)
            self._observe(row, dom)
            if not self._is_busy(vm_id):
                self._enforce(self.store.get_vm_by_id(vm_id))

    # -- observed state ---------------------------------------------------------------
    def _observe(self, row: dict, dom: libvirt.virDomain | None, record_xml: bool = False) -> str:
        """Record what libvirt shows for one VM; return the observed state.

        Called from the loop and from workers: serialised, and compared with a
        fresh row so that one change is recorded (and announced) once."""
        with self._observe_lock:
            fresh = self.store.get_vm_by_id(row["id"])
            if fresh is None:
                return "deleted"
            return self._observe_locked(fresh, dom, record_xml)

    def _observe_locked(self, row: dict, dom: libvirt.virDomain | None, record_xml: bool) -> str:
        if dom is None:
            state, reason = ("provisioning", "") if row["observed_state"] == "provisioning" else ("stopped", "undefined")
        else:
            state, reason = describe_state(*dom.state())
        fields: dict = {}
        if state != row["observed_state"] or reason != (row["observed_reason"] or ""):
            fields.update(observed_state=state, observed_reason=reason, state_changed=self.clock())
            fields["host"] = HOST_NAME if state in ("running", "paused", "stopping") else row["host"]
        if dom is not None and (record_xml or fields):
            try:
                fields["domain_xml"] = dom.XMLDesc()
            except libvirt.libvirtError:
                pass
        if fields:
            self.store.update_vm(row["id"], bump=False, **fields)
            if "observed_state" in fields:
                message = state + (f" ({reason})" if reason else "")
                self.store.add_event("state-changed", f"now {message}", row)
        return state

    def resync(self) -> None:
        """Compare every VM with libvirt: adopt, report strangers, enforce run strategies."""
        started = time.perf_counter()
        conn = self.host.conn
        assert conn is not None
        ours = {}
        domains = conn.listAllDomains()
        for dom in domains:
            uuid_ = dom.UUIDString()
            if uuid_ not in self._identities:  # a domain's <metadata> is set once, at define
                try:
                    self._identities[uuid_] = domain.read_identity(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                except libvirt.libvirtError:
                    continue
            identity = self._identities[uuid_]
            if identity and identity.get("appliance") == self.instance_id:
                ours[uuid_] = dom
        if len(self._identities) > 2 * len(domains) + 100:
            present = {d.UUIDString() for d in domains}
            self._identities = {k: v for k, v in self._identities.items() if k in present}
        rows = {row["id"]: row for row in self.store.list_vms()}
        for vm_id, dom in ours.items():
            if vm_id not in rows:
                self._report_orphan(vm_id, dom)
        for vm_id, row in rows.items():
            if self._is_busy(vm_id):
                continue
            self._observe(row, ours.get(vm_id), record_xml=row["domain_xml"] is None)
            row = self.store.get_vm_by_id(vm_id)
            if row is not None and not self._has_open_ops(vm_id):
                self._enforce(row)
                self._refresh_addresses(row, ours.get(vm_id))
        self.reconcile_seconds = time.perf_counter() - started

    def _report_orphan(self, vm_id: str, dom: libvirt.virDomain) -> None:
        key = f"orphan-reported:{vm_id}"
        if self.store.get_meta(key):
            return
        self.store.set_meta(key, "1")
        self.store.add_event("orphan-domain", f"domain {dom.name()} ({vm_id}) carries this appliance's id "
                             "but matches no VM in the store; it was left untouched")

    def adopt_on_start(self) -> None:
        """Remove disk folders of VMs the store no longer has (their delete was cut short)."""
        ids = {row["id"] for row in self.store.list_vms()}
        if not self.config.vms_dir.exists():
            return
        for path in self.config.vms_dir.iterdir():
            if path.is_dir() and path.name not in ids:
                shutil.rmtree(path, ignore_errors=True)
                self.store.add_event("orphan-disk-removed", f"removed {path}, which belonged to no VM")

    def _refresh_addresses(self, row: dict, dom: libvirt.virDomain | None) -> None:
        addresses = []
        network = row["spec"]["network"]
        if dom is not None and row["observed_state"] in ("running", "paused"):
            sources = [libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT]
            if network["type"] == "network":
                sources.insert(0, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
            for source in sources:
                try:
                    found = dom.interfaceAddresses(source)
                except libvirt.libvirtError:
                    continue
                for iface, data in found.items():
                    if iface == "lo":
                        continue
                    for addr in data.get("addrs") or []:
                        addresses.append({"interface": iface, "mac": data.get("hwaddr"), "address": addr["addr"],
                                          "prefix": addr["prefix"], "source": "agent" if source else "dhcp"})
                if addresses:
                    break
            if not addresses and network["type"] == "user":
                # QEMU's user-mode DHCP server has exactly one lease to give.
                addresses.append({"interface": "net0", "mac": row["mac"], "address": "10.0.2.15",
                                  "prefix": 24, "source": "user-mode"})
        encoded = json.dumps(addresses)
        if encoded != (row.get("addresses") or "[]"):
            self.store.update_vm(row["id"], bump=False, addresses=encoded)

    # -- run strategies ---------------------------------------------------------------------
    def _enforce(self, row: dict) -> None:
        """Converge a VM with no operation in flight to its desired state, by its run strategy."""
        if row is None or row["desired_state"] == "deleted" or row["observed_state"] == "provisioning":
            return
        if self._has_open_ops(row["id"]):
            return
        observed, desired = row["observed_state"], row["desired_state"]
        strategy = row["spec"]["run_strategy"]
        reason = row["observed_reason"] or ""
        if observed in ("stopped", "crashed") and desired in ("running", "paused"):
            if strategy == "Manual" or (strategy == "RerunOnFailure" and reason == "shutdown"):
                self.store.update_vm(row["id"], desired_state="stopped")
                self.store.add_event("stopped", f"the guest stopped ({reason or observed}); "
                                     f"run strategy {strategy} leaves it stopped", row)
                return
            failures, not_before = self._backoff.get(row["id"], (0, 0.0))
            if self.clock() < not_before:
                return
            self._backoff[row["id"]] = (failures + 1, self.clock() + min(MAX_BACKOFF, 5.0 * 2 ** failures))
            self._queue_op(row, "start", f"restarting: the guest is {observed}"
                           + (f" ({reason})" if reason else "") + f", run strategy {strategy}")
        elif observed in ("running", "paused") and desired == "stopped":
            self._queue_op(row, "stop", f"stopping: it runs but should be stopped ({strategy})")
        elif observed == "running" and desired == "paused":
            self._queue_op(row, "pause", "pausing: desired state is paused")
        elif observed == "paused" and desired == "running" and reason != "migration":
            self._queue_op(row, "resume", f"resuming: paused ({reason}) but should run")
        elif observed == desired == "running":
            self._backoff.pop(row["id"], None)

    def _liveness_failed(self, row: dict, reason: str) -> None:
        """Called by the prober: pull the plug; the run strategy decides the rest."""
        strategy = row["spec"]["run_strategy"]
        self.store.add_event("liveness-failed", f"{reason}; forcing it off (run strategy {strategy})", row)
        self._queue_op(row, "force-stop", "forcing off after the liveness probe failed")
        self._nudge()

    def _queue_op(self, row: dict, kind: str, why: str) -> None:
        with self.store.transaction():
            op = self.store.add_operation(str(uuid.uuid4()), row, kind, {"by": "controller"})
            self.store.add_event("converging", why, row, op["id"])

    # -- operations ---------------------------------------------------------------------
    def _is_busy(self, vm_id: str) -> bool:
        with self._busy_lock:
            return vm_id in self._busy

    def _has_open_ops(self, vm_id: str) -> bool:
        row = self.store.db.execute(
            "SELECT 1 FROM operations WHERE vm_id = ? AND status IN ('pending', 'running') LIMIT 1", [vm_id]
        ).fetchone()
        return row is not None

    def _dispatch(self) -> None:
        if not self.host.connected:
            return
        claimed = set()
        for op in self.store.next_operations():
            vm_id = op["vm_id"]
            if vm_id in claimed:
                continue
            claimed.add(vm_id)
            with self._busy_lock:
                if vm_id in self._busy:
                    continue
                self._busy.add(vm_id)
            self.pool.submit(self._execute, op)

    def _execute(self, op: dict) -> None:
        vm_id = op["vm_id"]
        if not self.store.claim_operation(op["id"], self.clock()):
            with self._busy_lock:  # finished or cancelled since the loop listed it
                self._busy.discard(vm_id)
            return
        try:
            row = self.store.get_vm_by_id(vm_id)
            if row is None:
                raise Failed("the VM no longer exists")
            handler = getattr(self, "_op_" + op["kind"].replace("-", "_"))
            handler(op, row)
            # Observed state first: whoever waits on the operation reads the VM next.
            self._observe_after(vm_id)
            self.store.update_operation(op["id"], status="succeeded", progress=100, finished=self.clock())
            if self.store.get_vm_by_id(vm_id) is not None:
                self.store.update_vm(vm_id, bump=False, last_error=None)
        except Exception as err:  # noqa: BLE001 - every failure is recorded, none is lost
            reason = err.get_error_message() if isinstance(err, libvirt.libvirtError) else str(err)
            log.warning("operation %s %s on %s failed: %s", op["id"], op["kind"], op["vm_name"], reason)
            self._observe_after(vm_id)
            self.store.update_operation(op["id"], status="failed", error=reason, finished=self.clock())
            row = self.store.get_vm_by_id(vm_id)
            if row is not None:
                self.store.update_vm(vm_id, bump=False, last_error=f"{op['kind']}: {reason}")
                self.store.add_event("operation-failed", f"{op['kind']} failed: {reason}", row, op["id"])
        finally:
            with self._busy_lock:
                self._busy.discard(vm_id)
            self._nudge()

    def _observe_after(self, vm_id: str) -> None:
        row = self.store.get_vm_by_id(vm_id)
        if row is None or not self.host.connected:
            return
        try:
            dom = self.host.lookup(vm_id)
            self._observe(row, dom, record_xml=True)
            fresh = self.store.get_vm_by_id(vm_id)
            if fresh is not None:
                self._refresh_addresses(fresh, dom)
        except libvirt.libvirtError:
            pass

    def _op_cancelled(self, op: dict) -> bool:
        return self.store.get_operation(op["id"])["status"] == "cancelled"

    # -- the domain definition ----------------------------------------------------------
    def plan(self, row: dict) -> domain.DomainPlan:
        vm_dir = self.config.vm_dir(row["id"])
        seed = vm_dir / "cidata.iso"
        return domain.DomainPlan(
            vm_id=row["id"], domain_name=self.config.domain_prefix + row["name"], vm_name=row["name"],
            instance_id=self.instance_id, spec=row["spec"], domain_type=self.domain_type, vm_dir=vm_dir,
            mac=row["mac"], seed_iso=seed, direct_io=self._direct_io,
        )

    def _ensure_defined(self, row: dict) -> libvirt.virDomain:
        """Disks, seed and definition as the spec says; safe to repeat."""
        plan = self.plan(row)
        plan.vm_dir.mkdir(parents=True, exist_ok=True)
        if not plan.root_disk.exists():
            image = self.store.get_image(row["spec"]["image"])
            tmp = plan.root_disk.with_suffix(".tmp")
            images.create_overlay(image["path"], image["format"], tmp)
            tmp.replace(plan.root_disk)  # a disk is there whole or not at all
        for disk in row["spec"]["disks"]:
            path = plan.disk_path(disk["name"])
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                images.create_blank(tmp, disk["size"])
                tmp.replace(path)
        cloudinit.write_seed_iso(plan.seed_iso, cloudinit.seed_files(row["id"], row["name"], row["spec"]["cloud_init"]))
        conn = self.host.conn
        assert conn is not None
        self._reserve_address(row)
        dom = self.host.lookup(row["id"])
        if dom is not None and dom.name() != plan.domain_name:
            if dom.isActive():
                raise Failed("cannot rename a running domain")
            dom.rename(plan.domain_name, 0)
        return conn.defineXML(domain.build(plan))

    # -- fixed IPs: a DHCP reservation in the libvirt network ------------------------------
    def _dhcp_update(self, network_name: str, command: int, xml: str) -> None:
        conn = self.host.conn
        assert conn is not None
        try:
            net = conn.networkLookupByName(network_name)
        except libvirt.libvirtError:
            raise Failed(f"libvirt network {network_name!r} does not exist on this host") from None
        flags = 0
        if net.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        if net.isPersistent():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)

    def _release_address(self, row: dict) -> None:
        network = row["spec"]["network"]
        if network["type"] != "network":
            return
        try:
            self._dhcp_update(network["name"], libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                              f"<host mac='{row['mac']}'/>")
        except (libvirt.libvirtError, Failed):
            pass  # no reservation (or no network): nothing to release

    def _reserve_address(self, row: dict) -> None:
        """Fixed IPs, which KubeVirt lacks: the libvirt network's DHCP server
        gives this VM's MAC its address, whatever the guest OS."""
        network = row["spec"]["network"]
        if network["type"] != "network":
            return
        self._release_address(row)
        if network.get("ip"):
            self._dhcp_update(network["name"], libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                              f"<host mac='{row['mac']}' name='{row['name']}' ip='{network['ip']}'/>")

    # -- operation handlers (each idempotent) ------------------------------------------------
    def _op_create(self, op: dict, row: dict) -> None:
        dom = self._ensure_defined(row)
        self._observe(row, dom, record_xml=True)
        row = self.store.get_vm_by_id(row["id"])
        if row["desired_state"] in ("running", "paused"):
            self._start(row, dom)
            if row["desired_state"] == "paused":
                dom.suspend()

    def _op_update(self, op: dict, row: dict) -> None:
        dom = self._ensure_defined(row)
        if not dom.isActive():
            self.store.update_vm(row["id"], bump=False, restart_required=0)

    def _op_start(self, op: dict, row: dict) -> None:
        dom = self.host.lookup(row["id"])
        state = describe_state(*dom.state())[0] if dom is not None else "stopped"
        if state == "paused":
            dom.resume()
            return
        if state in ("running", "stopping"):
            return
        dom = self._ensure_defined(row)
        self._start(row, dom)

    def _start(self, row: dict, dom: libvirt.virDomain) -> None:
        if not dom.isActive():
            # Console probes look only at what this boot prints.
            console = self.config.vm_dir(row["id"]) / "console.log"
            offset = console.stat().st_size if console.exists() else 0
            self.store.update_vm(row["id"], bump=False, boot_console_offset=offset)
            dom.create()
            self.store.update_vm(row["id"], bump=False, restart_required=0, host=HOST_NAME)
        self._apply_port_forwards(row, dom)

    def _apply_port_forwards(self, row: dict, dom: libvirt.virDomain) -> None:
        network = row["spec"]["network"]
        if network["type"] != "user" or not network.get("port_forwards"):
            return
        for fwd in network["port_forwards"]:
            rule = f"{fwd['protocol']}:{fwd['host_address']}:{fwd['host_port']}-:{fwd['guest_port']}"
            out = libvirt_qemu.qemuMonitorCommand(
                dom, f"hostfwd_add hostua-net0 {rule}", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            if out.strip():
                raise Failed(f"port forward {rule}: {out.strip()}")

    def _op_resume(self, op: dict, row: dict) -> None:
        self._op_start(op, row)

    def _op_pause(self, op: dict, row: dict) -> None:
        dom = self.host.lookup(row["id"])
        if dom is None or not dom.isActive():
            dom = self._ensure_defined(row)
            self._start(row, dom)
        if describe_state(*dom.state())[0] != "paused":
            dom.suspend()

    def _op_force_stop(self, op: dict, row: dict) -> None:
        dom = self.host.lookup(row["id"])
        if dom is not None and dom.isActive():
            dom.destroy()

    def _op_stop(self, op: dict, row: dict) -> None:
        self._graceful_stop(op, row)

    def _graceful_stop(self, op: dict, row: dict) -> None:
        """ACPI shutdown; after the grace period (or when a force-stop is queued), pull the plug."""
        dom = self.host.lookup(row["id"])
        if dom is None or not dom.isActive():
            return
        grace = row["spec"]["termination_grace_period"]
        deadline = self.clock() + grace
        try:
            dom.shutdown()
        except libvirt.libvirtError as err:
            log.info("shutdown of %s refused (%s); destroying", row["name"], err.get_error_message())
            deadline = 0
        while dom.isActive() and self.clock() < deadline:
            if self._force_stop_waiting(row["id"]):
                break
            time.sleep(0.1)
        if dom.isActive():
            dom.destroy()
            self.store.add_event("forced-off", f"the guest did not power off within {grace} s; forced off",
                                 row, op["id"])

    def _force_stop_waiting(self, vm_id: str) -> bool:
        return self.store.db.execute(
            "SELECT 1 FROM operations WHERE vm_id = ? AND kind = 'force-stop' AND status = 'pending'", [vm_id]
        ).fetchone() is not None

    def _op_reboot(self, op: dict, row: dict) -> None:
        """A restart as KubeVirt does it: graceful stop, then start with the current spec."""
        self._graceful_stop(op, row)
        dom = self._ensure_defined(self.store.get_vm_by_id(row["id"]))
        self._start(row, dom)

    def _op_converge(self, op: dict, row: dict) -> None:
        self._op_start(op, row)

    def _op_delete(self, op: dict, row: dict) -> None:
        dom = self.host.lookup(row["id"])
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                dom.undefine()  # drivers without NVRAM support (the test driver)
        self._release_address(row)
        vm_dir: Path = self.config.vm_dir(row["id"])
        shutil.rmtree(vm_dir, ignore_errors=True)
        with self.store.transaction():
            self.store.add_event("deleted", "VM deleted; its disks were removed", row, op["id"])
            self.store.delete_vm(row["id"])
