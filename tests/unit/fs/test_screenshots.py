"""fs/screenshots.py: one screenshot serves a stat and an open within FRESH_SECONDS, and
what the mount keeps of them is bounded in bytes (a guest chooses its screen's size)."""
from __future__ import annotations

import pytest

from appliance.errors import Conflict
from fs import screenshots
from fs.screenshots import Screenshots


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _maker(data: bytes, calls: list[bytes]):
    def make() -> bytes:
        calls.append(data)
        return data
    return make


def test_a_fresh_snapshot_is_served_again_and_a_stale_one_is_taken_anew():
    clock, calls = Clock(), []
    kept = Screenshots(clock)
    assert kept.take(("vm1", "screen.png"), _maker(b"one", calls)) == b"one"
    clock.now += screenshots.FRESH_SECONDS / 2
    assert kept.take(("vm1", "screen.png"), _maker(b"two", calls)) == b"one"
    assert kept.size(("vm1", "screen.png"), _maker(b"two", calls)) == 3
    clock.now += screenshots.FRESH_SECONDS
    assert kept.take(("vm1", "screen.png"), _maker(b"three", calls)) == b"three"
    assert calls == [b"one", b"three"]


def test_a_listing_shows_the_last_size_and_takes_none():
    clock, calls = Clock(), []
    kept = Screenshots(clock)
    assert kept.size(("vm1", "screen.png")) == 0
    kept.take(("vm1", "screen.png"), _maker(b"x" * 10, calls))
    clock.now += 3600
    assert kept.size(("vm1", "screen.png")) == 10 and calls == [b"x" * 10]


def test_a_refusal_is_size_0_at_stat_and_raised_at_open():
    def stopped() -> bytes:
        raise Conflict("web1 is stopped: start it first", "state")

    kept = Screenshots(Clock())
    assert kept.size(("vm1", "screen.png"), stopped) == 0
    with pytest.raises(Conflict):
        kept.take(("vm1", "screen.png"), stopped)


def test_what_is_kept_is_bounded_in_bytes(monkeypatch):
    monkeypatch.setattr(screenshots, "KEPT_BYTES", 100)
    clock, calls = Clock(), []
    kept = Screenshots(clock)
    for index in range(10):
        kept.take((f"vm{index}", "screen.png"), _maker(bytes([index]) * 40, calls))
        assert sum(len(data) for _, data in kept._taken.values()) <= 100  # noqa: SLF001
    assert sorted(kept._taken) == [("vm8", "screen.png"), ("vm9", "screen.png")]  # noqa: SLF001
    # One larger than the bound is served, not kept; its size is.
    assert kept.take(("big", "screen.png"), _maker(b"b" * 101, calls)) == b"b" * 101
    assert ("big", "screen.png") not in kept._taken  # noqa: SLF001
    assert kept.size(("big", "screen.png")) == 101
    # Stale ones go at the next screenshot, whatever their size.
    clock.now += screenshots.FRESH_SECONDS + 1
    kept.take(("vm0", "screen.png"), _maker(b"z", calls))
    assert list(kept._taken) == [("vm0", "screen.png")]  # noqa: SLF001
