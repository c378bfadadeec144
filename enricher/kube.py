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

import orjson

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
MAX_LABELS = 1024
MAX_TEXT = 1024  # longer than any name, uid or label Kubernetes accepts


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


class KubeConfigError(RuntimeError):
    """No usable cluster configuration; the message says what was tried."""


# --- pure core: a pod object -> PodMeta, and the cache -------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TEXT else None


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


def resource_version(obj: object) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return _text(meta.get("resourceVersion")) if isinstance(meta, dict) else None


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


# --- the shell: list + watch in a thread --------------------------------------------------------------------


@dataclass(slots=True)
class KubeStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    expired: int = 0  # 410 Gone: the watch's resourceVersion was too old, relisted
    errors: int = 0
    last_error: str | None = None


def _os_error(err: BaseException) -> OSError | None:
    """The socket error under the HTTP client's wrappers (urllib3 keeps it as `reason` or as the cause)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [err]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if any(current is other for other in seen):
            continue
        seen.append(current)
        if isinstance(current, OSError) and current.strerror:
            return current
        for inner in (getattr(current, "reason", None), current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                todo.append(inner)
    return None


def _one_line(err: BaseException) -> str:
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None)
    if status is not None:
        return f"API answered {status} {reason or ''}".strip()
    cause = _os_error(err)
    if cause is not None:
        return f"cannot connect: {cause.strerror}"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:300]


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
        report: Callable[[str, str], None] | None = None,
    ) -> None:
        from kubernetes import client

        if not node_name or "," in node_name or "=" in node_name:
            raise ValueError(f"not a node name: {node_name!r}")
        self.node_name = node_name
        self.stats = KubeStats()
        self._api = client.CoreV1Api(api_client)
        self._host = str(getattr(getattr(api_client, "configuration", None), "host", "?"))
        self._selector = f"spec.nodeName={node_name}"
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        self._page_size = page_size
        self._retry = (retry_min, retry_max)
        self._clock = clock
        self._report = report
        self._failing = False  # since the last success: one report per outage, not one per retry
        self._index = PodIndex(keep_deleted)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    # PodLabelSource ------------------------------------------------------------------------------------

    def pod(self, pod_uid: str) -> PodMeta | None:
        with self._lock:
            return self._index.get(pod_uid)

    def labels(self, pod_uid: str) -> Mapping[str, str] | None:
        meta = self.pod(pod_uid)
        return meta.labels if meta is not None else None

    def synced(self) -> bool:
        return self._synced.is_set()

    # lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"pods-on-{self.node_name}", daemon=True)
        self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            # Shuts the watch's socket down, so a read blocked in it returns now. Again and again:
            # a watch whose request was still on its way had no socket to shut the first time.
            watch = self._watch
            if watch is not None:
                watch.stop()
            self._thread.join(0.05)

    def __enter__(self) -> KubePodSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the loop ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        delay = self._retry[0]
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._follow(version)
                delay = self._retry[0]
            except ApiException as err:
                if err.status == 410:  # the server no longer has our version: start over from a list
                    with self._lock:
                        self.stats.expired += 1
                    version = None
                    continue
                delay = self._failed(err, delay)
            # The thread must outlive whatever the client or the network throws; it says what and retries.
            except Exception as err:
                delay = self._failed(err, delay)

    def _failed(self, err: BaseException, delay: float) -> float:
        if self._stop.is_set():
            return delay
        with self._lock:
            self.stats.errors += 1
            self.stats.last_error = _one_line(err)
        if not self._failing:
            self._failing = True
            if self._report is not None:
                kept = "pods already listed keep their labels" if self.synced() else "no pod labels"
                self._report(
                    "kube_unreachable",
                    f"Kubernetes API at {self._host}: {_one_line(err)}; {kept} until it answers (retrying)",
                )
        self._stop.wait(delay)
        return min(delay * 2, self._retry[1])

    def _list(self) -> str:
        items: list[object] = []
        token: str | None = None
        # Raw JSON rather than the client's models: only four fields of each pod are kept.
        raw_list: Any = self._api.list_pod_for_all_namespaces
        while True:
            response = raw_list(
                field_selector=self._selector,
                limit=self._page_size,
                _continue=token,
                _preload_content=False,
                _request_timeout=self._request_timeout,
            )
            try:
                doc = orjson.loads(response.data)
            finally:
                response.release_conn()
            if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
                raise ValueError("the pod list is not a PodList")
            items.extend(doc["items"])
            meta = doc.get("metadata")
            if not isinstance(meta, dict):
                raise ValueError("the pod list has no metadata")
            token = _text(meta.get("continue"))
            if token is None:
                version = _text(meta.get("resourceVersion"))
                if version is None:
                    raise ValueError("the pod list has no resourceVersion")
                break
        with self._lock:
            self._index.reset(items, self._clock())
            self.stats.lists += 1
        self._synced.set()
        self._answered()
        return version

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            if self._report is not None:
                self._report("kube_recovered", "Kubernetes API answers again: pod labels are current")

    def _follow(self, version: str) -> str:
        """Watch from `version` until the server ends the watch; return the newest version seen."""
        stream = _raw_watch()
        self._watch = stream
        if self._stop.is_set():
            return version
        with self._lock:
            self.stats.watches += 1
        try:
            for event in stream.stream(
                self._api.list_pod_for_all_namespaces,
                field_selector=self._selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout,
                _request_timeout=(self._request_timeout, self._watch_timeout + self._request_timeout),
            ):
                if self._stop.is_set():
                    break
                self._answered()
                kind = event.get("type")
                obj = event.get("raw_object")
                version = resource_version(obj) or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    with self._lock:
                        self._index.apply(kind, obj, self._clock())
                        self.stats.events += 1
        finally:
            stream.stop()
            self._watch = None
        return version


def _raw_watch() -> Any:
    """A kubernetes Watch that hands events over as JSON, unparsed into the client's models: parsing
    validates every field of every pod, and one the models reject would break the watch for good (the
    client's own `deserialize=False` cannot read ERROR events, so 410 would go unseen)."""
    from kubernetes import watch

    class RawWatch(watch.Watch):
        def get_return_type(self, func: object) -> None:
            return None

    make: Any = RawWatch  # the base class has no type hints
    return make()


def api_client_from_environment(kubeconfig: str | None = None) -> Any:
    """A kubernetes ApiClient: in-cluster service account first (a DaemonSet), else the kubeconfig."""
    import yaml
    from kubernetes import client, config

    # The config module has no type hints.
    load_incluster: Any = config.load_incluster_config
    load_kubeconfig: Any = config.load_kube_config
    if kubeconfig is None:
        try:
            load_incluster()
            return client.ApiClient()
        except config.ConfigException:
            pass
    try:
        configuration = client.Configuration()
        load_kubeconfig(config_file=kubeconfig, client_configuration=configuration)
        return client.ApiClient(configuration)
    except (config.ConfigException, OSError, ValueError, yaml.YAMLError) as err:
        where = kubeconfig or "the in-cluster service account or ~/.kube/config"
        raise KubeConfigError(f"no usable Kubernetes configuration in {where}: {_one_line(err)}") from None
