"""Pod labels (and names) from the Kubernetes API: the optional second resolver.

The node already tells pod, namespace and container names (containers.py); what only the API knows is
a pod's labels. `KubePodSource` lists the pods of one node (`fieldSelector=spec.nodeName=NODE`) into a
local cache keyed by pod uid and keeps it current with a watch resumed from the last resourceVersion
(bookmarks keep that version fresh); when the server has forgotten that version (410 Gone) it lists
again. Lookups only read the cache: never one API call per audit record.

RBAC: `list` and `watch` on `pods` (core group), cluster wide (RBAC cannot grant a field selector).

The API server is not needed for the enricher to work (the node names pod, namespace and container):
when it is unreachable, at start or later, the source keeps what it has (pods already listed keep their
labels), retries with backoff, and says so once through `report` (and again when it answers).

The kubernetes client is imported only when a source is made, so importing this module (for the
`PodLabelSource` protocol) costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from syscribe import annotations as keys
from syscribe.kube import (
    MAX_TEXT,
    KubeConfigError,
    ListWatch,
    Report,
    api_client_from_environment,
    host_of,
    one_line,
    resource_version,
)
from syscribe.kube import WatchStats as KubeStats
from syscribe.kube import text as _text

__all__ = [
    "MAX_TEXT",
    "KubeConfigError",
    "KubePodSource",
    "KubeStats",
    "PodIndex",
    "PodLabelSource",
    "PodMeta",
    "api_client_from_environment",
    "mirror_of",
    "pod_meta",
    "resource_version",
]

MIRROR_ANNOTATION = keys.KUBE_MIRROR
MAX_LABELS = 1024


@dataclass(frozen=True, slots=True)
class PodMeta:
    uid: str
    name: str
    namespace: str
    labels: Mapping[str, str]


class PodLabelSource(Protocol):
    """What the container resolver asks of an API-backed pod cache. Implementations are thread-safe."""

    def labels(self, pod_uid: str) -> Mapping[str, str] | None:
        """The pod's labels, or None when the pod is not known."""

    def pod(self, pod_uid: str) -> PodMeta | None:
        """The pod's name, namespace and labels, or None when it is not known."""

    def synced(self) -> bool:
        """Whether the cache has been filled from the API at least once."""


# --- pure core: a pod object -> PodMeta, and the cache ------------------------------------------


def pod_meta(obj: object) -> PodMeta | None:
    """The fields we keep of a Pod (a JSON object as the API sends it); None if it is not a pod."""
    if not isinstance(obj, dict):
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    uid, name, namespace = _text(meta.get("uid")), _text(meta.get("name")), _text(meta.get("namespace"))
    if uid is None or name is None or namespace is None:
        return None
    raw = meta.get("labels")
    labels: dict[str, str] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if len(labels) >= MAX_LABELS:
                break
            if _text(key) is not None and isinstance(value, str) and len(value) <= MAX_TEXT:
                labels[key] = value
    return PodMeta(uid=uid, name=name, namespace=namespace, labels=labels)


