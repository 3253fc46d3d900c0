"""What the scheduler answers: the chosen host, the ranking, and every rejection explained.

A Decision is cheap to make and rich to read: ``schedule`` stores the passing hosts
with their weights and, for each rejected host, only the index of the first filter it
failed. The ranking is sorted, and the rejection texts are written, the first time
someone asks (``ranked``, ``rejected``, ``explain()``, ``as_dict()``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from scheduler.filters import FILTERS, REASONS
from scheduler.model import HostState, Request


@dataclass(frozen=True)
class Rejection:
    """One host that could not take the request: the first filter it failed, and why."""

    host: str
    filter: str  # one of FILTERS
    reason: str  # human, with numbers


class NoValidHost(Exception):
    """No host fits the request (the service answers 409); ``str()`` is the explanation."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.explain())
        self.decision = decision


def _w(weight: float) -> str:
    return f"{weight:.2f}"


class Decision:
    """The outcome of one ``schedule()`` call.

    ``host``: the chosen host's name, or None when nothing fits.
    ``weight``: the chosen host's weight (None when nothing fits).
    ``ranked``: the hosts that passed, best first (ties by name), with their weights.
    ``rejected``: a Rejection for every other host, in the order the hosts were given.
    """

    __slots__ = ("_chosen", "_failed", "_offset", "_passed", "_ranked", "_rejected",
                 "_rejected_hosts", "_scores", "host", "request")

    def __init__(self, request: Request, chosen: int | None, passed: list[HostState],
                 scores: list[float], offset: float,
                 rejected_hosts: list[HostState], failed: list[int]) -> None:
        self.request = request
        self.host = None if chosen is None else passed[chosen].name
        self._chosen = chosen  # index in passed
        self._passed = passed
        self._scores = scores  # host i's weight is scores[i] + offset (see weighers.weigh)
        self._offset = offset
        # The rejected hosts and, in the same order, the index in FILTERS of the first filter
        # each failed: two lists the engine has already, not a tuple per rejected host.
        self._rejected_hosts = rejected_hosts
        self._failed = failed
        self._ranked: list[tuple[str, float]] | None = None
        self._rejected: list[Rejection] | None = None

    @property
    def weight(self) -> float | None:
        if self._chosen is None:
            return None
        return self._scores[self._chosen] + self._offset

    @property
    def vm(self) -> str:
        return self.request.vm

    @property
    def ranked(self) -> list[tuple[str, float]]:
        if self._ranked is None:
            off = self._offset
            pairs = [(h.name, s + off) for h, s in zip(self._passed, self._scores, strict=True)]
            pairs.sort(key=lambda p: (-p[1], p[0]))
            self._ranked = pairs
        return self._ranked

    @property
    def rejected(self) -> list[Rejection]:
        if self._rejected is None:
            req = self.request
            self._rejected = [Rejection(h.name, FILTERS[i], REASONS[i](h, req))
                              for h, i in zip(self._rejected_hosts, self._failed, strict=True)]
        return self._rejected

    def rejected_by(self) -> dict[str, int]:
        """How many hosts each filter rejected (cheap: no text), e.g. for metrics."""
        return dict(Counter(FILTERS[i] for i in self._failed))

    def raise_if_none(self) -> Decision:
        """Raise NoValidHost when nothing fits; otherwise return this decision."""
        if self.host is None:
            raise NoValidHost(self)
        return self

    def explain(self, max_rejected: int | None = None) -> str:
        """One line naming the chosen host and, for each rejected host, its filter and why.

        ``max_rejected`` bounds the rejections written out; the rest are counted by filter.
        """
        failed, hosts = self._failed, self._rejected_hosts
        if max_rejected is not None:
            hosts = hosts[:max_rejected]
        req = self.request
        parts = [f"{h.name} by {FILTERS[i]} ({REASONS[i](h, req)})"
                 for h, i in zip(hosts, failed, strict=False)]  # failed may be the longer
        rest = failed[len(hosts):]
        if rest:
            counts = Counter(FILTERS[i] for i in rest)
            parts.append(f"and {len(rest)} more (" +
                         ", ".join(f"{n} by {f}" for f, n in counts.most_common()) + ")")

        if self.host is None:
            if not failed:
                return f"no host fits {req.vm}: no hosts known"
            return f"no host fits {req.vm}: " + "; ".join(parts)

        # The runners-up: the best 3 other hosts. Sorting the bare scores is fast (floats
        # only); the 4th best is the cut, since the chosen host is at most one of the 4.
        scores, off = self._scores, self._offset
        cut = sorted(scores, reverse=True)[3] if len(scores) > 4 else float("-inf")
        top = sorted((-s, h.name) for h, s in zip(self._passed, scores, strict=True)
                     if s >= cut and h.name != self.host)[:3]  # ranked's order
        also = ", ".join(f"{name} {_w(off - neg)}" for neg, name in top)
        others = len(scores) - 1
        if others > len(top):
            also += f" and {others - len(top)} more"
        text = f"placed {req.vm} on {self.host} (weight {_w(self.weight or 0.0)}"
        text += f"; also {also})" if also else ")"
        if parts:
            text += "; rejected: " + ", ".join(parts)
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: {"vm", "host", "weight", "ranked": [...], "rejected": [...]}."""
        return {
            "vm": self.request.vm,
            "host": self.host,
            "weight": None if self.weight is None else round(self.weight, 6),
            "ranked": [{"host": h, "weight": round(w, 6)} for h, w in self.ranked],
            "rejected": [{"host": r.host, "filter": r.filter, "reason": r.reason}
                         for r in self.rejected],
        }

    def __repr__(self) -> str:
        return (f"Decision(vm={self.request.vm!r}, host={self.host!r}, "
                f"passed={len(self._passed)}, rejected={len(self._failed)})")
