"""The event log does not grow without end (security review of issue 11: every write
and every refusal of a caller with a token adds an event, and nothing removed any):
the controller keeps the newest config.events_kept."""
from __future__ import annotations

from appliance.controller.loop import EVENTS_PRUNE_SECONDS


def _fill(store, count: int) -> None:
    with store.transaction():
        for i in range(count):
            store.add_event("write", f"event {i}")


def test_prune_keeps_the_newest(store):
    _fill(store, 50)
    assert store.prune_events(20) == 30
    messages = [e["message"] for e in store.list_events(limit=100)]
    assert messages == [f"event {i}" for i in range(30, 50)]
    assert store.prune_events(20) == 0


def test_the_controller_cuts_the_log_back_every_few_minutes(store, config, stepped_controller):
    config.events_kept = 1000
    stepped_controller.tick()  # the first pass prunes (nothing yet beyond the kept)
    _fill(store, 1500)
    stepped_controller.ctx.clock.sleep(1)
    stepped_controller.tick()  # not due yet: nothing dropped
    assert len(store.list_events(limit=5000)) > 1500 - 1
    stepped_controller.ctx.clock.sleep(EVENTS_PRUNE_SECONDS)
    stepped_controller.tick()
    kept = store.list_events(limit=5000)
    assert len(kept) == 1000
    assert kept[-1]["message"] == "event 1499"
