"""Profiles as `SeccompProfile` resources of the Security Profiles Operator, and reading either format.

Pure apart from YAML parsing. The resource follows SPO's v1 schema: group
security-profiles-operator.x-k8s.io, cluster-scoped since SPO 0.9 (so no namespace unless asked),
spec {defaultAction, architectures, syscalls[{names, action, errnoRet, args}], flags, listenerPath,
listenerMetadata, baseProfileName}. The spec has no defaultErrnoRet: profiles SPO installs return EPERM
for a denied call, which is what syscribe writes anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import yaml

from syscribe import ociprofile as prof
from syscribe.ociprofile import Profile, ProfileError

GROUP = "security-profiles-operator.x-k8s.io"
API_VERSION = f"{GROUP}/v1"
# v1beta1 has the same spec; SPO converts between them.
ACCEPTED_API_VERSIONS = (API_VERSION, f"{GROUP}/v1beta1")
KIND = "SeccompProfile"
INT64_MAX = (1 << 63) - 1

_TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
_SPEC_KEYS = (
    "defaultAction",
    "architectures",
    "syscalls",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "baseProfileName",
    "disabled",
)
# A Kubernetes object name (DNS-1123 subdomain).
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")
MAX_NAME_LENGTH = 253

FORMATS = ("oci", "seccompprofile")


class Loaded(NamedTuple):
    profile: Profile
    format: str  # one of FORMATS
    name: str | None  # metadata.name of a resource


# ---------------------------------------------------------------------------------------------------
# Names


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise ProfileError(
            f"resource name {shown!r} is not valid; use lower-case letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    return name


def name_for(text: str) -> str:
    """A valid resource name made from a command or file name (`/usr/bin/My_Tool` -> `my-tool`)."""
    base = text.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".json", ".yaml", ".yml"):
        base = base.removesuffix(suffix)
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", base.lower()).strip("-.")
    cleaned = re.sub(r"[-.]{2,}", "-", cleaned)[:MAX_NAME_LENGTH].strip("-.")
    return cleaned or "syscribe-profile"


# ---------------------------------------------------------------------------------------------------
# To a resource


def to_resource(profile: Profile, name: str, namespace: str | None = None) -> dict[str, Any]:
    check_name(name)
    errno = profile.default_errno_ret
    if errno is not None and not (profile.default_action == prof.ACT_ERRNO and errno == prof.DEFAULT_ERRNO):
        raise ProfileError(
            f"defaultErrnoRet {errno} cannot be written to a SeccompProfile (its spec has no such field "
            "and runtimes then return EPERM); keep the OCI JSON or use defaultErrnoRet 1"
        )
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        check_name(namespace)
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.architectures:
        spec["architectures"] = list(profile.architectures)
    if profile.flags:
        spec["flags"] = list(profile.flags)
    if profile.listener_path is not None:
        spec["listenerPath"] = profile.listener_path
    if profile.listener_metadata is not None:
        spec["listenerMetadata"] = profile.listener_metadata
    syscalls = []
    for i, rule in enumerate(profile.syscalls):
        for j, arg in enumerate(rule.args):
            for field, value in (("value", arg.value), ("valueTwo", arg.value_two)):
                if value > INT64_MAX:
                    raise ProfileError(
                        f"syscalls[{i}].args[{j}].{field}: {value:#x} does not fit the int64 a "
                        "SeccompProfile stores; keep the OCI JSON for this profile"
                    )
        syscalls.append(prof.rule_to_dict(rule))
    spec["syscalls"] = syscalls
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def dumps(profile: Profile, name: str, namespace: str | None = None) -> str:
    return dump_yaml(to_resource(profile, name, namespace))


def dump_yaml(data: Any) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False)
    return text


# ---------------------------------------------------------------------------------------------------
# From a resource


def from_resource(data: object) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError("a SeccompProfile resource is an object with apiVersion, kind and spec")
    kind = data.get("kind")
    if kind != KIND:
        raise ProfileError(f"kind: {_show(kind)}, not {KIND}")
    version = data.get("apiVersion")
    if version not in ACCEPTED_API_VERSIONS:
        raise ProfileError(
            f"apiVersion: {_show(version)}, not one of {', '.join(ACCEPTED_API_VERSIONS)}"
        )
    for i, key in enumerate(data):
        if key not in _TOP_KEYS:
            raise ProfileError(
                f"unknown field (key {i + 1}) in the resource; known: {', '.join(_TOP_KEYS)}"
            )
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ProfileError("metadata: expected an object with name")
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise ProfileError("spec: missing or not an object; a SeccompProfile needs spec.defaultAction")
    for i, key in enumerate(spec):
        if key not in _SPEC_KEYS:
            raise ProfileError(
                f"spec: unknown field (key {i + 1} of spec); known fields: {', '.join(_SPEC_KEYS)}"
            )
    base = spec.get("baseProfileName")
    if base not in (None, ""):
        raise ProfileError(
            "spec.baseProfileName is set: syscribe cannot fetch base profiles; convert the base "
            "profile too, `syscribe merge` both, and drop baseProfileName"
        )
    disabled = spec.get("disabled")
    if disabled is not None and not isinstance(disabled, bool):
        raise ProfileError("spec.disabled: expected true or false")
    oci = {k: v for k, v in spec.items() if k not in ("baseProfileName", "disabled")}
    if oci.get("defaultAction") == prof.ACT_ERRNO:
        oci["defaultErrnoRet"] = prof.DEFAULT_ERRNO
    try:
        return prof.parse(oci)
    except ProfileError as exc:
        raise ProfileError(f"spec.{exc}") from None


def _show(value: object) -> str:
    """What a value is, not what it says: errors never print the bytes of the file they read."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return prof.json_type(value)


