"""The service: the only way to change anything, and where every rule lives.

REST resources and the FUSE operations translate a path and a verb into one
call here, and this package's exceptions into a status or an errno. A write
records the desired state and an operation in one transaction, nudges the
controller, and (by default) waits for the operation to finish.

One module per responsibility, each a part of `Service`: vms (create, change,
rename, delete, consoles; on top of templates: global and project templates,
and networks: the appliance's nat, isolated and bridge networks),
state (desired states, claims at start),
operations (and events), migration (one VM, and the drain of a host), hosts,
groups, images, readiness, access (users and tokens), projects (and their
quotas), locks, consoles (the console broker's targets, input, screenshots),
tickets (console tickets), snapshots, backups and backup_targets, restores
(clones, restores), pools (replica pools), shapes (rebuild),
disks (data disks and CD-ROM drives one at a time), adoption (libvirt domains
adopted, VMs exported as KubeVirt manifests). base holds what
they share. (The files of VM and host directories are appliance/files.py's
table, which calls these.)
"""

from appliance.service.access import Access
from appliance.service.adoption import Adoption
from appliance.service.backup_targets import BackupTargets
from appliance.service.backups import Backups
from appliance.service.base import is_ready, observed_state
from appliance.service.consoles import Consoles
from appliance.service.disks import Disks
from appliance.service.groups import Groups
from appliance.service.hosts import Hosts
from appliance.service.images import Images
from appliance.service.locks import Locks
from appliance.service.migration import reachable_from_peers
from appliance.service.operations import Operations
from appliance.service.pools import Pools
from appliance.service.projects import Projects
from appliance.service.readiness import Readiness
from appliance.service.restores import Restores
from appliance.service.shapes import Rebuilds
from appliance.service.snapshots import Snapshots
from appliance.service.state import StateChanges
from appliance.service.templates import DEFAULT_TEMPLATE
from appliance.service.tickets import Tickets
from appliance.service.vms import VMs

__all__ = ["DEFAULT_TEMPLATE", "Service", "is_ready", "observed_state", "reachable_from_peers"]


class Service(VMs, StateChanges, Operations, Hosts, Groups, Images, Readiness, Access,
              Projects, Locks, Tickets, Consoles, Snapshots, Backups, BackupTargets,
              Restores, Pools, Rebuilds, Disks, Adoption):
    """Every rule of the appliance, one call per request (the parts: see above)."""