def mirror_of(obj: object) -> str | None:
    """The uid of the static pod a mirror pod stands for: the one its cgroup and bundle carry."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return _text(annotations.get(MIRROR_ANNOTATION)) if isinstance(annotations, dict) else None


class PodIndex:
    """Pods by uid (and static pods by their own uid, through their mirror). Deleted pods are kept for
    `keep_deleted` seconds: the audit records of a pod that just went still arrive afterwards."""

    def __init__(self, keep_deleted: float = 300.0) -> None:
        self.keep_deleted = keep_deleted
        self._pods: dict[str, tuple[PodMeta, float | None]] = {}  # uid -> (meta, deleted at)
        self._aliases: dict[str, str] = {}  # static pod uid -> mirror pod uid

    def __len__(self) -> int:
        return len(self._pods)

    def _put(self, obj: object) -> None:
        meta = pod_meta(obj)
        if meta is None:
            return
        self._pods[meta.uid] = (meta, None)
        alias = mirror_of(obj)
        if alias is not None:
            self._aliases[alias] = meta.uid

    def _drop(self, obj: object, now: float) -> None:
        meta = pod_meta(obj)
        if meta is not None:
            known = self._pods.get(meta.uid)
            self._pods[meta.uid] = (known[0] if known else meta, now)

    def reset(self, items: Iterable[object], now: float) -> None:
        """A full list: its pods are the live ones; others become deleted (kept for a while)."""
        listed: set[str] = set()
        for obj in items:
            meta = pod_meta(obj)
            if meta is not None:
                listed.add(meta.uid)
                self._put(obj)
        for uid, (meta, deleted) in list(self._pods.items()):
            if uid not in listed and deleted is None:
                self._pods[uid] = (meta, now)
        self.expire(now)

    def apply(self, kind: str, obj: object, now: float) -> None:
        if kind in ("ADDED", "MODIFIED"):
            self._put(obj)
        elif kind == "DELETED":
            self._drop(obj, now)
        self.expire(now)

    def expire(self, now: float) -> None:
        gone = [
            uid
            for uid, (_m, deleted) in self._pods.items()
            if deleted is not None and now - deleted > self.keep_deleted
        ]
        for uid in gone:
            del self._pods[uid]
        if gone:
            self._aliases = {a: u for a, u in self._aliases.items() if u in self._pods}

    def get(self, uid: str) -> PodMeta | None:
        entry = self._pods.get(uid) or self._pods.get(self._aliases.get(uid, ""))
        return entry[0] if entry is not None else None


# --- the shell: list + watch in a thread --------------------------------------------------------

_one_line = one_line  # the name tests and older callers use


def _kept(synced: bool) -> str:
    return "pods already listed keep their labels" if synced else "no pod labels"


class KubePodSource:
    """A PodLabelSource backed by list+watch of the pods on `node_name`. `start()` then `stop()`."""

    def __init__(
        self,
        api_client: Any,
        node_name: str,
        *,
        watch_timeout: int = 300,
        request_timeout: float = 30.0,
        keep_deleted: float = 300.0,
        page_size: int = 500,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        report: Report | None = None,
    ) -> None:
        from kubernetes import client

        if not node_name or "," in node_name or "=" in node_name:
            raise ValueError(f"not a node name: {node_name!r}")
        self.node_name = node_name
        self._clock = clock
        self._index = PodIndex(keep_deleted)
        self._lock = threading.Lock()
        api = client.CoreV1Api(api_client)
        self._watch = ListWatch(
            api.list_pod_for_all_namespaces,
            what="pod labels",
            host=host_of(api_client),
            list_kwargs={"field_selector": f"spec.nodeName={node_name}"},
            on_list=self._listed,
            on_event=self._changed,
            watch_timeout=watch_timeout,
            request_timeout=request_timeout,
            page_size=page_size,
            retry_min=retry_min,
            retry_max=retry_max,
            report=report,
            describe_kept=_kept,
        )

    @property
    def stats(self) -> KubeStats:
        return self._watch.stats

    def _listed(self, items: list[object]) -> None:
        with self._lock:
            self._index.reset(items, self._clock())

    def _changed(self, kind: str, obj: object) -> None:
        with self._lock:
            self._index.apply(kind, obj, self._clock())

    # PodLabelSource ------------------------------------------------------------------------------

    def pod(self, pod_uid: str) -> PodMeta | None:
        with self._lock:
            return self._index.get(pod_uid)

    def labels(self, pod_uid: str) -> Mapping[str, str] | None:
        meta = self.pod(pod_uid)
        return meta.labels if meta is not None else None

    def synced(self) -> bool:
        return self._watch.synced()

    # lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._watch.start()

    def wait_synced(self, timeout: float) -> bool:
        return self._watch.wait_synced(timeout)

    def alive(self) -> bool:
        return self._watch.alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._watch.stop(timeout)

    def __enter__(self) -> KubePodSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
