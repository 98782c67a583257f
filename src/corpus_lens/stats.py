"""Named, mergeable counters: nested dicts of numbers that add up across batches and shards."""

from __future__ import annotations

from typing import Any


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Add two nested counter dicts: numbers add, dicts merge, lists concatenate.

    Example:
        >>> merge({"docs": 1, "label": {"none": 2}}, {"docs": 3, "label": {"none": 1, "neutral": 1}})
        {'docs': 4, 'label': {'none': 3, 'neutral': 1}}
    """
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, list):
            out[key] = out[key] + value
        else:
            out[key] = out[key] + value
    return out


def bump(counter: dict[str, Any], *path: str, by: float = 1) -> None:
    """Add ``by`` at a nested path, creating levels as needed."""
    for key in path[:-1]:
        counter = counter.setdefault(key, {})
    counter[path[-1]] = counter.get(path[-1], 0) + by
