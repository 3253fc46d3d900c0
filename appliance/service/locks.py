"""VM locks (Nova's lock): a locked VM refuses every change but its locker's
and an admin's (the rule: base.check_unlocked, applied in _vm_for_write)."""

from __future__ import annotations

from typing import Any

from appliance.access import caller
from appliance.errors import Invalid
from appliance.service.base import ServiceBase, lock_of

# A reason is one line a person reads in a refusal ("locked by alice: exam running").
MAX_LOCK_REASON = 200


def parse_reason(text: Any) -> str:
    """The reason of a lock, stripped; Invalid unless it is one printable line of at
    most MAX_LOCK_REASON characters. Empty means unlock (see Locks.set_lock)."""
    if not isinstance(text, str):
        raise Invalid("must be the lock's reason, as text", "lock")
    reason = text.strip()
    if len(reason) > MAX_LOCK_REASON:
        raise Invalid(f"a lock's reason has at most {MAX_LOCK_REASON} characters", "lock")
    if not reason.isprintable():
        raise Invalid("a lock's reason is one line of printable characters", "lock")
    return reason


class Locks(ServiceBase):
    def set_lock(self, name: str, reason: Any, if_match: int | None = None) -> dict | None:
        """Lock the VM with this reason (the locker: the caller), or unlock it when the
        reason is empty (what `echo > vms/NAME/lock` writes). Another user's lock
        refuses both unless the caller is an admin (_vm_for_write)."""
        text = parse_reason(reason)
        if not text:
            self.unlock_vm(name, if_match)
            return None
        who = caller()
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            lock: dict[str, Any] = {"locked_by": who.user, "lock_reason": text,
                                    "locked_at": self.clock()}
            # Not a spec change: the generation stays (a lock is not a new version of the VM).
            self.store.update_vm(row["id"], bump=False, **lock)
            self.store.add_event("locked", f"locked: {text}", row)
        return lock_of(lock)

    def unlock_vm(self, name: str, if_match: int | None = None) -> None:
        with self.store.transaction():
            row = self._vm_for_write(name, if_match, allow_deleting=True)
            lock = lock_of(row)
            if lock is None:
                return
            self.store.update_vm(row["id"], bump=False, locked_by=None, lock_reason=None,
                                 locked_at=None)
            self.store.add_event("unlocked", f"unlocked (was locked by {lock['by']}: "
                                             f"{lock['reason']})", row)

    def get_lock(self, name: str) -> dict | None:
        return lock_of(self.vm_row(name, with_xml=False))
