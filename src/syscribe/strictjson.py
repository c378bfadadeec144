"""JSON as syscribe reads it from outside: a duplicate key or NaN/Infinity is an error, not a guess.

Parsers disagree on which of two duplicate keys wins, so a document with one could mean one thing to
syscribe and another to a runtime reading the same file. Pure; stdlib only (the hook imports it).
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not typing's: importing typing costs the hook several ms
if TYPE_CHECKING:
    from typing import Any


def loads(text: str | bytes) -> Any:
    """json.loads, refusing duplicate keys and non-standard constants with a ValueError that says so."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Where, not what: the file may not be the JSON it was meant to be, and its bytes are not
            # ours to print (a CLI run as root on someone else's file).
            first = next(i for i, (k, _v) in enumerate(pairs) if k == key)
            again = next(i for i, (k, _v) in enumerate(pairs) if k == key and i > first)
            raise ValueError(f"a key appears twice in one object (its keys {first + 1} and {again + 1})")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")
