"""JSON from users: parsed with bounds on nesting, and values quoted short.

Python's json module recurses once per nesting level: a body of 100,000 `[`
raised RecursionError, which surfaced as a 500 (issue 9, finding 12). Every
JSON document that comes from a user (REST bodies, spec.json and other files
written in the mount) is parsed here, and anything nested deeper than
MAX_DEPTH is refused as malformed (HTTP 400, EINVAL).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MAX_DEPTH = 32


class TooDeep(ValueError):
    """Valid JSON, but nested deeper than a spec ever is (a ValueError, as json's own errors)."""


def depth_exceeds(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether data nests lists and objects more than limit levels deep (iteratively: no
    recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """json.loads, refusing documents nested deeper than limit with TooDeep."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise TooDeep(f"nested deeper than {limit} levels") from None
    if depth_exceeds(data, limit):
        raise TooDeep(f"nested deeper than {limit} levels")
    return data


def shown(value: Any, limit: int = 60) -> str:
    """A user's value for an error message: repr'd and cut short, never echoed at length."""
    text = repr(value)
    return (
        text
        if len(text) <= limit
        else text[: limit - 5] + "...'" + f" ({len(str(value))} characters)"
    )
