"""What the node agent makes of one dump (a profile and the metadata the hook wrote beside it). Pure.

A dump is trusted only as far as the node vouches for it. The hook takes the pod's namespace and name
from the runtime's `io.kubernetes.*` annotations (CRI-O sets them; a pod cannot), so the agent accepts
a dump only when that namespace is the one its path names, the container is the one its file is named
for, and the pod's name fits the file name. A pod of namespace A that points its own annotation into
namespace B's folder is refused here, whatever the path says.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from syscribe import ociprofile as prof
from syscribe.controller.dumppath import DumpPath
from syscribe.ociprofile import Profile, ProfileError

MAX_PROFILE_BYTES = 4 * 1024 * 1024  # a profile names a few hundred syscalls: kilobytes
MAX_META_BYTES = 4 * 1024 * 1024
DIGEST_KEY = "profileSHA256"


class IncompleteError(ValueError):
    """The dump is being written (the metadata describes another profile than the one there): wait."""


class UntrustedError(ValueError):
    """The dump cannot be used; the message says why. It goes to quarantine."""


@dataclass(frozen=True, slots=True)
class Dump:
    where: DumpPath
    profile: Profile
    pod: str
    pod_uid: str | None
    container_id: str | None
    partial: bool


def _meta(text: bytes) -> dict[str, Any]:
    if len(text) > MAX_META_BYTES:
        raise UntrustedError(f"metadata is {len(text)} bytes; the hook writes a few kilobytes")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UntrustedError(f"metadata is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise UntrustedError("metadata is not a JSON object")
    return doc


def _field(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= 253 else None


def read(where: DumpPath, profile_bytes: bytes, meta_bytes: bytes) -> Dump:
    """The dump, IncompleteError while its two files do not belong together yet, or UntrustedError."""
    meta = _meta(meta_bytes)
    digest = meta.get(DIGEST_KEY)
    if digest is not None and digest != hashlib.sha256(profile_bytes).hexdigest():
        raise IncompleteError(
            "the metadata names another profile than the one beside it (a write in progress)"
        )
    if len(profile_bytes) > MAX_PROFILE_BYTES:
        raise UntrustedError(f"profile is {len(profile_bytes)} bytes; at most {MAX_PROFILE_BYTES} are read")
    try:
        recorded = prof.loads(profile_bytes)
    except ProfileError as exc:
        raise UntrustedError(f"profile is not a seccomp profile: {exc}") from None
    namespace, pod, container = _field(meta, "namespace"), _field(meta, "pod"), _field(meta, "container")
    if namespace is None or pod is None or container is None:
        raise UntrustedError(
            "metadata lacks the pod's namespace, name or container (the runtime set no io.kubernetes.* "
            "annotations): not a pod's recording"
        )
    if namespace != where.namespace:
        raise UntrustedError(
            f"recorded in namespace {namespace!r} but written into namespace {where.namespace!r}'s folder"
        )
    if container != where.container:
        raise UntrustedError(
            f"recorded container {container!r} but the file is named for {where.container!r}"
        )
    if not where.pod_matches(pod):
        raise UntrustedError(f"recorded pod {pod!r} but the file is named for pod {where.prefix!r}")
    return Dump(
        where=where,
        profile=recorded,
        pod=pod,
        pod_uid=_field(meta, "podUID"),
        container_id=_field(meta, "containerID"),
        partial=meta.get("partial") is True,
    )
