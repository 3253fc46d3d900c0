"""The policy of the mount: each request's caller (fs/identity.py) against the
one policy table REST is decided by (appliance/access/policy.py: the file
tables for writes, MOUNT_CHANGES for mkdir, rmdir, mv, creating and removing;
READ for reading anything).

A refusal is EACCES, with nothing changed, and a `refused` event naming who
asked, what, and why. Refused changes are recorded each time; refused reads
(an unmapped user's `ls -R` makes one per name) once per uid per
READ_REFUSALS_EVERY seconds, so that nobody can fill the event log by reading;
and so are the refused changes of a uid the map names no one for (it reaches
vms/ through the kernel's cache of the top directories, and has no account).
"""
from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable

import pyfuse3

from appliance.access import policy
from appliance.access.principal import ADMIN_EVENTS, Principal, Role, acting_as
from appliance.errors import NotFound
from appliance.service import Service
from fs import audit, limits
from fs.identity import SOURCE, Identities

log = logging.getLogger("vmctl.fs")

Path = tuple[str, ...]
READ_REFUSALS_EVERY = 60.0
READ_REFUSALS_KEPT = 1024  # uids remembered for that; forgotten all at once beyond
RunInThread = Callable[..., Awaitable[object]]


class Guard:
    def __init__(self, service: Service, identities: Identities, run: RunInThread,
                 clock: Callable[[], float] = time.monotonic):
        self.service = service
        self.identities = identities
        self.run = run  # a blocking call in a worker thread (the event's write)
        self.clock = clock
        self._read_refused: dict[int, float] = {}

    def who(self, ctx: pyfuse3.RequestContext) -> Principal | None:
        return self.identities.principal(ctx.uid, ctx.gid, ctx.pid)

    async def allow(self, ctx: pyfuse3.RequestContext, verb: str, path: Path,
                    decided_as: tuple[str, Path] | None = None) -> Principal:
        """The caller, if the policy lets them `verb` path; EACCES (and an event) if not.
        decided_as: the (verb, path) the policy decides it as (an editor's temporary file:
        fs/scratch.py), when not its own."""
        principal = self.who(ctx)
        if principal is not None and len(path) >= 2 and path[0] == "projects":
            # projects/P/...: decided by the caller's role in P, not in their default
            # project (a group's operators may be another group's viewers in P).
            principal = principal.in_project(path[1])
        rule_verb, rule_path = decided_as or (verb, path)
        action = policy.mount_action(rule_path, rule_verb)
        if principal is not None and action is not None and policy.allows(principal.role, action):
            return principal
        if principal is None:
            reason = f"uid {ctx.uid} (gid {ctx.gid}) has no entry in the mount's map"
        elif action is None:
            reason = "no policy allows this to anyone"
        else:
            reason = (f"the role {principal.role} may not {action} "
                      f"(needs {policy.least_role(action)})")
        audit.refused_by_policy()  # this event is the write's record in the audit trail
        await self._refused(principal, ctx.uid, verb, path, reason)
        raise pyfuse3.FUSEError(errno.EACCES)

    async def _refused(self, principal: Principal | None, uid: int, verb: str, path: Path,
                       reason: str) -> None:
        # An unmapped uid has no account to answer for its requests: like everyone's
        # refused reads, its refused changes are recorded once per READ_REFUSALS_EVERY.
        if (verb == "read" or principal is None) and not self._first_read_refusal(uid):
            return
        actor = principal or Principal(user=f"unix:{uid}", role=Role.MONITOR, projects=(),
                                       uid=uid, source=SOURCE, project="")
        shown = limits.excerpt(repr("/".join(path))[1:-1])  # control characters escaped
        # The audit's shape (fs/audit.py, README "Audit"): the event names who (its
        # actor and credential), the message what was tried, the result why.
        message = f"{verb} {shown}"
        log.info("refused: %s may not %s in the mount: %s", actor.who(), message, reason)
        try:
            await self.run(self._record, actor, path, message, f"EACCES Forbidden: {reason}")
        except Exception:  # the refusal stands (EACCES) whether or not it was recorded
            log.exception("could not record a refusal")

    def _record(self, actor: Principal, path: Path, message: str, result: str) -> None:
        with acting_as(actor):
            vm = None
            if actor.project and len(path) >= 2 and path[0] == "vms":
                try:  # the VM's own events show it too, when the caller may see the VM
                    vm = self.service.store.get_vm(path[1], actor.project, with_xml=False)
                except NotFound:
                    vm = None
            # An unmapped caller has no project: their refusals are the admins' to read.
            self.service.store.add_event("refused", message, vm,
                                         project=actor.project or ADMIN_EVENTS, result=result)

    def _first_read_refusal(self, uid: int) -> bool:
        now = self.clock()
        last = self._read_refused.get(uid)
        if last is not None and now - last < READ_REFUSALS_EVERY:
            return False
        if len(self._read_refused) >= READ_REFUSALS_KEPT:
            self._read_refused.clear()
        self._read_refused[uid] = now
        return True


def makes_names(directory: Path) -> bool:
    """Whether anyone may make, remove or rename names in this directory (its mode)."""
    child = directory + ("NAME",)
    return any(policy.mount_action(child, verb) is not None
               for verb in ("mkdir", "rmdir", "rename", "create", "unlink"))
