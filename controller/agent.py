"""`syscribe agent`: the node agent. Turns the hook's dumps into SeccompProfiles, and installs profiles.

One process per node (a DaemonSet). It watches the hook's output root (watchdog, plus a scan at start
and every `rescan` seconds, so that nothing written while it was down or missed by inotify is lost) for
dumps at `<root>/<namespace>/<recording>/<file>.json` with their `.meta.json` (syscribe.controller
.dumppath). For each complete dump it:

1. reads and checks it (syscribe.controller.dumps): a dump whose namespace, pod or container does not
   match its path, whose recording does not exist, or that cannot be read goes to the quarantine
   folder with a `.reason` file, and an Event on the recording when there is one;
2. creates or updates the cluster-scoped SeccompProfile `<recording>-<container>` (merge strategy
   Containers: the union of every replica, written with the resourceVersion it read and read again on
   409, so two nodes merging at once lose nothing) or `<recording>-<container>-<pod suffix>` (None);
   a profile of that name that belongs to another recording is never touched: the collision shows in
   the recording's status and the dump goes to quarantine;
3. adds the pod and the profile to the recording's status, then removes the dump.

Every API failure that may pass (409, 429, 5xx, timeouts, the server away) leaves the dump where it
is and tries again with backoff; the agent keeps running and its metrics say what it waits for. A
restart neither duplicates (merging is a union, status lists are sets) nor loses (dumps are removed
only once their profile is in the API) a profile.

With `install_dir` (the kubelet's seccomp directory), it also keeps `<install_dir>/syscribe/<name>.json`
equal to every enabled SeccompProfile, so a pod can use `localhostProfile: syscribe/<name>.json`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from syscribe import fsutil
from syscribe.controller import dumppath, dumps, profiles
from syscribe.controller.dumppath import DumpPath, DumpPathError
from syscribe.controller.recording import (
    GROUP,
    KIND,
    MERGE_CONTAINERS,
    PLURAL,
    VERSION,
    Recording,
    profile_name,
)
from syscribe.controller.webhook import RecordingCache, watch_recordings
from syscribe.kube import Backoff, ListWatch, Report, host_of, is_retryable, one_line, status_of
from syscribe.ociprofile import ProfileError
from syscribe.seccompprofile import GROUP as SPO_GROUP

MAX_STATUS_PODS = 1000
MAX_CONFLICT_RETRIES = 20
INCOMPLETE_GRACE = 120.0  # a dump missing half of itself this long is not being written any more


class RetryLaterError(Exception):
    """An API failure that may pass: the dump stays and is tried again later. The message says what."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RefusedError(Exception):
    """The dump cannot become a profile; it goes to quarantine. `recording` gets an Event when known."""

    def __init__(self, reason: str, message: str, recording: Recording | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.recording = recording


@dataclass
class AgentStats:
    processed: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    api_errors: int = 0
    waiting: dict[str, int] = field(default_factory=dict)  # reason -> dumps waiting for it
    installed: int = 0


@dataclass
class _Pending:
    first_seen: float
    next_try: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))
    waiting_for: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Agent:
    def __init__(
        self,
        api_client: Any,
        *,
        root: str,
        quarantine: str,
        node_name: str,
        install_dir: str | None = None,
        rescan: float = 30.0,
        incomplete_grace: float = INCOMPLETE_GRACE,
        report: Report,
    ) -> None:
        from kubernetes import client

        self.root = Path(root)
        self.quarantine = Path(quarantine)
        self.node_name = node_name
        self.install_dir = Path(install_dir) / "syscribe" if install_dir else None
        self.rescan = rescan
        self.incomplete_grace = incomplete_grace
        self.report = report
        self.stats = AgentStats()
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._recordings = RecordingCache(report)
        self._recording_watch = watch_recordings(api_client, self._recordings, report)
        self._profile_watch: ListWatch | None = None
        if self.install_dir is not None:
            self._profile_watch = ListWatch(
                self._custom.list_cluster_custom_object,
                what="SeccompProfiles",
                host=host_of(api_client),
                list_kwargs={"group": SPO_GROUP, "version": profiles.VERSION, "plural": profiles.PLURAL},
                on_list=self._install_all,
                on_event=self._install_event,
                report=report,
            )
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observer: Any = None
        self._installed: set[str] = set()
        self._install_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for path in (self.root, self.quarantine, *([self.install_dir] if self.install_dir else [])):
            path.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._recording_watch.start()
        if self._profile_watch is not None:
            self._profile_watch.start()
        self._observer = _watch_directory(self.root, self._seen)
        worker = threading.Thread(target=self._work, name="agent-dumps", daemon=True)
        worker.start()
        self._threads.append(worker)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(5)
        self._recording_watch.stop()
        if self._profile_watch is not None:
            self._profile_watch.stop()
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- finding dumps ---------------------------------------------------------------------------

    def _seen(self, path: str) -> None:
        """A file event under the root: remember the dump it belongs to."""
        try:
            relative = os.path.relpath(path, self.root)
        except ValueError:
            return
        name = relative.rsplit("/", 1)[-1]
        if name.startswith(".") or not name.endswith(".json"):
            return  # the hook's temporaries
        stem = (
            relative[: -len(dumppath.META_SUFFIX)]
            if relative.endswith(dumppath.META_SUFFIX)
            else relative[:-5]
        )
        with self._lock:
            if stem not in self._pending:
                self._pending[stem] = _Pending(first_seen=time.monotonic())
        self._wake.set()

    def scan(self) -> None:
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                self._seen(os.path.join(directory, name))

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # --- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        self.scan()
        last_scan = time.monotonic()
        while not self._stop.is_set():
            if not self._recording_watch.wait_synced(0.5):
                self._waiting_summary({"ProfileRecordings not listed yet": self.pending()})
                continue
            now = time.monotonic()
            if now - last_scan >= self.rescan:
                self.scan()
                last_scan = now
            with self._lock:
                due = sorted(stem for stem, p in self._pending.items() if p.next_try <= now)
            for stem in due:
                if self._stop.is_set():
                    return
                self._attempt(stem)
            with self._lock:
                waits = [p.next_try for p in self._pending.values()]
                summary: dict[str, int] = {}
                for p in self._pending.values():
                    if p.waiting_for:
                        summary[p.waiting_for] = summary.get(p.waiting_for, 0) + 1
            self._waiting_summary(summary)
            timeout = max(0.05, min(waits) - time.monotonic()) if waits else self.rescan
            self._wake.wait(min(timeout, self.rescan))
            self._wake.clear()

    def _waiting_summary(self, summary: dict[str, int]) -> None:
        self.stats.waiting = {k: v for k, v in summary.items() if v}

    def _attempt(self, stem: str) -> None:
        with self._lock:
            entry = self._pending.get(stem)
        if entry is None:
            return
        try:
            done = self.process(stem, entry)
        except RetryLaterError as exc:
            self.stats.retries += 1
            entry.waiting_for = str(exc)
            entry.next_try = time.monotonic() + entry.backoff.next()
            return
        except RefusedError as exc:
            self._quarantine(stem, exc)
            done = True
        # The worker must outlive anything one dump can throw: the dump waits, the others go on.
        except Exception as exc:
            self.stats.retries += 1
            entry.waiting_for = f"unexpected error: {type(exc).__name__}: {exc}"[:300]
            self.report("agent_error", f"{stem}: {entry.waiting_for} (trying again later)")
            entry.next_try = time.monotonic() + entry.backoff.next()
            return
        if done:
            with self._lock:
                self._pending.pop(stem, None)
        else:
            entry.next_try = time.monotonic() + 1.0

    # --- one dump --------------------------------------------------------------------------------

    def process(self, stem: str, entry: _Pending) -> bool:
        """True when the dump is finished with (made into a profile, or gone); False to look again later."""
        profile_file = self.root / f"{stem}{dumppath.PROFILE_SUFFIX}"
        meta_file = self.root / f"{stem}{dumppath.META_SUFFIX}"
        try:
            where, _ = dumppath.parse(f"{stem}{dumppath.PROFILE_SUFFIX}")
        except DumpPathError as exc:
            if not profile_file.exists() and not meta_file.exists():
                return True
            raise RefusedError("BadPath", f"not where the webhook sends recordings: {exc}") from None
        have_profile, have_meta = profile_file.exists(), meta_file.exists()
        if not have_profile and not have_meta:
            return True  # removed meanwhile (processed before a restart, or by hand)
        if not (have_profile and have_meta):
            if time.monotonic() - entry.first_seen > self.incomplete_grace:
                missing = "metadata" if have_profile else "profile"
                raise RefusedError("Incomplete", f"the {missing} never appeared beside it")
            entry.waiting_for = "the other half of a dump"
            return False
        read = _read_pair(profile_file, meta_file)
        if read is None:
            return False
        seen, profile_bytes, meta_bytes = read
        checked = self._checked(where, profile_bytes, meta_bytes, entry)
        if checked is None:
            return False
        recording, dump = checked
        self._make_profile(dump, recording)
        # The hook may have written this path again meanwhile (a pod of the same name, recreated): such a
        # dump is new, and stays to be processed in turn.
        with contextlib.suppress(FileNotFoundError):
            if _identity(profile_file, meta_file) != seen:
                entry.first_seen = time.monotonic()
                return False
        for path in (profile_file, meta_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True

    def _checked(
        self, where: DumpPath, profile_bytes: bytes, meta_bytes: bytes, entry: _Pending
    ) -> tuple[Recording, dumps.Dump] | None:
        """The dump and the recording it belongs to; None while it is still being written. RefusedError
        when it cannot become a profile of that recording."""
        recording = self._recordings.get(where.namespace, where.recording)
        try:
            dump = dumps.read(where, profile_bytes, meta_bytes)
        except dumps.IncompleteError as exc:
            if time.monotonic() - entry.first_seen > self.incomplete_grace:
                raise RefusedError("Incomplete", str(exc), recording) from None
            entry.waiting_for = "a dump being written"
            return None
        except dumps.UntrustedError as exc:
            raise RefusedError("Untrusted", str(exc), recording) from None
        if recording is None:
            raise RefusedError(
                "NoRecording", f"there is no ProfileRecording {where.namespace}/{where.recording}"
            )
        if not recording.records(where.container):
            raise RefusedError(
                "ContainerNotRecorded",
                f"container {where.container!r} is not among the recording's containers",
                recording,
            )
        return recording, dump

    def _make_profile(self, dump: dumps.Dump, recording: Recording) -> None:
        """Put the dump into its SeccompProfile, and the pod and the profile into the recording's status."""
        where = dump.where
        suffix = None if recording.merge_strategy == MERGE_CONTAINERS else where.pod_suffix(dump.pod)
        name = profile_name(recording.name, where.container, suffix)
        self._upsert(name, dump, recording)
        self._record_status(recording, name, dump)
        self._event(
            recording,
            "ProfileRecorded",
            f"pod {dump.pod} container {where.container} -> SeccompProfile {name}",
            "Normal",
        )
        self.stats.processed += 1

    def _api(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """`call()`, with failures that may pass (the server away, busy, slow; a conflict; permissions
        not granted yet) turned into RetryLaterError. Other API errors (404, 422, ...) go to the caller."""
        try:
            return call(*args)
        except Exception as err:
            status = status_of(err)
            if status is None and not _is_network(err):
                raise
            self.stats.api_errors += 1
            if is_retryable(err) or status in (401, 403):
                raise RetryLaterError(f"{what}: {one_line(err)}", status) from None
            raise

    def _upsert(self, name: str, dump: dumps.Dump, recording: Recording) -> None:
        for _ in range(MAX_CONFLICT_RETRIES):
            existing = self._read_profile(name, recording)
            try:
                self._write_profile(name, existing, dump, recording)
                return
            except RetryLaterError as exc:
                if exc.status != 409:
                    raise
                continue  # someone else wrote it meanwhile (another node): read it again and merge again
            except RefusedError:
                raise
            except Exception as err:
                if status_of(err) is None:
                    raise
                raise RefusedError(
                    "ApiError", f"writing SeccompProfile {name}: {one_line(err)}", recording
                ) from None
        raise RetryLaterError(f"SeccompProfile {name} kept changing under {MAX_CONFLICT_RETRIES} attempts")

    def _read_profile(self, name: str, recording: Recording) -> dict[str, Any] | None:
        """The SeccompProfile `name` as the API has it now; None when there is none."""
        try:
            existing: dict[str, Any] = self._api(
                "reading the SeccompProfile",
                self._custom.get_cluster_custom_object,
                SPO_GROUP,
                profiles.VERSION,
                profiles.PLURAL,
                name,
            )
        except RetryLaterError:
            raise
        except Exception as err:
            if status_of(err) != 404:
                raise RefusedError(
                    "ApiError", f"reading SeccompProfile {name}: {one_line(err)}", recording
                ) from None
            return None
        return existing

    def _write_profile(
        self, name: str, existing: dict[str, Any] | None, dump: dumps.Dump, recording: Recording
    ) -> None:
        """Create the SeccompProfile from the dump, or replace `existing` with the dump merged into it
        (nothing to do when it covers the dump already), with the resourceVersion it was read at."""
        if existing is None:
            body = profiles.new_resource(name, dump.profile, recording, dump.where.container)
            self._api(
                "creating the SeccompProfile",
                self._custom.create_cluster_custom_object,
                SPO_GROUP,
                profiles.VERSION,
                profiles.PLURAL,
                body,
            )
            return
        try:
            updated = profiles.merge_into(existing, dump.profile, recording)
        except profiles.ProfileCollisionError as exc:
            self._collision(recording, name, str(exc))
            raise RefusedError("ProfileNameCollision", str(exc), recording) from None
        except ProfileError as exc:
            raise RefusedError(
                "ProfileUnreadable",
                f"SeccompProfile {name} was edited into something syscribe cannot merge into: {exc}",
                recording,
            ) from None
        if updated is None:
            return
        self._api(
            "updating the SeccompProfile",
            self._custom.replace_cluster_custom_object,
            SPO_GROUP,
            profiles.VERSION,
            profiles.PLURAL,
            name,
            updated,
        )

    def _record_status(self, recording: Recording, name: str, dump: dumps.Dump) -> None:
        def change(status: dict[str, Any]) -> bool:
            profile_names = set(status.get("profiles") or [])
            pods = set(status.get("pods") or [])
            before = (len(profile_names), len(pods))
            profile_names.add(name)
            if len(pods) < MAX_STATUS_PODS:
                pods.add(dump.pod)
            status["profiles"] = sorted(profile_names)
            status["pods"] = sorted(pods)
            status["podsRecorded"] = len(pods)
            status["profilesMade"] = len(profile_names)
            changed = before != (len(profile_names), len(pods))
            return (
                _set_condition(
                    status, "Recorded", "True", "ProfileUpdated", f"SeccompProfile {name} has pod {dump.pod}"
                )
                or changed
            )

        self._update_status(recording, change)

    def _collision(self, recording: Recording, name: str, message: str) -> None:
        self._update_status(
            recording,
            lambda status: _set_condition(status, "ProfileNameCollision", "True", "NameTaken", message),
        )

    def _update_status(self, recording: Recording, change: Callable[[dict[str, Any]], bool]) -> None:
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                current = self._api(
                    "reading the ProfileRecording",
                    self._custom.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    recording.namespace,
                    PLURAL,
                    recording.name,
                )
            except Exception as err:
                if status_of(err) == 404:
                    return  # deleted meanwhile: its profile stays, there is no status to keep
                raise
            status = dict(current.get("status") or {})
            if not change(status):
                return
            current["status"] = status
            try:
                self._api(
                    "updating the ProfileRecording's status",
                    self._custom.replace_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    recording.namespace,
                    PLURAL,
                    recording.name,
                    current,
                )
                return
            except RetryLaterError as exc:
                if exc.status != 409:
                    raise
            except Exception as err:
                if status_of(err) == 404:
                    return
                raise
        raise RetryLaterError(f"ProfileRecording {recording.namespace}/{recording.name} kept changing")

    def _event(self, recording: Recording | None, reason: str, message: str, kind: str = "Warning") -> None:
        """An Event on the recording. Best effort: a lost Event loses no profile."""
        if recording is None:
            return
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{recording.name[:200]}.", "namespace": recording.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": recording.name,
                "namespace": recording.namespace,
                "uid": recording.uid or None,
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": "syscribe-agent", "host": self.node_name},
            "reportingComponent": "syscribe.io/agent",
            "reportingInstance": self.node_name[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            create: Any = self._core.create_namespaced_event  # takes a dict as well as its model
            create(recording.namespace, body)
        except Exception as err:
            self.report(
                "event_lost", f"Event {reason} on {recording.namespace}/{recording.name}: {one_line(err)}"
            )

    # --- quarantine ------------------------------------------------------------------------------

    def _quarantine(self, stem: str, refused: RefusedError) -> None:
        """Move both halves out of the root, with the reason beside them: kept for a person to look at."""
        flat = stem.replace("/", "_")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = []
        for suffix in (dumppath.PROFILE_SUFFIX, dumppath.META_SUFFIX):
            source = self.root / f"{stem}{suffix}"
            if not source.exists() and not source.is_symlink():
                continue
            target = self.quarantine / f"{stamp}_{flat}{suffix}"
            try:
                os.replace(source, target)
                moved.append(target.name)
            except OSError as exc:
                self.report("quarantine_failed", f"cannot move {source} to {target}: {exc.strerror}")
        reason = {
            "dump": stem,
            "reason": refused.reason,
            "message": str(refused),
            "files": moved,
            "at": _now(),
        }
        with contextlib.suppress(OSError):
            fsutil.write_atomic(
                self.quarantine / f"{stamp}_{flat}.reason.json",
                orjson.dumps(reason, option=orjson.OPT_INDENT_2),
                sync=False,
            )
        self.stats.quarantined[refused.reason] = self.stats.quarantined.get(refused.reason, 0) + 1
        self.report("dump_quarantined", f"{stem}: {refused} (moved to {self.quarantine})")
        self._event(refused.recording, "DumpQuarantined", f"{stem}: {refused}")

    # --- installing profiles on the node ---------------------------------------------------------

    def _install_all(self, items: list[object]) -> None:
        wanted: set[str] = set()
        for obj in items:
            name = self._install_one("ADDED", obj)
            if name is not None:
                wanted.add(name)
        assert self.install_dir is not None
        with self._install_lock:
            for entry in os.listdir(self.install_dir):
                if entry.endswith(".json") and entry[:-5] not in wanted:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.install_dir / entry)
            self._installed = wanted
            self.stats.installed = len(wanted)

    def _install_event(self, kind: str, obj: object) -> None:
        self._install_one(kind, obj)

    def _install_one(self, kind: str, obj: object) -> str | None:
        """Write or remove one profile's file; the name when it is installed now."""
        assert self.install_dir is not None
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            return None
        target = self.install_dir / f"{name}.json"
        oci = None
        if kind != "DELETED" and isinstance(obj, dict):
            try:
                oci = profiles.enabled_profile(obj)
            except ProfileError as exc:
                self.report("profile_not_installed", f"SeccompProfile {name} is not installed: {exc}")
        with self._install_lock:
            if oci is None:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                self._installed.discard(name)
            else:
                from syscribe.ociprofile import dumps as profile_dumps

                try:
                    fsutil.write_atomic(target, profile_dumps(oci))
                except OSError as exc:
                    self.report("profile_not_installed", f"cannot write {target}: {exc}")
                    return None
                self._installed.add(name)
            self.stats.installed = len(self._installed)
        return name if oci is not None else None


# What _identity says of files: inode, change time and size of each.
_Identity = tuple[tuple[int, int, int], ...]


def _read_pair(profile_file: Path, meta_file: Path) -> tuple[_Identity, bytes, bytes] | None:
    """Which files the dump's two are, and their bytes; None when they changed or went away while read
    (look again later). RefusedError when they are there but cannot be read."""
    try:
        seen = _identity(profile_file, meta_file)
        profile_bytes = fsutil.read_limited(profile_file, dumps.MAX_PROFILE_BYTES, follow_symlinks=False)
        meta_bytes = fsutil.read_limited(meta_file, dumps.MAX_META_BYTES, follow_symlinks=False)
        if _identity(profile_file, meta_file) != seen:
            return None  # rewritten while read (a pod of the same name again): read it again
    except FileNotFoundError:
        return None  # taken away meanwhile: the next scan tells whether anything is left
    except fsutil.FsError as exc:
        if not profile_file.exists() or not meta_file.exists():
            return None
        raise RefusedError("Unreadable", str(exc)) from None
    return seen, profile_bytes, meta_bytes


def _identity(*paths: Path) -> _Identity:
    """Which files these are: inode, change time and size (a rewrite by rename changes the inode)."""
    out = []
    for path in paths:
        st = os.stat(path, follow_symlinks=False)
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _set_condition(status: dict[str, Any], kind: str, value: str, reason: str, message: str) -> bool:
    """Set one condition (Kubernetes style: the transition time moves only when the status changes);
    True when anything changed."""
    conditions = [c for c in (status.get("conditions") or []) if isinstance(c, dict)]
    old = next((c for c in conditions if c.get("type") == kind), None)
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
        value,
        reason,
        message,
    ):
        return False
    when = old["lastTransitionTime"] if old is not None and old.get("status") == value else _now()
    new = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": when,
    }
    status["conditions"] = [c for c in conditions if c.get("type") != kind] + [new]
    return True


def _is_network(err: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    return bool(
        names
        & {
            "MaxRetryError",
            "ProtocolError",
            "ReadTimeoutError",
            "NewConnectionError",
            "ConnectionError",
            "TimeoutError",
            "ConnectionRefusedError",
            "ConnectionResetError",
            "RemoteDisconnected",
            "SSLError",
        }
    )


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and len(out) < 16:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _watch_directory(root: Path, seen: Callable[[str], None]) -> Any:
    """A watchdog observer calling `seen` with every file created, changed or moved in under `root`."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory or event.event_type not in ("created", "modified", "moved", "closed"):
                return
            target = getattr(event, "dest_path", "") or event.src_path
            seen(os.fsdecode(target))

    observer = Observer()
    observer.schedule(Handler(), os.fspath(root), recursive=True)
    observer.start()
    return observer


__all__ = ["Agent", "AgentStats", "DumpPath"]
