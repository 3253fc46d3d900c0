"""What every part of the service shares: its dependencies, and the rules that
read a VM's record the same way everywhere (its shown state, its readiness,
whether it may be written)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from appliance import placement
from appliance.access import Principal, caller
from appliance.config import Config
from appliance.errors import Conflict, Forbidden, PreconditionFailed
from appliance.model import STATE_CHANGE_OPS, DesiredState, OpKind, OpStatus, VMState
from appliance.store import Row, Store
from scheduler import Decision

T = TypeVar("T")


def observed_state(row: Row) -> str:
    """The state a VM is shown in: deleting once its deletion is asked for,
    stopped before the controller first observed it."""
    if row["desired_state"] == DesiredState.DELETED:
        return VMState.DELETING
    return row["observed_state"] or VMState.STOPPED


def is_ready(row: Row) -> bool:
    """With a readiness probe, what it last said; without, running is ready."""
    running = (
        row["observed_state"] == VMState.RUNNING and row["desired_state"] != DesiredState.DELETED
    )
    if row["spec"].get("readiness_probe"):
        return running and bool(row.get("ready"))
    return bool(running)


def lock_of(row: Row) -> dict[str, Any] | None:
    """Who locked the VM, why and when; None when it is not locked."""
    if not row.get("locked_by"):
        return None
    return {"by": row["locked_by"], "reason": row.get("lock_reason") or "",
            "at": row.get("locked_at")}


def check_unlocked(row: Row, principal: Principal) -> None:
    """A locked VM (Nova's lock) changes only by an admin's or its locker's request:
    anyone else's is 409 (EBUSY) with who locked it and why. The controller's own
    actions (evacuation, run strategy restarts, a host's drain) are not requests
    and do not come through here: a lock guards a VM from people, not from the
    appliance keeping it running."""
    lock = lock_of(row)
    if lock is None or principal.is_admin or principal.user == lock["by"]:
        return
    raise Conflict(f"locked by {lock['by']}: {lock['reason']}", "lock")


class ServiceBase:
    def __init__(
        self,
        store: Store,
        config: Config,
        notify: Callable[[], None] = lambda: None,
        uuidgen: Callable[[], uuid.UUID] = uuid.uuid4,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.config = config
        self.notify = notify
        self.uuidgen = uuidgen
        self.clock = clock

    @staticmethod
    def _observed(row: Row) -> str:
        return observed_state(row)

    def _ready(self, row: Row) -> bool:
        return is_ready(row)

    @staticmethod
    def _project() -> str:
        """The project the caller acts in (appliance/access: set per request)."""
        return caller().project

    def _listed_project(self, all_projects: bool = False) -> str | None:
        """The project a listing shows: the caller's; None (every project) for
        `?all_projects=true` (Nova's --all-projects), an admin's alone to ask."""
        if not all_projects:
            return self._project()
        principal = caller()
        if not principal.is_admin:
            raise Forbidden(
                f"{principal.user} has the role {principal.role}: only an admin may list "
                "every project's (ask without all_projects for your project's)",
                "all_projects",
            )
        return None

    @staticmethod
    def _sees(project: str | None) -> bool:
        """Whether a record found by its id (an operation) is the caller's to see:
        one of the project they act in, or, for an admin, of any project (ids
        name one record in all projects; a drain's operations span them)."""
        principal = caller()
        return principal.is_admin or project == principal.project

    def projects_visible(self) -> list[str]:
        """The names of the projects the caller may act in (every one, for an admin)."""
        principal = caller()
        return [p["name"] for p in self.store.list_projects() if principal.may_see(p["name"])]

    def vm_row(self, name: str, with_xml: bool = True) -> Row:
        """The caller's project's VM of this name; another project's is not found."""
        return self.store.get_vm(name, self._project(), with_xml=with_xml)

    def vm_row_read(self, name: str) -> Row:
        """vm_row(name, with_xml=False) for a caller that only reads it (the value files,
        the mount's stat): while nothing was committed, the same dict for every such read
        of this thread (store.shared_vm_row), not decoded again."""
        return self.store.shared_vm_row(name, self._project())

    def kept_of_vm(self, name: str, kind: str, make: Callable[[Row], T]) -> T:
        """make(the caller's VM's row without its XML), kept per thread under `kind` while
        nothing is committed (store.vm_derived): for what is made of that row alone and
        that no caller changes."""
        return self.store.vm_derived(name, self._project(), kind, make)

    def _vm_for_write(self, name: str, if_match: int | None, allow_deleting: bool = False) -> Row:
        """The caller's VM, to change: every change of a VM by a request comes through
        here (spec, state, host, rename, delete, lock, cancelling its operations), so
        its lock is checked here alone."""
        row = self.vm_row(name)
        check_unlocked(row, caller())
        if if_match is not None and row["generation"] != if_match:
            raise PreconditionFailed(
                f"generation is {row['generation']}, not {if_match}: the VM changed; read it again",
                "generation",
            )
        if row["desired_state"] == DesiredState.DELETED and not allow_deleting:
            raise Conflict("the VM is being deleted", "name")
        return row

    def _new_op(self, row: Row, kind: OpKind, params: dict[str, Any] | None = None) -> Row:
        return self.store.add_operation(str(self.uuidgen()), row, kind, params)

    def _pending_op(self, row: Row, kind: OpKind) -> Row | None:
        """The VM's operation of this kind still pending or running, if any."""
        return self.store.open_operation(row["id"], kind)

    def _claims_cpu_ram(self, row: Row, spec: dict[str, Any] | None = None) -> bool:
        """placement.claims_cpu_ram, and a VM that an operation is booting (the rule the
        store's totals keep, model/states.py): a start in flight holds its room even
        once a force-stop asked for stopped, until the VM is observed stopped."""
        return placement.claims_cpu_ram(row, spec) or self.store.booting(row["id"])

    def _moving(self, row: Row) -> bool:
        """Whether the VM has a migration or an offline move under way."""
        return bool(self._pending_op(row, OpKind.MIGRATE) or self._pending_op(row, OpKind.MOVE))

    def _supersede(self, row: Row) -> None:
        """A new desired state cancels the pending state changes it replaces."""
        for op in self.store.operations_of_vm(row["id"], [OpStatus.PENDING]):
            if op["kind"] in STATE_CHANGE_OPS:
                self.store.update_operation(
                    op["id"], status=OpStatus.CANCELLED, error="superseded", finished=self.clock()
                )

    def _schedule(
        self, spec: dict[str, Any], vm_id: str | None, project: str, **constraints: Any
    ) -> Decision:
        """A placement decision inside the caller's transaction, for a VM of
        `project` (its server group is that project's); 409 with the
        scheduler's explanation when no host fits."""
        decision: Decision = placement.place(
            self.store, self.config, spec, vm_id, self.clock(), project=project, **constraints
        )
        if decision.host is None:
            raise Conflict(decision.explain(), "host")
        return decision

    def _refuse_for_pool_member(self, row: Row, what: str, field: str) -> None:
        """A pool's member is the pool's (KubeVirt's VirtualMachinePool): its shape
        and image come from the pool's template, and a shelved member would hold the
        pool's roll-out (it cannot be stopped) forever. 409 saying what to do instead."""
        if not row.get("pool"):
            return
        pool = self.store.get_pool_by_id(row["pool"])
        name = pool["name"] if pool else "?"
        raise Conflict(f"{row['name']} is a member of pool {name}: {what}", field)
