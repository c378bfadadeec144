"""What the runtimes' own files say about a container (pure: bytes in, values out).

The pod a container belongs to is written on the node by whoever created the container, in the OCI
bundle's config.json annotations:

- CRI-O: `io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid`,
  `io.kubernetes.container.name`, and its own `io.kubernetes.cri-o.*` keys (`Labels` holds the same
  names as JSON; on the sandbox it also holds the pod's labels);
- containerd's CRI plugin: `io.kubernetes.cri.sandbox-name`, `sandbox-namespace`, `sandbox-uid`,
  `container-name`, `container-type`;
- podman: `io.container.manager: libpod` and `io.podman.annotations.*` (the name is kept elsewhere,
  in containers/storage's containers.json);
- runc copies the annotations into its state.json as `key=value` labels (with `bundle=<path>`);
- docker (and cri-dockerd, which puts the kubelet's names in labels) keeps config.v2.json.

Everything here is read from files that a container's creator wrote, so every field is checked for
type and size, and anything odd is dropped rather than trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from syscribe import annotations as keys

# Kubernetes names are at most 253 characters; anything longer (or holding control characters) did not
# come from a kubelet and is not worth carrying into every output line.
MAX_NAME = 253
MAX_ANNOTATIONS = 4096
MAX_KEY = 317  # prefix (253) + "/" + name (63)
MAX_VALUE = 256 * 1024
MAX_LABELS = 1024
MAX_LABEL_VALUE = 63 * 4  # label values are at most 63 characters; allow some slack, then drop

ANNOTATION_KEYS: dict[str, tuple[str, ...]] = {
    "pod": (keys.POD_NAME, keys.CONTAINERD_POD_NAME),
    "namespace": (keys.POD_NAMESPACE, keys.CONTAINERD_POD_NAMESPACE),
    "pod_uid": (keys.POD_UID, keys.CONTAINERD_POD_UID),
    "container_name": (keys.CONTAINER_NAME, keys.CONTAINERD_CONTAINER_NAME),
}
CRIO_LABELS = keys.CRIO_LABELS
CRIO_SANDBOX_ID = keys.CRIO_SANDBOX_ID
CRIO_CONTAINER_TYPE = keys.CRIO_CONTAINER_TYPE
CONTAINERD_CONTAINER_TYPE = keys.CONTAINERD_CONTAINER_TYPE
MANAGER = "io.container.manager"
WANTED_KEYS = (
    *(key for keys in ANNOTATION_KEYS.values() for key in keys),
    CRIO_LABELS,
    CRIO_SANDBOX_ID,
    CRIO_CONTAINER_TYPE,
    CONTAINERD_CONTAINER_TYPE,
    MANAGER,
)


@dataclass(frozen=True, slots=True)
class BundleFacts:
    """What one runtime file says about one container."""

    annotations: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None  # the container's own name where the runtime keeps one (podman, docker)
    bundle: str | None = None  # the bundle path the runtime recorded (informative only: never read)


def clean_name(value: object) -> str | None:
    """`value` if it is a plausible name to print (a short string without control characters)."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None
    return value


