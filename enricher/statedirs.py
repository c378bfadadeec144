"""A container's state in the runtimes' state directories: which directory knows a container id, in
which runtime's layout, and what is kept beside its bundle (podman's names, the pod's labels on its
sandbox). What the files say is parsed in runtimestate.py; containers.py asks this module by container id.

Everything below a state directory is opened one component at a time with O_NOFOLLOW, so an id or a
link planted in a container-writable place cannot make the resolver read outside the directory, and
every file is read up to a size cap (a FIFO, device or huge file is refused, never waited on).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from syscribe import fsutil
from syscribe.enricher import runtimestate
from syscribe.enricher.cgroup import CONTAINER_ID

# Where the runtimes keep what they know about each container, richest first: containers/storage
# (CRI-O, podman: the bundle's config.json), containerd's task bundles (one folder per namespace),
# docker's containers, then the OCI runtimes' own roots (CRI-O's runc and crun use /run/runc and
# /run/crun; containerd's and docker's runc roots have a namespace level).
DEFAULT_STATE_DIRS: tuple[Path, ...] = (
    Path("/run/containers/storage"),
    Path("/var/lib/containers/storage"),
    Path("/run/containerd/io.containerd.runtime.v2.task"),
    Path("/var/lib/docker/containers"),
    Path("/run/runc"),
    Path("/run/crun"),
    Path("/run/containerd/runc"),
    Path("/run/docker/runtime-runc"),
)

STORAGE_DRIVERS = ("overlay", "vfs", "btrfs", "zfs")
MAX_JSON = 8 * 1024 * 1024  # a bundle config with a big seccomp profile is ~100 KiB
MAX_NAMES_FILE = 32 * 1024 * 1024  # containers.json: ~1 KiB per container
MAX_STATUS = 64 * 1024  # crun's status file: a few hundred bytes
MAX_NAMESPACES = 256  # entries looked at when a state directory has a namespace level
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


# --- bounded, no-follow reads ---------------------------------------------------------------------------


def read_bounded(base: Path, parts: Sequence[str], cap: int) -> bytes | None:
    """The bytes of base/parts[0]/.../parts[-1], or None if it is missing, not a regular file, reached
    through a symlink below `base`, or larger than `cap`. `base` itself is the operator's choice and
    may be a link (a DaemonSet mounts the host's /run somewhere)."""
    try:
        return fsutil.read_beneath(base, parts, cap)
    except fsutil.FsError:
        return None


def _is_dir(base: Path, parts: Sequence[str]) -> bool:
    try:
        os.close(fsutil.open_dir_beneath(base, parts))
    except fsutil.FsError:
        return False
    return True


def _subdirs(base: Path) -> list[str]:
    """Names of the (non-link) folders of `base` that could be a namespace level, bounded."""
    names: list[str] = []
    try:
        with os.scandir(base) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_NAMESPACES:
                    break
                if (
                    _SAFE_NAME.fullmatch(entry.name)
                    and not CONTAINER_ID.fullmatch(entry.name)
                    and entry.is_dir(follow_symlinks=False)
                ):
                    names.append(entry.name)
    except OSError:
        pass
    return sorted(names)


# --- finding a container --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """A container's bundle facts, and where they were found."""

    facts: runtimestate.BundleFacts
    layout: str  # runtime that the state dir's layout shows ("runc", "crun", "containerd", ...)
    storage: tuple[Path, str] | None = None  # containers/storage root and driver, for names and sandboxes


class StateDirs:
    """The state directories to look for containers in, richest first. Thread-safe."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = tuple(dirs)
        self._lock = threading.Lock()
        self._names: dict[Path, tuple[tuple[int, int], dict[str, str]]] = {}

    def find(self, container_id: str) -> Found | None:
        """The first state directory's facts about `container_id` (a checked 64-hex id), or None."""
        for base in self.dirs:
            drivers = [driver for driver in STORAGE_DRIVERS if _is_dir(base, [f"{driver}-containers"])]
            for driver in drivers:
                data = read_bounded(
                    base, [f"{driver}-containers", container_id, "userdata", "config.json"], MAX_JSON
                )
                facts = runtimestate.oci_config(data) if data is not None else None
                if facts is not None:
                    return Found(facts, "cri-o", (base, driver))
            if drivers:
                continue  # a containers/storage root has no other layout below it
            found = _probe(base, [], container_id)
            if found is not None:
                return found
            if not _is_dir(base, [container_id]):
                for namespace in _subdirs(base):
                    found = _probe(base, [namespace], container_id)
                    if found is not None:
                        if namespace == "moby" and found.layout == "containerd":
                            return replace(found, layout="docker")
                        return found
        return None

    def storage_name(self, found: Found, container_id: str) -> str | None:
        """podman's name for a container, from containers/storage's containers.json (re-read on change)."""
        if found.storage is None:
            return None
        root, driver = found.storage
        path = root / f"{driver}-containers" / "containers.json"
        try:
            info = path.lstat()
        except OSError:
            return None
        key = (info.st_mtime_ns, info.st_size)
        with self._lock:
            cached = self._names.get(path)
        if cached is None or cached[0] != key:
            data = read_bounded(root, [f"{driver}-containers", "containers.json"], MAX_NAMES_FILE)
            names = runtimestate.storage_names(data) if data is not None else {}
            with self._lock:
                self._names[path] = (key, names)
        else:
            names = cached[1]
        return names.get(container_id)


def pod_labels(found: Found, sandbox: bool) -> dict[str, str]:
    """The pod's labels where containers/storage keeps them (CRI-O): on the sandbox's own annotations
    (`sandbox`: the container is the pod's sandbox), else on the sandbox its annotations name."""
    if found.storage is None:
        return {}
    if sandbox:
        return runtimestate.pod_labels(found.facts.annotations)
    sandbox_id = found.facts.annotations.get(runtimestate.CRIO_SANDBOX_ID)
    if sandbox_id is None or not CONTAINER_ID.fullmatch(sandbox_id):
        return {}
    root, driver = found.storage
    data = read_bounded(root, [f"{driver}-containers", sandbox_id, "userdata", "config.json"], MAX_JSON)
    sandbox_facts = runtimestate.oci_config(data) if data is not None else None
    return runtimestate.pod_labels(sandbox_facts.annotations) if sandbox_facts is not None else {}


def _probe(base: Path, prefix: list[str], container_id: str) -> Found | None:
    """The per-container folder layouts: runc's state.json, crun's status (with its copy of the
    config), docker's config.v2.json, an OCI bundle's config.json (containerd's task folders)."""
    folder = [*prefix, container_id]
    data = read_bounded(base, [*folder, "state.json"], MAX_JSON)
    if data is not None and (facts := runtimestate.runc_state(data)) is not None:
        return Found(facts, "runc")
    status = read_bounded(base, [*folder, "status"], MAX_STATUS)
    if status is not None and runtimestate.crun_status(status) is not None:
        data = read_bounded(base, [*folder, "config.json"], MAX_JSON)
        facts = runtimestate.oci_config(data) if data is not None else None
        if facts is not None:
            return Found(facts, "crun")
        return None  # crun writes status before its config copy: not there yet
    data = read_bounded(base, [*folder, "config.v2.json"], MAX_JSON)
    if data is not None and (facts := runtimestate.docker_config(data)) is not None:
        return Found(facts, "docker")
    data = read_bounded(base, [*folder, "config.json"], MAX_JSON)
    if data is not None and (facts := runtimestate.oci_config(data)) is not None:
        return Found(facts, "containerd")
    return None
