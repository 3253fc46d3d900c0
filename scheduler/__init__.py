"""Pure placement, nova-scheduler style: host states and a request in, a ranked and
explained choice out. No I/O, no libvirt, no database.

    from scheduler import HostState, Request, Group, Policy, schedule
    decision = schedule(hosts, Request("web1", cpus=2, memory_mib=2048), Policy.spread())
    decision.host, decision.explain(), decision.as_dict()

Modules: model (inputs), filters, weighers, decision (output), engine (schedule()).
"""
from scheduler.decision import Decision, NoValidHost, Rejection
from scheduler.engine import schedule
from scheduler.filters import FILTERS
from scheduler.model import Group, HostState, Policy, Request
from scheduler.weighers import WEIGHERS

__all__ = ["FILTERS", "WEIGHERS", "Decision", "Group", "HostState", "NoValidHost", "Policy",
           "Rejection", "Request", "schedule"]
