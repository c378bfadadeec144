"""The recording webhook's decision for one AdmissionReview. Pure: bytes in, bytes out.

On a pod CREATE, every container that a ProfileRecording of the pod's namespace selects gets the
hook's per-container annotation `io.containers.trace-syscall/<container>` pointing into that
recording's folder (syscribe.controller.dumppath), replacing any value the pod brought itself (a pod
must not choose where its own recording lands), and the pod gets the label `syscribe.io/recording`.
Anything else (other resources, other operations, pods nothing selects) is allowed untouched. A
request that is not an AdmissionReview gets HTTP 400 and a one-line reason; the webhook is registered
with `failurePolicy: Ignore`, so the pod is still created.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from syscribe import annotations as keys
from syscribe.controller import dumppath
from syscribe.controller.recording import (
    LABEL_RECORDING,
    Recording,
    is_label_value,
    selecting,
)

TRACE_KEY = keys.TRACE_SYSCALL
REVIEW_API_VERSION = "admission.k8s.io/v1"
MAX_CONTAINERS = 1024  # far above what a pod can hold; bounds the work one request can ask for


class ReviewError(ValueError):
    """The body is not an AdmissionReview this webhook can answer; the message says why."""


@dataclass(frozen=True, slots=True)
class Decision:
    uid: str
    patch: list[dict[str, Any]]  # empty: allowed unchanged
    recorded: tuple[tuple[str, str], ...] = ()  # (recording, container) pairs, for logs and metrics

    def response(self) -> bytes:
        answer: dict[str, Any] = {"uid": self.uid, "allowed": True}
        if self.patch:
            answer["patchType"] = "JSONPatch"
            answer["patch"] = base64.b64encode(orjson.dumps(self.patch)).decode()
        return orjson.dumps({"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": answer})


def _request(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(
            f"body is not JSON ({exc}); expected an {REVIEW_API_VERSION} AdmissionReview"
        ) from None
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"body is not an AdmissionReview; expected kind AdmissionReview, {REVIEW_API_VERSION}"
        )
    if doc.get("apiVersion") != REVIEW_API_VERSION:
        raise ReviewError(
            f"AdmissionReview apiVersion {str(doc.get('apiVersion'))[:40]!r} is not served; register the "
            f"webhook with admissionReviewVersions: [v1]"
        )
    request = doc.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise ReviewError("AdmissionReview request has no uid")
    return request


def _is_pod_create(request: Mapping[str, Any]) -> bool:
    resource = request.get("resource")
    return (
        isinstance(resource, dict)
        and resource.get("group") == ""
        and resource.get("resource") == "pods"
        and not request.get("subResource")
        and request.get("operation") == "CREATE"
    )


def _containers(spec: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for field in ("initContainers", "containers"):
        items = spec.get(field) or []
        if not isinstance(items, list):
            raise ReviewError(f"pod spec.{field} is not a list")
        for item in items:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name:
                raise ReviewError(f"pod spec.{field} has a container without a name")
            names.append(name)
    if len(names) > MAX_CONTAINERS:
        raise ReviewError(f"pod has {len(names)} containers; at most {MAX_CONTAINERS} are handled")
    return names


def _string_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ReviewError(f"pod metadata.{what} is not a map of strings")
    return dict(value)


def decide(body: bytes, recordings: Iterable[Recording], root: str) -> Decision:
    """The answer to one AdmissionReview body, or ReviewError for a body that is not one."""
    request = _request(body)
    uid = request["uid"]
    if not _is_pod_create(request):
        return Decision(uid, [])
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise ReviewError("pod CREATE without the pod (request.object)")
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        raise ReviewError("pod metadata or spec is not an object")
    namespace = request.get("namespace") or meta.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise ReviewError("pod CREATE without a namespace")
    labels = _string_map(meta.get("labels"), "labels")
    chosen = selecting(recordings, namespace, labels)
    if not chosen:
        return Decision(uid, [])
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    generate_name = meta.get("generateName") if isinstance(meta.get("generateName"), str) else None
    annotations = _string_map(meta.get("annotations"), "annotations")
    recorded: list[tuple[str, str]] = []
    for container in _containers(spec):
        recording = next((r for r in chosen if r.records(container)), None)
        if recording is None:
            continue
        try:
            where = dumppath.for_pod(namespace, recording.name, container, name, generate_name, uid)
        except dumppath.DumpPathError as exc:
            raise ReviewError(str(exc)) from None
        annotations[f"{TRACE_KEY}/{container}"] = f"of:{root.rstrip('/')}/{where.relative()}"
        recorded.append((recording.name, container))
    if not recorded:
        return Decision(uid, [])
    patch: list[dict[str, Any]] = [{"op": "add", "path": "/metadata/annotations", "value": annotations}]
    first = recorded[0][0]
    # A label value holds 63 characters; a longer recording name is named by the annotations alone
    # rather than making the pod invalid.
    if is_label_value(first):
        patch.append({"op": "add", "path": "/metadata/labels", "value": {**labels, LABEL_RECORDING: first}})
    return Decision(uid, patch, tuple(recorded))


def refusal(uid: str | None, message: str) -> bytes:
    """An AdmissionReview that allows the object but carries a warning (used when the body was readable
    enough to have a uid); the API server shows the warning to whoever created the pod."""
    return orjson.dumps(
        {
            "apiVersion": REVIEW_API_VERSION,
            "kind": "AdmissionReview",
            "response": {
                "uid": uid or "",
                "allowed": True,
                "warnings": [f"syscribe webhook: {message}"[:256]],
            },
        }
    )
