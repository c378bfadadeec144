"""ProfileRecording: syscribe's resource that asks for profiles of the pods its labels select. Pure.

A ProfileRecording (namespaced, group `syscribe.io`) says which pods of its namespace to record
(`podSelector`: matchLabels and matchExpressions, as a Deployment's selector), which of their containers
(`containers`; all of them, init containers included, when absent), whether replicas are merged into
one profile per container (`mergeStrategy: Containers`) or kept one per pod (`None`), and whether the
profiles it makes start disabled (`disableProfileAfterRecording`).

The API server validates the resource against the CRD's schema (packaging/kubernetes/crds/); this
module reads it again, because the webhook and the agent must never act on an object they cannot fully
understand: `parse_recording` raises RecordingError naming the field.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GROUP = "syscribe.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ProfileRecording"
PLURAL = "profilerecordings"

# Labels the webhook puts on a recorded pod and the agent on the profiles it makes.
LABEL_RECORDING = "syscribe.io/recording"
LABEL_NAMESPACE = "syscribe.io/recording-namespace"
LABEL_CONTAINER = "syscribe.io/container"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "syscribe"

MERGE_NONE = "None"
MERGE_CONTAINERS = "Containers"
MERGE_STRATEGIES = (MERGE_NONE, MERGE_CONTAINERS)
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

MAX_NAME = 253  # an object name (DNS-1123 subdomain)
MAX_LABEL_VALUE = 63
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
# A label key: an optional DNS-subdomain prefix and a name of up to 63 characters.
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?\Z")
MAX_SELECTOR_TERMS = 64
MAX_VALUES = 256
MAX_CONTAINERS = 256


class RecordingError(ValueError):
    """The ProfileRecording cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # NotIn: also true when the label is absent


@dataclass(frozen=True, slots=True)
class Selector:
    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: every term must hold; an empty selector selects every pod."""
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.expressions
        )


@dataclass(frozen=True, slots=True)
class Recording:
    namespace: str
    name: str
    uid: str
    selector: Selector
    containers: frozenset[str] | None  # None: every container, init containers included
    merge_strategy: str
    disable_after: bool

    def records(self, container: str) -> bool:
        return self.containers is None or container in self.containers

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def is_subdomain(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME and _SUBDOMAIN.match(name) is not None


def is_dns_label(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 63 and _DNS_LABEL.match(name) is not None


def is_label_key(key: object) -> bool:
    if not isinstance(key, str) or not key:
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and not is_subdomain(prefix):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.match(name) is not None


def is_label_value(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_LABEL_VALUE and _LABEL_NAME.match(value) is not None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_selector(data: object, where: str = "spec.podSelector") -> Selector:
    if not isinstance(data, dict):
        raise RecordingError(f"{where}: expected an object with matchLabels and/or matchExpressions")
    unknown = set(data) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise RecordingError(f"{where}: unknown field {_shown(sorted(unknown)[0])}")
    labels = data.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise RecordingError(f"{where}.matchLabels: expected an object of label: value")
    exprs = data.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise RecordingError(f"{where}.matchExpressions: expected a list")
    if len(labels) + len(exprs) > MAX_SELECTOR_TERMS:
        raise RecordingError(f"{where}: more than {MAX_SELECTOR_TERMS} terms")
    pairs = []
    for key, value in labels.items():
        if not is_label_key(key):
            raise RecordingError(f"{where}.matchLabels: {_shown(key)} is not a label key")
        if not is_label_value(value):
            raise RecordingError(f"{where}.matchLabels[{key}]: {_shown(value)} is not a label value")
        pairs.append((key, value))
    reqs = [_requirement(expr, f"{where}.matchExpressions[{i}]") for i, expr in enumerate(exprs)]
    return Selector(tuple(sorted(pairs)), tuple(reqs))


def _requirement(expr: object, where: str) -> Requirement:
    if not isinstance(expr, dict):
        raise RecordingError(f"{where}: expected an object with key, operator and values")
    key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values")
    if not is_label_key(key):
        raise RecordingError(f"{where}.key: {_shown(key)} is not a label key")
    if operator not in OPERATORS:
        raise RecordingError(f"{where}.operator: {_shown(operator)}; expected one of {', '.join(OPERATORS)}")
    assert isinstance(key, str) and isinstance(operator, str)
    if values is None:
        values = []
    if not isinstance(values, list) or len(values) > MAX_VALUES:
        raise RecordingError(f"{where}.values: expected a list of at most {MAX_VALUES} label values")
    for value in values:
        if not is_label_value(value):
            raise RecordingError(f"{where}.values: {_shown(value)} is not a label value")
    if operator in ("In", "NotIn") and not values:
        raise RecordingError(f"{where}: operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise RecordingError(f"{where}: operator {operator} takes no values")
    return Requirement(key, operator, frozenset(values))


def parse_recording(obj: object) -> Recording:
    """A ProfileRecording as the API sent it (JSON), or RecordingError naming what is wrong."""
    if not isinstance(obj, dict):
        raise RecordingError("not an object")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise RecordingError("metadata: missing")
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid", "")
    if not is_dns_label(namespace):
        raise RecordingError(f"metadata.namespace: {_shown(namespace)} is not a namespace name")
    if not is_subdomain(name):
        raise RecordingError(f"metadata.name: {_shown(name)} is not an object name")
    assert isinstance(namespace, str) and isinstance(name, str)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise RecordingError(f"{namespace}/{name}: spec missing")
    selector = parse_selector(spec.get("podSelector"))
    containers = spec.get("containers")
    chosen: frozenset[str] | None = None
    if containers is not None:
        if not isinstance(containers, list) or not containers or len(containers) > MAX_CONTAINERS:
            raise RecordingError(
                f"spec.containers: expected a non-empty list of at most {MAX_CONTAINERS} container names "
                "(leave it out to record every container)"
            )
        for c in containers:
            if not is_dns_label(c):
                raise RecordingError(f"spec.containers: {_shown(c)} is not a container name")
        chosen = frozenset(containers)
    merge = spec.get("mergeStrategy", MERGE_NONE)
    if merge not in MERGE_STRATEGIES:
        raise RecordingError(
            f"spec.mergeStrategy: {_shown(merge)}; expected one of {', '.join(MERGE_STRATEGIES)}"
        )
    disable = spec.get("disableProfileAfterRecording", False)
    if not isinstance(disable, bool):
        raise RecordingError("spec.disableProfileAfterRecording: expected true or false")
    return Recording(
        namespace=namespace,
        name=name,
        uid=uid if isinstance(uid, str) else "",
        selector=selector,
        containers=chosen,
        merge_strategy=merge,
        disable_after=disable,
    )


def selecting(recordings: Iterable[Recording], namespace: str, labels: Mapping[str, str]) -> list[Recording]:
    """The recordings of `namespace` that select a pod with `labels`, by name (the first one wins a
    container two of them select, so the choice does not depend on the order they were seen in)."""
    return sorted(
        (r for r in recordings if r.namespace == namespace and r.selector.matches(labels)),
        key=lambda r: r.name,
    )


# --- names --------------------------------------------------------------------------------------


def _fit(name: str, limit: int = MAX_NAME) -> str:
    """`name` when it fits, else its start and a digest of the whole (still unique, still valid)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11].rstrip('-.')}-{digest}"


def profile_name(recording: str, container: str, pod_suffix: str | None) -> str:
    """`<recording>-<container>`, or with merge strategy None `<recording>-<container>-<pod suffix>`."""
    base = f"{recording}-{container}"
    return _fit(base if pod_suffix is None else f"{base}-{pod_suffix}")