def _loads(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def clean_annotations(raw: object) -> dict[str, str]:
    """The string-to-string entries of a JSON object, bounded in number and size. The keys this module
    reads are taken first, so that a pod with thousands of annotations cannot push them past the bound."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, str] = {}

    def take(key: object, value: object) -> None:
        if not isinstance(key, str) or not isinstance(value, str):
            return
        if len(key) <= MAX_KEY and len(value) <= MAX_VALUE:
            out[key] = value

    for key in WANTED_KEYS:
        if key in raw:
            take(key, raw[key])
    for key, value in raw.items():
        if len(out) >= MAX_ANNOTATIONS:
            break
        take(key, value)
    return out


def oci_config(data: bytes) -> BundleFacts | None:
    """An OCI runtime config.json (CRI-O, podman, containerd, crun's copy); None if it is not one."""
    doc = _loads(data)
    if not isinstance(doc, dict):
        return None
    return BundleFacts(annotations=clean_annotations(doc.get("annotations")))


def runc_state(data: bytes) -> BundleFacts | None:
    """runc's state.json: the annotations are the config's `labels`, `key=value`, plus `bundle=`."""
    doc = _loads(data)
    if not isinstance(doc, dict):
        return None
    config = doc.get("config")
    labels = config.get("labels") if isinstance(config, dict) else None
    pairs: dict[str, str] = {}
    bundle: str | None = None
    if isinstance(labels, list):
        # All of them (the file's size cap bounds the list): the wanted keys may come last.
        for label in labels:
            if not isinstance(label, str) or "=" not in label:
                continue
            key, value = label.split("=", 1)
            if key == "bundle":  # runc adds it after the annotations
                bundle = value
            elif key:
                pairs[key] = value
    return BundleFacts(annotations=clean_annotations(pairs), bundle=bundle)


def crun_status(data: bytes) -> str | None:
    """The bundle path in crun's `status` file, or None if the file is not crun's."""
    doc = _loads(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return None
    bundle = doc.get("bundle")
    return bundle if isinstance(bundle, str) else ""


def docker_config(data: bytes) -> BundleFacts | None:
    """docker's config.v2.json: `Name` ("/name") and the labels (cri-dockerd puts the pod's there)."""
    doc = _loads(data)
    if not isinstance(doc, dict):
        return None
    config = doc.get("Config")
    labels = clean_annotations(config.get("Labels")) if isinstance(config, dict) else {}
    raw_name = doc.get("Name")
    name = clean_name(raw_name.lstrip("/")) if isinstance(raw_name, str) else None
    return BundleFacts(annotations=labels, name=name)


def storage_names(data: bytes) -> dict[str, str]:
    """containers/storage's containers.json: container id -> its first name (podman's names)."""
    doc = _loads(data)
    out: dict[str, str] = {}
    if not isinstance(doc, list):
        return out
    for entry in doc:
        if not isinstance(entry, dict):
            continue
        cid, names = entry.get("id"), entry.get("names")
        if isinstance(cid, str) and isinstance(names, list) and names:
            name = clean_name(names[0])
            if name is not None:
                out[cid] = name
    return out


def crio_labels(annotations: Mapping[str, str]) -> dict[str, str]:
    """The labels CRI-O stored as JSON in `io.kubernetes.cri-o.Labels` (bounded)."""
    raw = annotations.get(CRIO_LABELS)
    if raw is None:
        return {}
    doc = _loads(raw.encode("utf-8", "surrogatepass"))
    labels: dict[str, str] = {}
    if not isinstance(doc, dict):
        return labels
    for key, value in doc.items():
        if len(labels) >= MAX_LABELS:
            break
        if (
            isinstance(key, str)
            and isinstance(value, str)
            and len(key) <= MAX_KEY
            and len(value) <= MAX_LABEL_VALUE
        ):
            labels[key] = value
    return labels


def pod_labels(sandbox_annotations: Mapping[str, str]) -> dict[str, str]:
    """The pod's own labels, from its CRI-O sandbox: the kubelet's `io.kubernetes.*` keys removed."""
    labels = crio_labels(sandbox_annotations)
    return {k: v for k, v in labels.items() if not k.startswith(keys.KUBERNETES_PREFIX)}


@dataclass(frozen=True, slots=True)
class PodFacts:
    pod: str | None
    namespace: str | None
    pod_uid: str | None
    container_name: str | None
    manager: str | None  # "cri-o", "containerd", "podman" when the annotations say who made it
    sandbox: bool


def pod_facts(annotations: Mapping[str, str]) -> PodFacts:
    """Pod, namespace, uid and container name from a container's annotations (CRI-O, containerd)."""
    fallback = crio_labels(annotations) if CRIO_LABELS in annotations else {}

    def first(what: str) -> str | None:
        for key in ANNOTATION_KEYS[what]:
            value = clean_name(annotations.get(key))
            if value is not None:
                return value
        # CRI-O also keeps the kubelet's labels as JSON, the same names under the first key.
        return clean_name(fallback.get(ANNOTATION_KEYS[what][0]))

    manager_value = annotations.get(MANAGER)
    if manager_value == "libpod":
        manager: str | None = "podman"
    elif manager_value == "cri-o" or any(k.startswith(keys.CRIO_PREFIX) for k in annotations):
        manager = "cri-o"
    elif any(k.startswith(keys.CONTAINERD_PREFIX) for k in annotations):
        manager = "containerd"
    else:
        manager = None
    sandbox = (
        annotations.get(CRIO_CONTAINER_TYPE) == "sandbox"
        or annotations.get(CONTAINERD_CONTAINER_TYPE) == "sandbox"
    )
    container_name = first("container_name")
    if container_name is None and sandbox:
        container_name = "POD"  # what the kubelet calls a pod's sandbox (pause) container
    return PodFacts(
        pod=first("pod"),
        namespace=first("namespace"),
        pod_uid=first("pod_uid"),
        container_name=container_name,
        manager=manager,
        sandbox=sandbox,
    )
