"""SQLite, the source of truth: the only module with SQL. One typed function
per question the rest of the appliance asks; every value a bound parameter.

base.py: connections, transactions, migrations (schema.py), meta; vms.py,
operations.py, events.py, inventory.py (hosts, images, server groups),
access.py (projects, users, tokens, Unix identities), tickets.py (console
tickets), snapshots.py, backups.py (backup targets and backups), templates.py,
networks.py, keys.py: one table's records each; aggregates.py: sums and counts across tables;
claims.py: the per-host claim totals SQLite's triggers keep current.
"""

from appliance.store.access import AccessRecords
from appliance.store.aggregates import Aggregates
from appliance.store.backup_schedules import BackupScheduleRecords
from appliance.store.backups import BackupRecords
from appliance.store.base import Row
from appliance.store.events import EventRecords
from appliance.store.inventory import GroupRecords, HostRecords, ImageRecords
from appliance.store.keys import KeyRecords
from appliance.store.networks import NetworkRecords
from appliance.store.operations import OperationRecords
from appliance.store.pools import PoolRecords
from appliance.store.schema import MIGRATIONS
from appliance.store.snapshots import SnapshotRecords
from appliance.store.templates import TemplateRecords
from appliance.store.tickets import TicketRecords
from appliance.store.vms import VMRecords

__all__ = ["MIGRATIONS", "Row", "Store"]


class Store(
    VMRecords,
    OperationRecords,
    EventRecords,
    HostRecords,
    ImageRecords,
    GroupRecords,
    AccessRecords,
    TicketRecords,
    BackupScheduleRecords,
    SnapshotRecords,
    Aggregates,
    BackupRecords,
    TemplateRecords,
    PoolRecords,
    NetworkRecords,
    KeyRecords,
):
    """The store: one connection per thread to one SQLite file, and every
    table's records (each mixin reads and writes one table)."""