# ---------------------------------------------------------------------------------------------------
# Reading either format


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A mapping whose keys are all different: YAML says they must be, PyYAML lets the last one win,
    and a profile that means one thing to syscribe and another to a runtime is refused in every format."""
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping says so
        if first is not None:
            at, before = key_node.start_mark, first.start_mark
            raise ProfileError(
                f"a key appears twice in one mapping (at line {at.line + 1} column {at.column + 1}, "
                f"first at line {before.line + 1} column {before.column + 1})"
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=True)


def _strict_loader() -> type[yaml.SafeLoader]:
    base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader: type[yaml.SafeLoader] = type("StrictLoader", (base,), {})
    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
    return loader


_LOADER = _strict_loader()
# PyYAML's problems quote what they found ("found character '%' that cannot start any token"): the
# position says where, the quoted bytes are not printed.
_QUOTED = re.compile(r"""(\bfound(?: [a-z ]+?)?) (?:'[^']*'|"[^"]*")""")


def load_yaml(text: str) -> Any:
    """YAML to Python values, refusing aliases (a few bytes of `*a` can stand for gigabytes of names)
    and duplicate keys."""
    loader = _LOADER
    try:
        if "&" in text:  # aliases need an anchor; only then is the slower event scan needed
            for event in yaml.parse(text, Loader=loader):
                if isinstance(event, yaml.AliasEvent):
                    raise ProfileError("YAML aliases (*name) are not accepted in a profile; write it out")
        return yaml.load(text, Loader=loader)  # a safe loader (C or Python)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = _QUOTED.sub(r"\1 (...)", getattr(exc, "problem", None) or type(exc).__name__)
        raise ProfileError(f"not valid YAML: {problem}{where}") from None
    except RecursionError:
        raise ProfileError("YAML nested too deeply; a seccomp profile is at most 6 levels deep") from None


def loads(text: str | bytes) -> Loaded:
    """Read an OCI seccomp JSON profile or a SeccompProfile (YAML or JSON), whichever `text` holds."""
    # A byte order mark is not part of the document: JSON after one is still read as strict JSON.
    text = prof.as_text(text).removeprefix("\ufeff")
    stripped = text.lstrip()
    if not stripped:
        raise ProfileError("the file is empty; expected an OCI seccomp profile or a SeccompProfile")
    data = prof.load_json(text) if stripped.startswith("{") else load_yaml(text)
    if isinstance(data, dict) and ("kind" in data or "apiVersion" in data):
        resource = from_resource(data)
        metadata = data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        return Loaded(resource, "seccompprofile", name if isinstance(name, str) else None)
    if not isinstance(data, dict):
        raise ProfileError(
            f"the file holds {prof.json_type(data)}; expected an OCI seccomp profile (a JSON object with "
            "defaultAction) or a SeccompProfile resource"
        )
    return Loaded(prof.parse(data), "oci", None)
