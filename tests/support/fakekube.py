"""A Kubernetes API server in one file, for tests (no real one can be installed on this machine).

It speaks the REST protocol the real `kubernetes` client uses, over HTTP on 127.0.0.1 with an ephemeral
port, threaded:

- core (`/api/v1/...`) and group (`/apis/{group}/{version}/...`) resources, namespaced or cluster
  scoped, with discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`); pods, namespaces,
  nodes, configmaps and events are there from the start, custom resources are added with `register`;
- list with `resourceVersion`, `labelSelector` (equality and set based), `fieldSelector` (the fields
  the real server supports for the kind: for pods metadata.name/namespace, spec.nodeName, status.phase
  ...), `limit` and `continue`;
- watch (`watch=true`): ADDED / MODIFIED / DELETED / BOOKMARK / ERROR events as JSON lines in a chunked
  response, resumed from a `resourceVersion` (events after it), synthetic ADDED events for the current
  state when none is given (or "0"), objects leaving a selector arrive as DELETED and entering it as
  ADDED, bookmarks when `allowWatchBookmarks` is set, `timeoutSeconds`; a version older than the
  retained history gets an ERROR event with a 410 Expired Status (`compact()` forgets the history, as
  etcd compaction does);
- create (POST, `generateName`), get, update (PUT, 409 Conflict on a stale resourceVersion), the
  `/status` subresource, patch (merge, strategic-merge as a merge for built-in kinds, JSON patch),
  delete (finalizers hold the object with a deletionTimestamp until they are removed; preconditions);
  failures are Status objects with the real reasons (NotFound, AlreadyExists, Conflict, Invalid,
  BadRequest, MethodNotAllowed, UnsupportedMediaType, Expired, Unauthorized).

The server can be stopped and started again on the same port with its store intact (`stop()`, then
`start()`), as an API server that goes away and comes back with its etcd; give `port` to choose the
port before the first start (`free_port()`), so that a kubeconfig can point at a server not up yet
(`write_kubeconfig(path)`).

Not modelled: admission, defaulting of kind-specific fields, validation beyond names, server-side
apply, graceful pod deletion (pods go at once, as with a grace period of 0), consistent snapshots for
`continue` (later pages show the current state), the `/watch/` legacy paths.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import random
import socket
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]

_POD_FIELDS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    }
)


@dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = True
    fields: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})
    builtin: bool = False  # built-in kinds accept strategic merge patches; custom resources do not

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"


CORE = (
    Resource("", "v1", "pods", "Pod", fields=_POD_FIELDS, builtin=True),
    Resource(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        fields=frozenset({"metadata.name", "status.phase"}),
        builtin=True,
    ),
    Resource(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        fields=frozenset({"metadata.name", "spec.unschedulable"}),
        builtin=True,
    ),
    Resource("", "v1", "configmaps", "ConfigMap", status_subresource=False, builtin=True),
    Resource("", "v1", "events", "Event", status_subresource=False, builtin=True),
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.plural} "{name}" not found', {"name": name, "kind": res.plural})


# --- selectors ------------------------------------------------------------------------------------


def _label_requirements(selector: str) -> list[Callable[[Mapping[str, str]], bool]]:
    """Parse a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) into predicates."""
    reqs: list[Callable[[Mapping[str, str]], bool]] = []
    parts: list[str] = []
    depth, current = 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    for raw in parts:
        part = raw.strip()
        if not part:
            continue
        words = part.split(None, 1)
        if len(words) == 2 and words[1].split(None, 1)[0] in ("in", "notin"):
            key = words[0]
            op, rest = words[1].split(None, 1)
            rest = rest.strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {part}")
            values = {v.strip() for v in rest[1:-1].split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                reqs.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in part:
            key, value = (s.strip() for s in part.split("!=", 1))
            reqs.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "==" in part or "=" in part:
            key, value = (s.strip() for s in part.replace("==", "=", 1).split("=", 1))
            reqs.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif part.startswith("!"):
            negated = part[1:].strip()
            reqs.append(lambda labels, k=negated: k not in labels)
        else:
            reqs.append(lambda labels, k=part: k in labels)
    return reqs


def _field_value(obj: JSON, path: str) -> str:
    node: Any = obj
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _field_requirements(res: Resource, selector: str) -> list[Callable[[JSON], bool]]:
    reqs: list[Callable[[JSON], bool]] = []
    for raw in selector.split(","):
        part = raw.strip()
        if not part:
            continue
        negate = "!=" in part
        key, value = (s.strip() for s in part.replace("==", "=").replace("!=", "=", 1).split("=", 1))
        if key not in res.fields:
            raise ApiError(400, "BadRequest", f"field label not supported: {key}")
        if negate:
            reqs.append(lambda obj, k=key, v=value: _field_value(obj, k) != v)
        else:
            reqs.append(lambda obj, k=key, v=value: _field_value(obj, k) == v)
    return reqs


@dataclass(slots=True)
class _Query:
    res: Resource
    namespace: str | None
    labels: list[Callable[[Mapping[str, str]], bool]]
    fields: list[Callable[[JSON], bool]]

    def matches(self, obj: JSON) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        return all(req(labels) for req in self.labels) and all(req(obj) for req in self.fields)


# --- patches --------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "json patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def parent(path: list[str]) -> tuple[Any, str]:
        if not path:
            raise ApiError(422, "Invalid", "cannot address the document root")
        node = doc
        for key in path[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node, path[-1]

    def get(path: list[str]) -> Any:
        node = doc
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    def add(path: list[str], value: Any) -> None:
        node, key = parent(path)
        if isinstance(node, list):
            node.insert(len(node) if key == "-" else int(key), value)
        else:
            node[key] = value

    def remove(path: list[str]) -> Any:
        node, key = parent(path)
        return node.pop(int(key)) if isinstance(node, list) else node.pop(key)

    for op in ops:
        try:
            kind, path = op["op"], _pointer(op["path"])
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(path, remove(_pointer(op["from"])))
            elif kind == "copy":
                add(path, copy.deepcopy(get(_pointer(op["from"]))))
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
            else:
                raise ApiError(400, "BadRequest", f"unknown json patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise ApiError(422, "Invalid", f"json patch failed: {err!r}") from None
    return doc


# --- the store ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Event:
    rv: int
    res: Resource
    type: str
    obj: JSON
    old: JSON | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKube:
    """The server and its store. `with FakeKube() as kube:` starts it; `kube.url` is its address."""

    def __init__(
        self,
        *,
        bookmark_interval: float = 1.0,
        history: int = 10_000,
        token: str | None = None,
        port: int = 0,
    ) -> None:
        self.bookmark_interval = bookmark_interval
        self.port = port  # 0 until the first start picks one, unless given
        self.token = token
        self.requests: list[tuple[str, str]] = []  # (method, path with query), in order
        self._resources: dict[tuple[str, str, str], Resource] = {}
        self._objects: dict[tuple[str, str, str, str], JSON] = {}  # (group, plural, ns, name)
        self._events: deque[_Event] = deque()
        self._history = history
        self._rv = 1
        self._compacted = 0  # watches from a version below this get 410
        self._cond = threading.Condition()
        self._closing = False
        self._epoch = 0  # bumped by drop_watches(): every open watch ends
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        for res in CORE:
            self.register(res)

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> FakeKube:
        handler = type("Handler", (_Handler,), {"kube": self})
        with self._cond:
            self._closing = False
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = server.server_address[1]
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakekube", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @staticmethod
    def free_port() -> int:
        """A port on 127.0.0.1 that nothing listens on now (for a server started later)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            return port

    def write_kubeconfig(self, path: Path, *, token: str | None = None) -> Path:
        """A kubeconfig for this server's address (started or not), as kubectl would use it."""
        assert self.port, "give a port or start() first"
        user: JSON = {}
        if token is not None or self.token is not None:
            user["token"] = token if token is not None else self.token
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        # JSON is YAML: the client reads it as its kubeconfig.
        path.write_text(json.dumps(config, indent=2))
        return path

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.port, "start() first"
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> Any:
        """A kubernetes.client.Configuration pointing at this server."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        if self.token is not None:
            config.api_key = {"authorization": self.token}
            config.api_key_prefix = {"authorization": "Bearer"}
        return config

    def api_client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(self.configuration())

    # store API (also used by the HTTP handler) ----------------------------------------------------

    def register(self, res: Resource) -> Resource:
        self._resources[(res.group, res.version, res.plural)] = res
        return res

    def resource(self, plural: str, group: str = "", version: str | None = None) -> Resource:
        for (g, v, p), res in self._resources.items():
            if g == group and p == plural and (version is None or v == version):
                return res
        raise KeyError(f"no resource {group}/{plural}")

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def compact(self) -> int:
        """Forget the event history (as etcd compaction): resuming a watch from before now gets 410."""
        with self._cond:
            self._events.clear()
            self._compacted = self._rv
            return self._rv

    def drop_watches(self) -> None:
        """End every open watch now, as an API server restart or a load balancer would."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()

    def _key(self, res: Resource, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (res.group, res.plural, (namespace or "") if res.namespaced else "", name)

    def _record(self, res: Resource, kind: str, obj: JSON, old: JSON | None) -> None:
        self._events.append(_Event(self._rv, res, kind, copy.deepcopy(obj), old))
        while len(self._events) > self._history:
            dropped = self._events.popleft()
            self._compacted = dropped.rv
        self._cond.notify_all()

    def _bump(self, obj: JSON) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def create(self, res: Resource | str, obj: JSON, namespace: str | None = None) -> JSON:
        res = self.resource(res) if isinstance(res, str) else res
        obj = copy.deepcopy(obj)
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if res.namespaced:
            body_ns = meta.get("namespace")
            if namespace is None:
                namespace = body_ns or "default"
            elif body_ns not in (None, "", namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        with self._cond:
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise ApiError(
                        422,
                        "Invalid",
                        f"{res.kind} is invalid: metadata.name: Required value: "
                        "name or generateName is required",
                    )
                alphabet = "bcdfghjklmnpqrstvwxz2456789"
                meta["name"] = prefix + "".join(random.choice(alphabet) for _ in range(5))
            name = meta["name"]
            if (
                not isinstance(name, str)
                or len(name) > 253
                or any(c not in string.ascii_lowercase + string.digits + "-." for c in name)
            ):
                raise ApiError(
                    422, "Invalid", f'{res.kind} "{name}" is invalid: metadata.name: Invalid value'
                )
            key = self._key(res, meta.get("namespace"), name)
            if key in self._objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{res.plural} "{name}" already exists',
                    {"name": name, "kind": res.plural},
                )
            obj["kind"] = res.kind
            obj["apiVersion"] = res.api_version
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            meta.pop("deletionTimestamp", None)
            self._bump(obj)
            self._objects[key] = obj
            self._record(res, "ADDED", obj, None)
            return copy.deepcopy(obj)

    def get(self, res: Resource | str, name: str, namespace: str | None = None) -> JSON:
        res = self.resource(res) if isinstance(res, str) else res
        with self._cond:
            obj = self._objects.get(self._key(res, namespace, name))
            if obj is None:
                raise _not_found(res, name)
            return copy.deepcopy(obj)

    def update(
        self, res: Resource | str, obj: JSON, namespace: str | None = None, *, subresource: str | None = None
    ) -> JSON:
        res = self.resource(res) if isinstance(res, str) else res
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body must be an object with metadata")
        name = obj["metadata"].get("name")
        if not isinstance(name, str):
            raise ApiError(422, "Invalid", f"{res.kind} is invalid: metadata.name: Required value")
        with self._cond:
            key = self._key(
                res, namespace if namespace is not None else obj["metadata"].get("namespace"), name
            )
            old = self._objects.get(key)
            if old is None:
                raise _not_found(res, name)
            return self._replace(res, key, old, copy.deepcopy(obj), subresource)

    def _replace(
        self, res: Resource, key: tuple[str, str, str, str], old: JSON, new: JSON, subresource: str | None
    ) -> JSON:
        meta = new.setdefault("metadata", {})
        wanted = meta.get("resourceVersion")
        if wanted not in (None, "") and wanted != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.plural} "{key[3]}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": key[3], "kind": res.plural},
            )
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            new = merged
        elif res.status_subresource and "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        elif res.status_subresource:
            new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        new["kind"], new["apiVersion"] = res.kind, res.api_version
        generation = old["metadata"].get("generation", 1)
        meta["generation"] = generation + 1 if new.get("spec") != old.get("spec") else generation
        if old["metadata"].get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone from an object being deleted: it goes now.
            self._bump(new)
            del self._objects[key]
            self._record(res, "DELETED", new, old)
            return copy.deepcopy(new)
        self._bump(new)
        self._objects[key] = new
        self._record(res, "MODIFIED", new, old)
        return copy.deepcopy(new)

    def patch(
        self,
        res: Resource | str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        content_type: str = "application/merge-patch+json",
        subresource: str | None = None,
    ) -> JSON:
        res = self.resource(res) if isinstance(res, str) else res
        with self._cond:
            key = self._key(res, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise _not_found(res, name)
            if content_type == "application/json-patch+json":
                new = json_patch(old, patch)
            elif content_type == "application/merge-patch+json" or (
                content_type == "application/strategic-merge-patch+json" and res.builtin
            ):
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "a merge patch must be an object")
                new = merge_patch(old, patch)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json"
                    + (", application/strategic-merge-patch+json" if res.builtin else ""),
                )
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise ApiError(422, "Invalid", "the patch removed the object's metadata")
            if subresource == "status":
                return self._replace(res, key, old, new, "status")
            if res.status_subresource:
                new["status"] = copy.deepcopy(old.get("status"))
                if new["status"] is None:
                    new.pop("status")
            return self._replace(res, key, old, new, "patch")

    def delete(
        self,
        res: Resource | str,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> JSON:
        res = self.resource(res) if isinstance(res, str) else res
        with self._cond:
            key = self._key(res, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise _not_found(res, name)
            for field, current in (
                ("uid", old["metadata"]["uid"]),
                ("resourceVersion", old["metadata"]["resourceVersion"]),
            ):
                wanted = (preconditions or {}).get(field)
                if wanted is not None and wanted != current:
                    raise ApiError(
                        409,
                        "Conflict",
                        f"Precondition failed: {field} in precondition: {wanted}, "
                        f"{field} in object meta: {current}",
                        {"name": name, "kind": res.plural},
                    )
            if old["metadata"].get("finalizers"):
                if not old["metadata"].get("deletionTimestamp"):
                    new = copy.deepcopy(old)
                    new["metadata"]["deletionTimestamp"] = _now()
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                    self._bump(new)
                    self._objects[key] = new
                    self._record(res, "MODIFIED", new, old)
                    return copy.deepcopy(new)
                return copy.deepcopy(old)
            gone = copy.deepcopy(old)
            self._bump(gone)
            del self._objects[key]
            self._record(res, "DELETED", gone, old)
            return copy.deepcopy(gone)

    def list(self, query: _Query, limit: int | None = None, token: str | None = None) -> JSON:
        with self._cond:
            rv = self._rv
            items = [
                copy.deepcopy(obj)
                for key, obj in sorted(self._objects.items())
                if key[0] == query.res.group and key[1] == query.res.plural and query.matches(obj)
            ]
            compacted = self._compacted
        start = ""
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                start, token_rv = str(decoded["start"]), int(decoded["rv"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "BadRequest", "continue key is not valid") from None
            if token_rv < compacted:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result.",
                )
        if start:
            items = [o for o in items if self._sort_key(o) > start]
        meta: JSON = {"resourceVersion": str(rv)}
        if limit is not None and limit > 0 and len(items) > limit:
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": rv, "start": self._sort_key(items[-1])}).encode()
            ).decode()
            meta["remainingItemCount"] = 0
        return {
            "kind": f"{query.res.kind}List",
            "apiVersion": query.res.api_version,
            "metadata": meta,
            "items": items,
        }

    @staticmethod
    def _sort_key(obj: JSON) -> str:
        meta = obj.get("metadata", {})
        return f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    def watch(
        self, query: _Query, resource_version: str | None, timeout: float, bookmarks: bool
    ) -> Iterator[JSON]:
        """The events of a watch, as the server would stream them, until timeout or server stop."""
        res = query.res
        deadline = time.monotonic() + timeout
        with self._cond:
            epoch = self._epoch
            if resource_version in (None, "", "0"):
                since = self._rv
                initial = [
                    copy.deepcopy(obj)
                    for key, obj in sorted(self._objects.items())
                    if key[0] == res.group and key[1] == res.plural and query.matches(obj)
                ]
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise ApiError(
                        400, "BadRequest", f"invalid resource version {resource_version!r}"
                    ) from None
                initial = []
            expired = self._expired(since)
        if expired is not None:
            yield expired
            return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            with self._cond:
                while not self._closing and self._epoch == epoch:
                    pending = [e for e in self._events if e.rv > since]
                    now = time.monotonic()
                    if pending or now >= deadline or (bookmarks and now >= next_bookmark):
                        break
                    self._cond.wait(min(deadline, next_bookmark if bookmarks else deadline) - now)
                if self._closing or self._epoch != epoch:
                    return
                expired = self._expired(since)
                pending = [e for e in self._events if e.rv > since]
                current = self._rv
            if expired is not None:
                yield expired
                return
            for event in pending:
                since = event.rv
                if event.res != res:
                    continue
                now_in = query.matches(event.obj)
                was_in = event.old is not None and query.matches(event.old)
                if event.type == "ADDED" and now_in:
                    yield {"type": "ADDED", "object": event.obj}
                elif event.type == "MODIFIED" and now_in:
                    yield {"type": "MODIFIED" if was_in else "ADDED", "object": event.obj}
                elif (event.type == "MODIFIED" and was_in) or (
                    event.type == "DELETED" and (was_in or now_in)
                ):
                    yield {"type": "DELETED", "object": event.obj}
            now = time.monotonic()
            if bookmarks and now >= next_bookmark:
                next_bookmark = now + self.bookmark_interval
                since = max(since, current)
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": res.kind,
                        "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(since)},
                    },
                }
            if now >= deadline:
                return

    def _expired(self, since: int) -> JSON | None:
        """The ERROR event a watch from `since` gets once the history it needs is gone (lock held)."""
        if since >= self._compacted:
            return None
        status = ApiError(410, "Expired", f"too old resource version: {since} ({self._compacted})").status()
        return {"type": "ERROR", "object": status}

    # discovery ------------------------------------------------------------------------------------

    def discovery(self, path: list[str]) -> JSON | None:
        if path == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == ["apis"]:
            groups: dict[str, list[str]] = {}
            for g, v, _p in self._resources:
                if g:
                    groups.setdefault(g, [])
                    if v not in groups[g]:
                        groups[g].append(v)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in sorted(groups.items())
                ],
            }
        if path == ["api", "v1"] or (len(path) == 3 and path[0] == "apis"):
            group, version = ("", "v1") if path[0] == "api" else (path[1], path[2])
            resources = [r for (g, v, _p), r in self._resources.items() if g == group and v == version]
            if not resources:
                return None
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            listing = [
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": verbs,
                }
                for r in resources
            ]
            listing += [
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
                for r in resources
                if r.status_subresource
            ]
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": listing,
            }
        return None


