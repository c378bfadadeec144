"""The OCI container state a runtime writes on a hook's stdin, parsed strictly.

Pure (no I/O). runc writes `{"ociVersion","id","status":"creating","pid","bundle","annotations"}` at
prestart; crun writes `"status":"created"` and adds `"root"`. Unknown fields are ignored (the spec may
add some); the fields syscribe uses must have their types, and the document is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

from syscribe import strictjson
from syscribe.hooks.record import Record

TYPE_CHECKING = False  # not typing's: importing typing costs the hook several ms
if TYPE_CHECKING:
    from typing import Any

MAX_STATE_BYTES = 1 << 20
# The statuses a runtime reports while prestart hooks run (runc: creating, crun: created).
PRESTART_STATUSES = ("creating", "created")
PID_MAX = 1 << 22  # PID_MAX_LIMIT on 64-bit kernels
MAX_ID = 1024
MAX_ANNOTATIONS = 10_000


class StateError(ValueError):
    """The state on stdin is unusable; the message says what is wrong."""


# A named tuple, not a dataclass: see syscribe.hooks.record.
class State(Record):
    oci_version: str
    id: str
    status: str
    pid: int
    bundle: str
    annotations: Mapping[str, str] = MappingProxyType({})
    root: str | None = None


def parse_state(data: bytes) -> State:
    """The state from the bytes a runtime wrote; StateError names what is wrong."""
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"container state is {len(data)} bytes; more than {MAX_STATE_BYTES} are refused")
    if not data.strip():
        raise StateError("no container state on stdin; syscribe-hook is an OCI hook, run by the runtime")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateError(f"container state is not UTF-8 (byte {exc.start})") from None
    try:
        doc = strictjson.loads(text)
    except RecursionError:
        raise StateError("container state is nested too deeply to be an OCI state") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, numbers too long to convert
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise StateError(f"container state is not valid JSON: {_cut(reason)}") from None
    if not isinstance(doc, dict):
        raise StateError(f"container state is {_kind(doc)}, expected a JSON object")
    oci_version = _string(doc, "ociVersion", 64)
    container_id = _string(doc, "id", MAX_ID)
    if not container_id:
        raise StateError("container state has an empty id")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in container_id):
        raise StateError("container state id has control characters")
    status = _string(doc, "status", 64)
    if status not in PRESTART_STATUSES:
        raise StateError(
            f"container status is {status!r}, not {' or '.join(map(repr, PRESTART_STATUSES))}: "
            'syscribe-hook runs at prestart (hooks.d "stages": ["prestart"])'
        )
    pid = doc.get("pid")
    if "pid" not in doc:
        raise StateError("container state has no pid")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise StateError(f"container state pid is {_kind(pid)}, expected an integer")
    if not 0 < pid <= PID_MAX:
        raise StateError(f"container state pid {_cut(str(pid))} is out of range (1..{PID_MAX})")
    bundle = _string(doc, "bundle", 4096)
    root = doc.get("root")
    if root is not None and not isinstance(root, str):
        raise StateError(f"container state root is {_kind(root)}, expected a string")
    return State(
        oci_version=oci_version,
        id=container_id,
        status=status,
        pid=pid,
        bundle=bundle,
        annotations=MappingProxyType(_annotations(doc.get("annotations"))),
        root=root,
    )


def _annotations(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StateError(f"container state annotations are {_kind(value)}, expected an object")
    if len(value) > MAX_ANNOTATIONS:
        raise StateError(f"container state has {len(value)} annotations; more than {MAX_ANNOTATIONS}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise StateError(f"annotation {_cut(key)!r} is {_kind(item)}, expected a string")
    return dict(value)


def _string(doc: dict[str, Any], key: str, limit: int) -> str:
    if key not in doc:
        raise StateError(f"container state has no {key}")
    value = doc[key]
    if not isinstance(value, str):
        raise StateError(f"container state {key} is {_kind(value)}, expected a string")
    if len(value) > limit:
        raise StateError(f"container state {key} is {len(value)} characters; at most {limit}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _cut(text: str) -> str:
    return text if len(text) <= 60 else text[:60] + "..."
