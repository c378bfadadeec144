"""The SeccompProfile a recording makes, and how a new dump joins one that exists. Pure.

Profiles are the Security Profiles Operator's cluster-scoped `SeccompProfile` (syscribe.seccompprofile),
so a cluster running that operator uses them as they are. Labels say where a profile came from
(recording, its namespace, container); since names from two namespaces can meet in the cluster-wide
name space, a profile whose labels name another namespace or recording is never touched: `merge_into`
says so with ProfileCollisionError.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from syscribe import profilemerge
from syscribe import seccompprofile as spo
from syscribe.controller.recording import (
    LABEL_CONTAINER,
    LABEL_MANAGED_BY,
    LABEL_NAMESPACE,
    LABEL_RECORDING,
    MANAGER,
    Recording,
    is_label_value,
)
from syscribe.ociprofile import Profile, ProfileError

PLURAL = "seccompprofiles"
VERSION = "v1"


class ProfileCollisionError(ValueError):
    """A profile of this name exists and belongs to something else; the message names its owner."""


def labels_for(recording: Recording, container: str) -> dict[str, str]:
    labels = {LABEL_MANAGED_BY: MANAGER, LABEL_NAMESPACE: recording.namespace, LABEL_CONTAINER: container}
    # A label value holds 63 characters; the annotation below always holds the full name.
    if is_label_value(recording.name):
        labels[LABEL_RECORDING] = recording.name
    return labels


def annotations_for(recording: Recording) -> dict[str, str]:
    return {LABEL_RECORDING: f"{recording.namespace}/{recording.name}"}


def owner(obj: Mapping[str, Any]) -> str | None:
    """`<namespace>/<recording>` that made this profile, or None for a profile syscribe did not make."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {} if isinstance(meta, dict) else {}
    value = annotations.get(LABEL_RECORDING) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else None


def new_resource(name: str, recorded: Profile, recording: Recording, container: str) -> dict[str, Any]:
    resource = spo.to_resource(recorded, name)
    resource["metadata"]["labels"] = labels_for(recording, container)
    resource["metadata"]["annotations"] = annotations_for(recording)
    if recording.disable_after:
        resource["spec"]["disabled"] = True
    return resource


def merge_into(existing: Mapping[str, Any], recorded: Profile, recording: Recording) -> dict[str, Any] | None:
    """`existing` with `recorded` merged in (the union of what both allow), or None when it already
    allows all of it. Raises ProfileCollisionError when `existing` is not this recording's, and ProfileError
    when it was edited into something that cannot be read (the message says which field)."""
    want = f"{recording.namespace}/{recording.name}"
    have = owner(existing)
    if have != want:
        made_by = f"recording {have}" if have else "someone else (it has no syscribe.io/recording annotation)"
        raise ProfileCollisionError(
            f"SeccompProfile {existing.get('metadata', {}).get('name')!r} was made by {made_by}"
        )
    current = spo.from_resource(_without_status(existing))
    if profilemerge.coverage(current, [recorded]).ok:
        return None
    merged = profilemerge.union([current, recorded])
    spec = spo.to_resource(merged.profile, existing["metadata"]["name"])["spec"]
    updated = copy.deepcopy(dict(existing))
    for key in ("disabled", "baseProfileName"):
        if key in existing.get("spec", {}):
            spec[key] = existing["spec"][key]
    updated["spec"] = spec
    return updated


def _without_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "spec")}


def enabled_profile(obj: Mapping[str, Any]) -> Profile | None:
    """The OCI profile a node should install for this resource, None when it is disabled. Raises
    ProfileError for a resource that cannot be read."""
    spec = obj.get("spec")
    if isinstance(spec, dict) and spec.get("disabled") is True:
        return None
    return spo.from_resource(_without_status(obj))


__all__ = [
    "PLURAL",
    "VERSION",
    "ProfileCollisionError",
    "ProfileError",
    "enabled_profile",
    "labels_for",
    "merge_into",
    "new_resource",
    "owner",
]
