"""Operations (get, list, wait, finish, cancel) and events."""

from __future__ import annotations

import time

from appliance.access import caller
from appliance.errors import Conflict, Failed, NotFound, Timeout, Unavailable
from appliance.model import (
    FINAL_OP_STATES,
    DesiredState,
    OpKind,
    OpStatus,
    SnapshotState,
    cancellable_while_running,
    copies_a_source,
)
from appliance.model.states import JOB_HELD, UNREACHABLE
from appliance.service.base import ServiceBase, check_unlocked
from appliance.store import Row

# Operations that, once asked for, run to their end (but a CREATE that copies a
# source: model/states.py copies_a_source).
UNCANCELLABLE = (OpKind.CREATE, OpKind.DELETE)


class Operations(ServiceBase):
    def get_operation(self, op_id: str) -> Row:
        """The operation, if the caller sees its project (else not found, as if
        there were none: service/base.py _sees)."""
        op = self.store.get_operation(op_id)
        if not self._sees(op["project"]):
            raise NotFound(f"no operation {op_id!r}", "id")
        return op

    def list_operations(
        self,
        vm: str | None = None,
        status: str | None = None,
        limit: int = 100,
        all_projects: bool = False,
    ) -> list[Row]:
        """The caller's project's operations (every project's for an admin's
        all_projects), newest first."""
        project = self._listed_project(all_projects)
        return self.store.list_operations(vm_name=vm, status=status, limit=limit, project=project)

    def wait_operation(self, op_id: str, timeout: float) -> Row:
        """Until the operation is final or the timeout passes; return it either
        way. Its row is read again only when something was committed to the
        store (store/changes.py), not on a timer."""
        deadline = time.monotonic() + timeout  # elapsed time, whatever the injected clock says
        self.get_operation(op_id)  # not found unless the caller sees it
        with self.store.changes.watching() as changes:
            while True:
                seen = changes.generation
                op = self.store.get_operation(op_id)
                left = deadline - time.monotonic()
                if op["status"] in FINAL_OP_STATES or left <= 0:
                    return op
                changes.wait(seen, left)

    def finish(self, op: Row | None, timeout: float | None = None) -> Row | None:
        """Wait for an operation and turn its failure into Failed (or Timeout)."""
        if op is None:
            return None
        op = self.wait_operation(op["id"], self.config.wait_timeout if timeout is None else timeout)
        if op["status"] == OpStatus.FAILED:
            if op.get("error_field") is not None:  # refused by the controller (a Conflict)
                raise Conflict(f"{op['kind']} failed: {op['error']}", op["error_field"] or None)
            host = op["params"].get(UNREACHABLE)
            if host:  # cut by its host's lost connection, again and again: not our failure
                why = "" if "unreachable" in (op["error"] or "") else f" ({op['error']})"
                raise Unavailable(f"{op['kind']} failed: host {host} is unreachable{why}; "
                                  "try again once it answers")
            if op["params"].get(JOB_HELD):  # libvirt's state change lock: not our failure
                raise Unavailable(f"{op['kind']} of VM {op['vm_name']} failed: {op['error']}")
            raise Failed(f"{op['kind']} failed: {op['error']}")
        if op["status"] == OpStatus.CANCELLED:
            raise Conflict(f"{op['kind']} was cancelled: {op['error']}")
        if op["status"] not in FINAL_OP_STATES:
            raise Timeout(
                f"{op['kind']} still {op['status']} after the wait; poll /v1/operations/{op['id']}"
            )
        return op

    def cancel_operation(self, op_id: str) -> Row:
        with self.store.transaction():
            op = self.get_operation(op_id)
            # A running live migration, backup, restore or copy into a new VM is
            # cancellable too: the controller aborts the libvirt job (the guest stays
            # on its source) or the copy, and cleans up what it had written.
            copy = copies_a_source(op)
            running_job = op["status"] == OpStatus.RUNNING and cancellable_while_running(op)
            if op["status"] != OpStatus.PENDING and not running_job:
                raise Conflict(
                    f"operation is {op['status']}; only pending operations (and running "
                    "migrations, backups, restores and clones) can be cancelled",
                    "id",
                )
            if op["kind"] in UNCANCELLABLE and not copy:
                raise Conflict(f"a {op['kind']} cannot be cancelled", "id")
            if copy and op["params"].get("filled"):
                raise Conflict("the copy is done and the VM is being defined; delete the VM "
                               "instead", "id")
            row = self.store.get_vm_by_id(op["vm_id"])
            if row is not None:  # cancelling changes the VM's future: its lock decides
                check_unlocked(row, caller())
            if running_job:
                # The controller aborts the job and then finishes the operation
                # as cancelled (or succeeded, if it ended before the abort).
                self.store.update_operation(op_id, params={**op["params"], "cancel": True})
                if row is not None:
                    self.store.add_event(
                        "cancel-requested", f"{op['kind']}: cancel requested", row, op_id
                    )
            else:
                self.store.update_operation(
                    op_id,
                    status=OpStatus.CANCELLED,
                    error="cancelled by request",
                    finished=self.clock(),
                )
                if row is not None:
                    self.store.add_event("cancelled", f"{op['kind']} cancelled", row, op_id)
                if op["kind"] == OpKind.SNAPSHOT and op["params"].get("snapshot"):
                    # never taken: its record says so (and may be deleted)
                    self.store.update_snapshot(op["params"]["snapshot"],
                                               state=SnapshotState.FAILED,
                                               error="cancelled by request")
            if copy and row is not None:
                self._drop_new_vm(row)
        self.notify()
        return self.store.get_operation(op_id)

    def _drop_new_vm(self, row: Row) -> None:
        """A clone or a restore into a new VM that is cancelled leaves no half VM:
        the new VM is deleted as delete_vm deletes one (its DELETE operation runs
        once the cancelled copy has ended and removed its partial files; the
        delete handler removes the folder, the address lease, the record)."""
        if row["desired_state"] == DesiredState.DELETED:
            return
        self._supersede(row)
        self.store.update_vm(row["id"], desired_state=DesiredState.DELETED)
        self.store.add_event("deleting", "its creation was cancelled: the VM is deleted", row)
        self._new_op(row, OpKind.DELETE, {"force": True, "by": "cancel"})

    # -- events -------------------------------------------------------------------------
    def list_events(
        self,
        vm: str | None = None,
        since: int = 0,
        limit: int = 1000,
        all_projects: bool = False,
        user: str | None = None,
    ) -> list[Row]:
        """The events of the caller's project and the appliance's own (hosts,
        images); every project's for an admin's all_projects; one VM's (of the
        caller's project) with `vm`; of what one user did with `user` (the actor).
        The events of users, tokens and projects (ADMIN_EVENTS) are an admin's alone."""
        project = self._listed_project(all_projects)
        vm_id = self.vm_row(vm)["id"] if vm else None
        return self.store.list_events(vm_id, since, limit, project=project, actor=user or None,
                                      admin_events=caller().is_admin)
