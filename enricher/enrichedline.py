"""The enriched line of an event (pure): what it holds, in which order, and which lines the filters let
through.

One JSON object per event, keys always present and always in the same order (null when unknown), so
that a consumer can rely on the shape. The first ten are the Security Profiles Operator enricher's
(`timestamp type node namespace pod container executable pid syscallID syscallName`), so pipelines
built for it keep working; then what it lacks (`arch action errno comm uid auid containerID podUID
runtime auditID recordType`); then the fields SPO writes for SELinux (`profile perm scontext tcontext
tclass`) or AppArmor (`apparmor operation profile name extra_info`) records; then `labels` (from the
optional API resolver). Unlike SPO, whose `timestamp` is the audit id string, `timestamp` here is the
record's time in RFC 3339 (UTC, milliseconds) and the audit id is in `auditID`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from syscribe.enricher.containers import ContainerInfo
from syscribe.enricher.events import AuditEvent

COMMON_KEYS = (
    "timestamp", "type", "node", "namespace", "pod", "container", "executable", "pid", "syscallID",
    "syscallName", "arch", "action", "errno", "comm", "uid", "auid", "containerID", "podUID", "runtime",
    "auditID", "recordType",
)
SELINUX_KEYS = ("profile", "perm", "scontext", "tcontext", "tclass", "permissive")
APPARMOR_KEYS = ("apparmor", "operation", "profile", "name", "extra_info")
KIND_KEYS: dict[str, tuple[str, ...]] = {"seccomp": (), "selinux": SELINUX_KEYS, "apparmor": APPARMOR_KEYS}
# What SPO puts in an AppArmor line's extra_info.
_APPARMOR_EXTRA = ("requested_mask", "denied_mask", "fsuid", "ouid", "target")
TYPES = ("seccomp", "selinux", "apparmor")


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as 2021-02-17T21:11:57.899Z (audit keeps milliseconds)."""
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    second = _second(whole)
    if second is None:
        return f"{seconds:.3f}"
    return f"{second}.{ms:03d}Z"


@lru_cache(maxsize=1)
def _second(whole: int) -> str | None:
    # Records come in bursts within one second: that second is formatted once.
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    except (OverflowError, OSError, ValueError):
        return None


def build_record(event: AuditEvent, info: ContainerInfo | None, node: str) -> dict[str, Any]:
    """The enriched line of an event as an ordered dict (keys in the documented order)."""
    arch = event.arch
    kind = event.kind
    if info is None:
        namespace = pod = container = container_id = pod_uid = runtime = None
    else:
        namespace, pod, container = info.namespace, info.pod, info.container_name
        container_id, pod_uid, runtime = info.container_id, info.pod_uid, info.runtime
    record: dict[str, Any] = {
        "timestamp": rfc3339(event.timestamp),
        "type": kind,
        "node": event.node or node,
        "namespace": namespace,
        "pod": pod,
        "container": container,
        "executable": event.exe,
        "pid": event.pid,
        "syscallID": event.syscall,
        "syscallName": event.syscall_name,
        "arch": arch.name if arch is not None else None,
        "action": event.action,
        "errno": event.errno,
        "comm": event.comm,
        "uid": event.uid,
        "auid": event.auid,
        "containerID": container_id,
        "podUID": pod_uid,
        "runtime": runtime,
        "auditID": event.audit_id,
        "recordType": event.record_type,
    }
    if kind != "seccomp":
        details = event.details
        if kind == "selinux":
            record["profile"] = None
            for key in SELINUX_KEYS[1:]:
                record[key] = details.get(key)
        elif kind == "apparmor":
            record["apparmor"] = details.get("apparmor") or event.action
            record["operation"] = details.get("operation")
            record["profile"] = details.get("profile")
            record["name"] = details.get("name")
            extra = " ".join(f"{k}={details[k]}" for k in _APPARMOR_EXTRA if details.get(k))
            record["extra_info"] = extra or None
    record["labels"] = dict(info.labels) if info is not None and info.labels else {}
    return record


def encode(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events are written. An empty set lets everything through."""

    namespaces: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, namespaces: Iterable[str] = (), types: Iterable[str] = (), actions: Iterable[str] = ()
    ) -> Filter:
        bad = sorted(set(types) - set(TYPES))
        if bad:
            raise ValueError(f"unknown event type {bad[0]!r}; use {', '.join(TYPES)}")
        return cls(frozenset(namespaces), frozenset(types), frozenset(a.lower() for a in actions))

    @property
    def empty(self) -> bool:
        return not (self.namespaces or self.types or self.actions)

    def accepts(self, record: Mapping[str, Any]) -> bool:
        if self.types and record.get("type") not in self.types:
            return False
        if self.namespaces and record.get("namespace") not in self.namespaces:
            return False
        if self.actions:
            action = record.get("action")
            if not isinstance(action, str) or action.lower() not in self.actions:
                return False
        return True