# --- HTTP -----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube
    protocol_version = "HTTP/1.1"
    _raw_body = b""

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read kube.requests instead
        pass

    def setup(self) -> None:
        super().setup()
        self.kube._sockets.add(self.connection)

    def finish(self) -> None:
        self.kube._sockets.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, code: int, body: JSON) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _body(self) -> Any:
        raw = self._raw_body
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None

    def _route(self, parts: list[str]) -> tuple[Resource, str | None, str | None, str | None]:
        """(resource, namespace, name, subresource) of a resource path."""
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = self.kube._resources.get((group, version, rest[0]))
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not res.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and (sub != "status" or not res.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if res.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, namespace, name, sub

    def _dispatch(self, method: str) -> None:
        kube = self.kube
        kube.requests.append((method, self.path))
        # Read the whole body first, whatever the answer: on a kept-alive connection what is left
        # unread would be taken for the next request.
        self._raw_body = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        parts = [p for p in split.path.split("/") if p]
        try:
            if kube.token is not None and self.headers.get("Authorization") != f"Bearer {kube.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if method == "GET" and (doc := kube.discovery(parts)) is not None:
                self._send(200, doc)
                return
            res, namespace, name, sub = self._route(parts)
            if method == "GET" and name is None:
                q = _Query(
                    res,
                    namespace,
                    _label_requirements(query.get("labelSelector", "")),
                    _field_requirements(res, query.get("fieldSelector", "")),
                )
                if query.get("watch") in ("true", "1"):
                    self._stream(q, query)
                    return
                limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
                self._send(200, kube.list(q, limit, query.get("continue") or None))
            elif method == "GET":
                assert name is not None
                self._send(200, kube.get(res, name, namespace))
            elif method == "POST" and name is None:
                self._send(201, kube.create(res, self._body(), namespace))
            elif method == "PUT" and name is not None:
                body = self._body()
                if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
                    raise ApiError(400, "BadRequest", "the body must be an object with metadata")
                if body["metadata"].get("name") != name:
                    raise ApiError(
                        400, "BadRequest", "the name of the object does not match the name on the URL"
                    )
                self._send(200, kube.update(res, body, namespace, subresource=sub))
            elif method == "PATCH" and name is not None:
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                self._send(
                    200,
                    kube.patch(
                        res, name, self._body(), namespace, content_type=content_type, subresource=sub
                    ),
                )
            elif method == "DELETE" and name is not None:
                options = self._body() or {}
                pre = options.get("preconditions") if isinstance(options, dict) else None
                self._send(
                    200,
                    kube.delete(res, name, namespace, preconditions=pre if isinstance(pre, dict) else None),
                )
            else:
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
        except ApiError as err:
            self._send(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _stream(self, q: _Query, query: Mapping[str, str]) -> None:
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds", "").isdigit() else 1800.0
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        version = query.get("resourceVersion")
        if version not in (None, "", "0") and not str(version).isdigit():
            # A bad version is a plain 400, before the stream starts.
            raise ApiError(400, "BadRequest", f"invalid resource version {version!r}")
        events = self.kube.watch(q, version, timeout, bookmarks)
        # Headers at once, as the real server sends them: the client returns from its call then.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            for event in events:
                self._chunk(event)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _chunk(self, event: JSON) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
