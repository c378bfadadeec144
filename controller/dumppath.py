"""Where the webhook sends a recorded container's profile, and what the agent reads back from that path.
Pure.

The webhook asks the hook to write each selected container to

    <root>/<namespace>/<recording>/<container>_<pod name>.json                 (a pod with a name)
    <root>/<namespace>/<recording>/<container>_<generateName>_<request uid>.json (a generated name)

`_` appears in no namespace, recording, container or pod name, so the agent can split the file name
back. A generated pod's name is not known at admission (the API server makes it afterwards), so the
request's uid makes the file unique and the generateName lets the agent cut the pod's generated part
off for a per-pod profile's name. Prefixes are cut to 120 bytes so that every name the hook makes from
this one (`.meta.json`, its temporaries) stays within NAME_MAX.
"""

from __future__ import annotations

from dataclasses import dataclass

from syscribe.controller.recording import is_dns_label, is_subdomain

PROFILE_SUFFIX = ".json"
META_SUFFIX = ".meta.json"
MAX_PREFIX = 120
TOKEN_LENGTH = 12
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class DumpPathError(ValueError):
    """A file under the root that is not where the webhook sends recordings."""


@dataclass(frozen=True, slots=True)
class DumpPath:
    namespace: str
    recording: str
    container: str
    prefix: str  # the pod's name, or its generateName (cut to MAX_PREFIX)
    token: str | None  # the request's uid digits for a generated name

    @property
    def generated(self) -> bool:
        return self.token is not None

    @property
    def stem(self) -> str:
        parts = [self.container, self.prefix] + ([self.token] if self.token else [])
        return "_".join(parts)

    def relative(self) -> str:
        return f"{self.namespace}/{self.recording}/{self.stem}{PROFILE_SUFFIX}"

    def relative_meta(self) -> str:
        return f"{self.namespace}/{self.recording}/{self.stem}{META_SUFFIX}"

    def pod_matches(self, pod: str) -> bool:
        """Whether `pod` (as the runtime named it) can be the pod this path was made for."""
        if self.generated:
            return pod.startswith(self.prefix) and len(pod) > len(self.prefix)
        if len(self.prefix) < MAX_PREFIX:
            return pod == self.prefix
        return pod.startswith(self.prefix)  # a long name, cut

    def pod_suffix(self, pod: str) -> str:
        """What tells this pod from its replicas: the generated part of its name, or the whole name."""
        if self.generated and pod.startswith(self.prefix) and len(pod) > len(self.prefix):
            return pod[len(self.prefix) :]
        return pod


def for_pod(
    namespace: str,
    recording: str,
    container: str,
    pod_name: str | None,
    generate_name: str | None,
    request_uid: str,
) -> DumpPath:
    if pod_name:
        return DumpPath(namespace, recording, container, pod_name[:MAX_PREFIX], None)
    token = "".join(c for c in request_uid.lower() if c in "0123456789abcdef")[:TOKEN_LENGTH]
    if len(token) < TOKEN_LENGTH:
        raise DumpPathError("the request has no usable uid to make a generated pod's file name unique")
    return DumpPath(namespace, recording, container, (generate_name or "pod-")[:MAX_PREFIX], token)


def parse(relative: str) -> tuple[DumpPath, bool]:
    """(the path, whether it is the metadata file) from a path relative to the root, or DumpPathError."""
    parts = relative.split("/")
    if len(parts) != 3:
        raise DumpPathError("not <namespace>/<recording>/<file>")
    namespace, recording, name = parts
    if not is_dns_label(namespace):
        raise DumpPathError(f"{namespace!r} is not a namespace name")
    if not is_subdomain(recording):
        raise DumpPathError(f"{recording!r} is not a recording name")
    is_meta = name.endswith(META_SUFFIX)
    suffix = META_SUFFIX if is_meta else PROFILE_SUFFIX
    if not name.endswith(suffix):
        raise DumpPathError(f"{name!r} is not a .json profile or its .meta.json")
    fields = name[: -len(suffix)].split("_")
    if len(fields) not in (2, 3):
        raise DumpPathError(f"{name!r} is not <container>_<pod>[_<uid>].json")
    container, prefix = fields[0], fields[1]
    token = fields[2] if len(fields) == 3 else None
    if not is_dns_label(container):
        raise DumpPathError(f"{container!r} is not a container name")
    if not prefix or len(prefix) > MAX_PREFIX or not set(prefix) <= _NAME_CHARS:
        raise DumpPathError(f"{prefix!r} is not a pod name or generateName")
    if token is not None and (len(token) != TOKEN_LENGTH or any(c not in "0123456789abcdef" for c in token)):
        raise DumpPathError(f"{token!r} is not a request uid")
    return DumpPath(namespace, recording, container, prefix, token), is_meta
