"""JSON as syscribe reads it from outside: a duplicate key or NaN/Infinity is an error, not a guess.

Parsers disagree on which of two duplicate keys wins, so a document with one could mean one thing to
syscribe and another to a runtime reading the same file. Pure; stdlib only (the hook imports it).
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not typing's: importing typing costs the hook several ms
if TYPE_CHECKING:
    from typing import Any

_SHOWN = 60


def loads(text: str | bytes) -> Any:
    """json.loads, refusing duplicate keys and non-standard constants with a ValueError that says so."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            shown = key if len(key) <= _SHOWN else key[:_SHOWN] + "..."
            raise ValueError(f"key {shown!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
