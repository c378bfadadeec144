"""Which container a process is in, from the text of its /proc/<pid>/cgroup (pure, no I/O).

The kernel writes one line per hierarchy: `N:controller,list:/path` for cgroup v1, `0::/path` for v2,
both on a hybrid host. The runtimes and the kubelet name the cgroups they create after the container and
the pod, so the path says which container a process belongs to without asking anyone:

- CRI-O: `crio-<id>.scope` (systemd driver), `crio-<id>` (cgroupfs);
- containerd: `cri-containerd-<id>.scope` (systemd), a bare `<id>` (cgroupfs; cri-dockerd too);
- docker: `/docker/<id>`, `docker-<id>.scope`; podman: `libpod-<id>.scope`, `/libpod_parent/libpod-<id>`;
- plain runc / crun: a bare 64-hex `<id>`;
- the pod: `/kubepods/<qos>/pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _>.slice` (systemd),
  guaranteed pods with no QoS level.

`crio-conmon-<id>` and `libpod-conmon-<id>` hold the runtime's monitor (conmon), not the container.
kind and minikube nest: the node is itself a container whose cgroup prefixes the pod's
(`/docker/<node>/kubepods/...`); the innermost container is the one the process is in.

Every id taken from a path is checked against the alphabet the runtimes use ([0-9a-f]{64}) before it
leaves this module, because the resolver puts it into file system paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Every runtime listed above names containers by a 64-hex id (CRI, docker, podman); anything else in a
# cgroup path is not trusted to be one.
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
# Pod uids are UUIDs; static pods' are a 32-hex hash of their manifest.
POD_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")

QOS_CLASSES = ("guaranteed", "burstable", "besteffort")

# /proc/<pid>/cgroup has one line per hierarchy (a dozen at most); these bounds only stop hostile or
# corrupt input from costing more than a real file would.
MAX_TEXT = 64 * 1024
MAX_LINES = 256
MAX_PATH = 4096
MAX_COMPONENTS = 128

_PREFIXED = re.compile(
    r"(?P<prefix>crio-conmon|libpod-conmon|crio|cri-containerd|docker|libpod)-(?P<id>[0-9a-f]{64})(?:\.scope)?"
)
_RUNTIME_OF_PREFIX = {
    "crio": "cri-o",
    "crio-conmon": "cri-o",
    "cri-containerd": "containerd",
    "docker": "docker",
    "libpod": "podman",
    "libpod-conmon": "podman",
}
_MONITOR_PREFIXES = frozenset({"crio-conmon", "libpod-conmon"})
# The folder a bare id sits in, where it says which runtime made it (docker and podman, cgroupfs driver).
_RUNTIME_OF_PARENT = {"docker": "docker", "libpod_parent": "podman"}
# cgroupfs: `pod<uid>`; systemd: `kubepods-burstable-pod<uid with _>.slice`, also under a kubelet
# cgroup root (`kubelet-kubepods-...`, kind).
_POD_CGROUPFS = re.compile(r"pod(?P<uid>[0-9a-f-]{32,36})")
_POD_SLICE = re.compile(
    r"(?:[a-z0-9_]+-)*kubepods(?:-(?P<qos>burstable|besteffort))?-pod(?P<uid>[0-9a-f_]{32,36})\.slice"
)
_KUBEPODS_SLICE = re.compile(r"(?:[a-z0-9_]+-)*kubepods(?:-(?P<qos>burstable|besteffort))?\.slice")


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """What a cgroup path says about the process in it.

    `runtime` is the manager the path names ("cri-o", "containerd", "docker", "podman"), or None when
    the path holds a bare id (containerd's and cri-dockerd's cgroupfs layout, plain runc/crun).
    `monitor` is True for a runtime's monitor process (conmon): it sits beside the container, with its
    id, but is not in it, so `container_id` is None then. `outer` lists the ids of containers around
    the innermost one (a kind/minikube node), outermost first.
    """

    runtime: str | None
    container_id: str | None
    pod_uid: str | None = None
    qos: str | None = None
    monitor: bool = False
    outer: tuple[str, ...] = ()


def _pod_uid(raw: str) -> str | None:
    uid = raw.replace("_", "-")
    return uid if POD_UID.fullmatch(uid) else None


@dataclass(slots=True)
class _Level:
    runtime: str | None = None
    container_id: str | None = None
    monitor_id: str | None = None
    pod_uid: str | None = None
    qos: str | None = None
    in_kubepods: bool = False


def parse_path(path: str) -> ContainerRef | None:
    """The container (or pod, or monitor) a cgroup path names; None for a host cgroup."""
    if len(path) > MAX_PATH:
        return None
    if path.endswith(" (deleted)"):  # v2 shows a removed cgroup so; the name still says whose it was
        path = path[: -len(" (deleted)")]
    level = _Level()
    outer: list[str] = []
    previous = ""
    for count, part in enumerate(path.split("/")):
        if count > MAX_COMPONENTS:
            break
        if part in ("", ".", ".."):  # `..` when read from inside a cgroup namespace
            continue
        named = _container_part(part, previous)
        if named is not None:
            runtime, found_id, monitor = named
            if monitor:
                level.monitor_id = found_id
                level.runtime = runtime
            else:
                if level.container_id is not None:
                    # A container inside a container (kind/minikube node): the pod parts seen so far
                    # belong to the outer one.
                    outer.append(level.container_id)
                    level = _Level()
                level.container_id = found_id
                level.runtime = runtime
            previous = part
            continue
        if level.container_id is not None and (
            part == "kubepods" or _KUBEPODS_SLICE.fullmatch(part) or _POD_SLICE.fullmatch(part)
        ):
            # kubepods below a container: a nested node; start a new level for its pods.
            outer.append(level.container_id)
            level = _Level()
        _note_pod_part(level, part)
        previous = part
    return _ref(level, tuple(outer))


def _container_part(part: str, previous: str) -> tuple[str | None, str, bool] | None:
    """(runtime, id, whether it is the runtime's monitor) when path component `part` names a container:
    `<prefix>-<id>[.scope]`, or a bare id (whose parent folder may say which runtime made it)."""
    prefixed = _PREFIXED.fullmatch(part)
    if prefixed is not None:
        prefix = prefixed.group("prefix")
        return _RUNTIME_OF_PREFIX[prefix], prefixed.group("id"), prefix in _MONITOR_PREFIXES
    if CONTAINER_ID.fullmatch(part):
        return _RUNTIME_OF_PARENT.get(previous), part, False
    return None


def _note_pod_part(level: _Level, part: str) -> None:
    """Add what path component `part` says of the pod to `level`: the kubepods slices (systemd), the
    kubepods, QoS and `pod<uid>` folders (cgroupfs)."""
    slice_match = _POD_SLICE.fullmatch(part)
    if slice_match is not None:
        level.in_kubepods = True
        level.pod_uid = _pod_uid(slice_match.group("uid")) or level.pod_uid
        level.qos = slice_match.group("qos") or level.qos
    elif (kube_slice := _KUBEPODS_SLICE.fullmatch(part)) is not None:
        level.in_kubepods = True
        level.qos = kube_slice.group("qos") or level.qos
    elif part == "kubepods":
        level.in_kubepods = True
    elif level.in_kubepods and part in ("burstable", "besteffort") and level.pod_uid is None:
        level.qos = part
    elif level.in_kubepods and (pod := _POD_CGROUPFS.fullmatch(part)) is not None:
        level.pod_uid = _pod_uid(pod.group("uid")) or level.pod_uid


def _ref(level: _Level, outer: tuple[str, ...]) -> ContainerRef | None:
    """What the innermost level found, inside the containers `outer`."""
    if level.pod_uid is not None and level.qos is None:
        # The kubelet puts guaranteed pods straight under kubepods, with no QoS level.
        level.qos = "guaranteed"
    if level.container_id is not None:
        return ContainerRef(level.runtime, level.container_id, level.pod_uid, level.qos, False, outer)
    if level.monitor_id is not None:
        return ContainerRef(level.runtime, None, level.pod_uid, level.qos, True, outer)
    if level.pod_uid is not None or outer:
        return ContainerRef(None, None, level.pod_uid, level.qos, False, outer)
    return None


def _lines(data: bytes | str) -> list[tuple[str, str]]:
    """(controllers, path) per well-formed line, v2 first, then name=systemd, then the v1 controllers."""
    text = data[:MAX_TEXT]
    if isinstance(text, bytes):
        # Paths are bytes to the kernel; anything not UTF-8 cannot be a name we match anyway.
        text = text.decode("utf-8", "replace")
    v2: list[tuple[str, str]] = []
    named: list[tuple[str, str]] = []
    v1: list[tuple[str, str]] = []
    for line in text.splitlines()[:MAX_LINES]:
        fields = line.split(":", 2)
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].startswith("/"):
            continue
        hierarchy, controllers, path = fields
        if hierarchy == "0" and controllers == "":
            v2.append((controllers, path))
        elif "name=systemd" in controllers.split(","):
            named.append((controllers, path))
        else:
            v1.append((controllers, path))
    return v2 + named + v1


# Every path parse_path() gives a ref for holds a 64-hex id or a kubepods component; a file without
# either is a host process's, told without splitting it (the process tracker asks this of every new
# process on the node).
_MAYBE_CONTAINER = re.compile(rb"[0-9a-f]{64}|kubepods")


def may_name_container(data: bytes) -> bool:
    """False when /proc/<pid>/cgroup text `data` cannot name a container or pod (parse it otherwise)."""
    return _MAYBE_CONTAINER.search(data, 0, MAX_TEXT) is not None


def parse_proc_cgroup(data: bytes | str) -> ContainerRef | None:
    """The container the process whose /proc/<pid>/cgroup is `data` is in; None for a host process.

    On a hybrid host the hierarchies can disagree (a runtime that only moved the process in some of
    them, or a v2 hierarchy nobody manages): the first hierarchy that names a container wins, in the
    order v2, name=systemd, then the v1 controllers; failing that, the first that names a pod or a
    monitor.
    """
    partial: ContainerRef | None = None
    for _controllers, path in _lines(data):
        ref = parse_path(path)
        if ref is None:
            continue
        if ref.container_id is not None:
            return ref
        if partial is None:
            partial = ref
    return partial
