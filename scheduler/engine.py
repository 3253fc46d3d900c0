"""``schedule()``: filter, weigh, pick among the best, as nova's FilterScheduler does.

1. Filters (scheduler.filters): every host is tested against the request; a rejected
   host keeps the first filter it failed, to explain the decision.
2. Weighers (scheduler.weighers): the passing hosts are weighed per the Policy.
3. Pick: at random among the best ``policy.subset_size`` hosts (nova's
   host_subset_size); hosts tied at the top are always picked at random (nova's
   shuffle_best_same_weighed_hosts), so identical hosts share the load.

No I/O: host states and a request in, a Decision out.
"""
from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from scheduler.decision import Decision
from scheduler.model import HostState, Policy, Request
from scheduler.partition import partition
from scheduler.weighers import soft_members, weigh

DEFAULT_POLICY = Policy()
_RANDOM = random.Random()  # noqa: S311 - spreads placements (Nova's host_subset_size), not a secret


def _pick(hosts: list[HostState], weights: list[float], subset_size: int,
          rng: random.Random) -> int:
    """Index in ``hosts`` of the chosen one (``hosts`` is not empty; ``weights`` are the
    hosts' weights or their scores: the same up to a constant)."""
    if subset_size == 1:
        top = max(weights)
        first = weights.index(top)
        try:  # another host as good? one scan of the rest (count() would scan them all)
            weights.index(top, first + 1)
        except ValueError:
            return first  # the usual case, with no Python-level loop
        return rng.choice([i for i, w in enumerate(weights) if w == top])
    if len(hosts) <= subset_size:
        return rng.randrange(len(hosts))
    # The pool: every host strictly better than the subset_size-th best weight, filled up
    # with a random sample of the hosts tied at that weight.
    threshold = heapq.nlargest(subset_size, weights)[-1]
    above = [i for i, w in enumerate(weights) if w > threshold]
    tied = [i for i, w in enumerate(weights) if w == threshold]
    pool = above + rng.sample(tied, subset_size - len(above))
    return rng.choice(pool)


def schedule(hosts: Sequence[HostState], request: Request, policy: Policy = DEFAULT_POLICY,
             rng: random.Random | None = None) -> Decision:
    """Choose a host for ``request`` among ``hosts``; ``Decision.host`` is None if none fits.

    ``rng`` makes the pick reproducible (tests); by default a module-level Random.
    """
    passed, rejected, failed, ranges = partition(hosts, request, soft_members(request, policy))
    if not passed:
        return Decision(request, None, passed, [], 0.0, rejected, failed)
    scores, offset = weigh(passed, request, policy, ranges)
    i = _pick(passed, scores, policy.subset_size, rng or _RANDOM)
    return Decision(request, i, passed, scores, offset, rejected, failed)
