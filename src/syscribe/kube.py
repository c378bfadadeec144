"""What every part that talks to Kubernetes shares: client configuration, one-line errors, backoff, and
a list+watch loop that keeps a local cache current.

`ListWatch` lists a resource (paged), then watches it from the list's resourceVersion, resuming each
watch from the newest version it saw (bookmarks keep that version fresh). When the server has forgotten
that version (410 Gone) it lists again. Errors never end it: it says what went wrong once per outage
through `report`, retries with backoff, and says so again when the API answers. Objects arrive as the
JSON the server sent (dicts), never as the client's models: parsing validates every field of every
object, and one the models reject would break the watch for good.

The enricher (pod labels) and the controller (ProfileRecordings, SeccompProfiles) both use it. The
kubernetes client is imported only when something is made, so importing this module costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

MAX_TEXT = 1024  # longer than any name, uid, resourceVersion or label Kubernetes accepts

Report = Callable[[str, str], None]


class KubeConfigError(RuntimeError):
    """No usable cluster configuration; the message says what was tried."""


def text(value: object) -> str | None:
    """`value` if it is a non-empty string of a sane length, else None."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TEXT else None


def resource_version(obj: object) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return text(meta.get("resourceVersion")) if isinstance(meta, dict) else None


# --- errors -------------------------------------------------------------------------------------


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


def one_line(err: BaseException) -> str:
    """What went wrong talking to the API, in one line: the HTTP status, the socket error, or the type."""
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None)
    if status is not None:
        return f"API answered {status} {reason or ''}".strip()
    cause = _os_error(err)
    if cause is not None:
        return f"cannot connect: {cause.strerror}"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first}"[:300]


def status_of(err: BaseException) -> int | None:
    """The HTTP status of an API error, None for anything else (network, timeouts)."""
    status = getattr(err, "status", None)
    return status if isinstance(status, int) and status > 0 else None


def is_retryable(err: BaseException) -> bool:
    """Worth trying again later: the server is away, busy or slow. 4xx other than 408/409/429 is final."""
    status = status_of(err)
    return status is None or status in (408, 409, 429) or status >= 500


@dataclass(slots=True)
class Backoff:
    """Exponential backoff between `low` and `high` seconds; `reset()` after a success."""

    low: float = 0.5
    high: float = 30.0
    current: float = 0.0

    def next(self) -> float:
        self.current = self.low if self.current == 0 else min(self.current * 2, self.high)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


# --- client configuration -----------------------------------------------------------------------


def api_client_from_environment(kubeconfig: str | None = None) -> Any:
    """A kubernetes ApiClient: in-cluster service account first (a pod), else the kubeconfig."""
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
        raise KubeConfigError(f"no usable Kubernetes configuration in {where}: {one_line(err)}") from None


def host_of(api_client: Any) -> str:
    return str(getattr(getattr(api_client, "configuration", None), "host", "?"))


# --- list + watch -------------------------------------------------------------------------------


@dataclass(slots=True)
class WatchStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    expired: int = 0  # 410 Gone: the watch's resourceVersion was too old, relisted
    errors: int = 0
    last_error: str | None = None


class ListWatch:
    """Lists then watches one resource in a thread, handing the objects to `on_list` (the whole list,
    replacing what was known) and `on_event` (ADDED, MODIFIED, DELETED). Both run in the thread, under
    no lock of ours: the caller guards its own cache. `start()` then `stop()`."""

    def __init__(
        self,
        list_func: Callable[..., Any],
        *,
        what: str,
        host: str,
        on_list: Callable[[list[object]], None],
        on_event: Callable[[str, object], None],
        list_kwargs: dict[str, Any] | None = None,
        watch_timeout: int = 300,
        request_timeout: float = 30.0,
        page_size: int = 500,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        report: Report | None = None,
        describe_kept: Callable[[bool], str] | None = None,
    ) -> None:
        self.stats = WatchStats()
        self.what = what
        self._list_func = list_func
        self._kwargs = dict(list_kwargs or {})
        self._host = host
        self._on_list = on_list
        self._on_event = on_event
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        self._page_size = page_size
        self._backoff = Backoff(retry_min, retry_max)
        self._report = report
        self._describe_kept = describe_kept or (lambda synced: "what was listed is kept" if synced else "")
        self._failing = False  # since the last success: one report per outage, not one per retry
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def alive(self) -> bool:
        """Whether its thread runs (started and not yet stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.what}", daemon=True)
        self._thread.start()

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

    # the loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._follow(version)
                self._backoff.reset()
            # The thread must outlive whatever the client or the network throws; it says what and retries.
            except Exception as err:
                if status_of(err) == 410:  # the server no longer has our version: start over from a list
                    with self._stats_lock:
                        self.stats.expired += 1
                    version = None
                    continue
                self._failed(err)

    def _failed(self, err: BaseException) -> None:
        if self._stop.is_set():
            return
        with self._stats_lock:
            self.stats.errors += 1
            self.stats.last_error = one_line(err)
        if not self._failing:
            self._failing = True
            if self._report is not None:
                kept = self._describe_kept(self.synced())
                self._report(
                    "kube_unreachable",
                    f"Kubernetes API at {self._host}: {one_line(err)}; {kept} until it answers (retrying)"
                    if kept
                    else f"Kubernetes API at {self._host}: {one_line(err)} (retrying)",
                )
        self._stop.wait(self._backoff.next())

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            if self._report is not None:
                self._report("kube_recovered", f"Kubernetes API answers again: {self.what} are current")

    def _list(self) -> str:
        items: list[object] = []
        token: str | None = None
        while True:
            response = self._list_func(
                **self._kwargs,
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
                raise ValueError(f"the {self.what} list is not a list")
            items.extend(doc["items"])
            meta = doc.get("metadata")
            if not isinstance(meta, dict):
                raise ValueError(f"the {self.what} list has no metadata")
            token = text(meta.get("continue"))
            if token is None:
                version = text(meta.get("resourceVersion"))
                if version is None:
                    raise ValueError(f"the {self.what} list has no resourceVersion")
                break
        self._on_list(items)
        with self._stats_lock:
            self.stats.lists += 1
        self._synced.set()
        self._answered()
        return version

    def _follow(self, version: str) -> str:
        """Watch from `version` until the server ends the watch; return the newest version seen."""
        stream = _raw_watch()
        self._watch = stream
        if self._stop.is_set():
            return version
        with self._stats_lock:
            self.stats.watches += 1
        try:
            for event in stream.stream(
                self._list_func,
                **self._kwargs,
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
                    self._on_event(kind, obj)
                    with self._stats_lock:
                        self.stats.events += 1
        finally:
            stream.stop()
            self._watch = None
        return version


def _raw_watch() -> Any:
    """A kubernetes Watch that hands events over as JSON, unparsed into the client's models (the client's
    own `deserialize=False` cannot read ERROR events, so 410 would go unseen)."""
    from kubernetes import watch

    class RawWatch(watch.Watch):
        def get_return_type(self, func: object) -> None:
            return None

    make: Any = RawWatch  # the base class has no type hints
    return make()
