"""A backup policy (pydantic v2, like the spec's parts): when the controller backs
a VM up, into which target, which backups retention keeps, how long an
incremental chain grows. A VM's spec may carry one (`backup`); a project's
(PATCH /v1/projects/P {"backup": ...}) applies to its VMs without one.

{"schedule": "daily 02:00", "target": "nas", "keep_daily": 7, "full_every": 6}
- schedule: appliance/backup_schedule.py's shapes (UTC); absent: no scheduled
  backups (the policy still names the target and chain length of manual ones);
- keep_*: Proxmox's prune-backups options (appliance/backup_retention.py); at
  least one is given (0 everywhere keeps everything, as in Proxmox);
- full_every: a new full backup after this many incrementals, so that retention
  can drop whole chains.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError, WithJsonSchema

from appliance import backup_schedule
from appliance.errors import Invalid
from appliance.model.fields import REFUSED, DnsName, refused, rule, says
from appliance.model.parts import _LeavesOutUnset

MAX_KEEP = 10_000  # backups per option: far beyond any disk, still a bound
DEFAULT_FULL_EVERY = 6
MAX_FULL_EVERY = 100
KEEP_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly")


def _schedule(value: Any, field: str) -> str:
    backup_schedule.parse(value, field)
    return str(value)


ScheduleText = Annotated[
    str,
    rule(_schedule),
    WithJsonSchema({
        "type": "string", "maxLength": backup_schedule.MAX_SCHEDULE,
        "pattern": backup_schedule.PATTERN,
        "description": backup_schedule.SHAPES,
    }),
]
Keep = Annotated[int, Field(strict=True, ge=0, le=MAX_KEEP),
                 says(f"must be a whole number from 0 to {MAX_KEEP}, or null")]
FullEvery = Annotated[int, Field(strict=True, ge=1, le=MAX_FULL_EVERY),
                      says(f"must be a whole number from 1 to {MAX_FULL_EVERY}")]


class BackupPolicy(_LeavesOutUnset):
    """When and where a VM is backed up, and which backups are kept."""

    not_an_object = "must be an object with a schedule and keep_* options, or null"
    schedule: ScheduleText | None = Field(None, description=(
        "when the controller backs the VM up (UTC); absent: only manual backups"))
    target: DnsName | None = Field(None, description=(
        "the backup target (GET /v1/backup-targets); absent: the only one there is"))
    keep_last: Keep | None = Field(None, description="keep the newest N")
    keep_hourly: Keep | None = Field(None, description="the newest of each of the last N hours")
    keep_daily: Keep | None = Field(None, description="the newest of each of the last N days")
    keep_weekly: Keep | None = Field(None, description="the newest of each of the last N "
                                                       "ISO weeks")
    keep_monthly: Keep | None = Field(None, description="the newest of each of the last N "
                                                        "months")
    full_every: FullEvery = Field(DEFAULT_FULL_EVERY, description=(
        "a full backup after this many incrementals"))

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if all(data.get(name) is None for name in KEEP_FIELDS):
            raise refused("needs at least one of " + ", ".join(KEEP_FIELDS))
        # null is "the default", as in the spec
        return {key: value for key, value in data.items() if value is not None}


def validate_policy(raw: Any, field: str = "backup") -> dict[str, Any] | None:
    """The stored form of a policy (null: none), or Invalid naming the first bad
    field below `field` ("backup.keep_daily")."""
    if raw is None:
        return None
    try:
        return BackupPolicy.model_validate(raw).model_dump()
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        context = first.get("ctx") or {}
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        reason = context["reason"] if first["type"] == REFUSED else first["msg"]
        raise Invalid(reason, field + path + context.get("at", "")) from None


def effective_policy(own: dict[str, Any] | None, project: dict[str, Any] | None
                     ) -> dict[str, Any] | None:
    """The policy a VM is backed up by: its own, else its project's (whole, not merged:
    a VM's policy says all it wants)."""
    return own if own is not None else project
