"""tests/support/fakekube.py against the real `kubernetes` client: what the client sends, the server
answers as the real API server would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.support.fakekube import FakeKube, Resource

NODE = "node-1"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def core(kube: FakeKube) -> client.CoreV1Api:
    return client.CoreV1Api(kube.api_client())


def _pod(name: str, node: str = NODE, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }


def _status(err: ApiException) -> dict[str, Any]:
    body = json.loads(err.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == err.status
    return body


def _watch(core: client.CoreV1Api, seconds: int = 1, **kwargs: Any) -> list[tuple[str, str]]:
    events = watch.Watch().stream(core.list_pod_for_all_namespaces, timeout_seconds=seconds, **kwargs)
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


# --- objects --------------------------------------------------------------------------------------


def test_create_get_list_delete(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_pod("shop", _pod("web-0", app="web"))
    assert made.metadata.uid and made.metadata.resource_version and made.metadata.namespace == "shop"
    assert made.metadata.creation_timestamp is not None
    got = core.read_namespaced_pod("web-0", "shop")
    assert got.metadata.uid == made.metadata.uid and got.spec.node_name == NODE
    assert [p.metadata.name for p in core.list_namespaced_pod("shop").items] == ["web-0"]
    assert core.list_namespaced_pod("other").items == []
    core.delete_namespaced_pod("web-0", "shop")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("web-0", "shop")
    body = _status(err.value)
    assert err.value.status == 404 and body["reason"] == "NotFound" and body["details"]["name"] == "web-0"


def test_already_exists_and_generate_name(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("shop", _pod("web-0"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("shop", _pod("web-0"))
    assert err.value.status == 409 and _status(err.value)["reason"] == "AlreadyExists"
    made = core.create_namespaced_pod(
        "shop", {"metadata": {"generateName": "job-"}, "spec": _pod("x")["spec"]}
    )
    assert made.metadata.name.startswith("job-") and len(made.metadata.name) == len("job-") + 5


def test_update_conflicts_on_a_stale_resource_version(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_pod("shop", _pod("web-0", app="web"))
    first.metadata.labels["tier"] = "front"
    second = core.replace_namespaced_pod("web-0", "shop", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    first.metadata.labels["tier"] = "back"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("web-0", "shop", first)
    assert err.value.status == 409 and _status(err.value)["reason"] == "Conflict"


def test_patches(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("shop", _pod("web-0", app="web", old="x"))
    # The client sends a dict as a strategic merge patch, a list as a JSON patch.
    patched = core.patch_namespaced_pod(
        "web-0", "shop", {"metadata": {"labels": {"tier": "front", "old": None}}}
    )
    assert patched.metadata.labels == {"app": "web", "tier": "front"}
    ops = [
        {"op": "replace", "path": "/metadata/labels/app", "value": "api"},
        {"op": "remove", "path": "/metadata/labels/tier"},
    ]
    patched = core.patch_namespaced_pod("web-0", "shop", ops)
    assert patched.metadata.labels == {"app": "api"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod(
            "web-0", "shop", [{"op": "test", "path": "/metadata/labels/app", "value": "no"}]
        )
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod("missing", "shop", {"metadata": {}})
    assert err.value.status == 404


def test_status_subresource(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("shop", _pod("web-0"))
    pod = core.read_namespaced_pod("web-0", "shop")
    pod.status = client.V1PodStatus(phase="Running")
    updated = core.replace_namespaced_pod_status("web-0", "shop", pod)
    assert updated.status.phase == "Running"
    # The main resource ignores status changes.
    updated.status.phase = "Failed"
    again = core.replace_namespaced_pod("web-0", "shop", updated)
    assert again.status.phase == "Running"
    assert [
        p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
    ] == ["web-0"]


def test_finalizers_hold_deletion(kube: FakeKube, core: client.CoreV1Api) -> None:
    pod = _pod("web-0")
    pod["metadata"]["finalizers"] = ["example.com/cleanup"]
    made = core.create_namespaced_pod("shop", pod)
    core.delete_namespaced_pod("web-0", "shop")
    held = core.read_namespaced_pod("web-0", "shop")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_pod("web-0", "shop", [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(ApiException):
        core.read_namespaced_pod("web-0", "shop")
    # The deletion mark, then the removal once the last finalizer went.
    assert _watch(core, resource_version=made.metadata.resource_version) == [
        ("MODIFIED", "web-0"),
        ("DELETED", "web-0"),
    ]


def test_delete_preconditions(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("shop", _pod("web-0"))
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("web-0", "shop", body=stale)
    assert err.value.status == 409
    core.delete_namespaced_pod("web-0", "shop")


# --- selectors and paging -------------------------------------------------------------------------


def test_selectors(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("a", _pod("p1", app="web", tier="front"))
    core.create_namespaced_pod("a", _pod("p2", app="web", tier="back"))
    core.create_namespaced_pod("b", _pod("p3", node="node-2", app="db"))

    def names(**kwargs: str) -> list[str]:
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items)

    assert names(field_selector=f"spec.nodeName={NODE}") == ["p1", "p2"]
    assert names(field_selector="spec.nodeName!=node-1") == ["p3"]
    assert names(field_selector="metadata.namespace=b,metadata.name=p3") == ["p3"]
    assert names(label_selector="app=web") == ["p1", "p2"]
    assert names(label_selector="app==web,tier!=front") == ["p2"]
    assert names(label_selector="app in (db, cache)") == ["p3"]
    assert names(label_selector="app notin (db),tier") == ["p1", "p2"]
    assert names(label_selector="!tier") == ["p3"]
    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces(field_selector="spec.containers=x")
    assert err.value.status == 400 and "field label not supported" in _status(err.value)["message"]


def test_paging(core: client.CoreV1Api) -> None:
    for i in range(7):
        core.create_namespaced_pod("shop", _pod(f"p{i}"))
    seen: list[str] = []
    token = None
    while True:
        page = core.list_namespaced_pod("shop", limit=3, _continue=token)
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"p{i}" for i in range(7)]


# --- watch ----------------------------------------------------------------------------------------


def test_watch_without_a_version_starts_with_the_current_state(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("shop", _pod("p1"))
    core.create_namespaced_pod("shop", _pod("p2"))
    assert _watch(core) == [("ADDED", "p1"), ("ADDED", "p2")]


def test_watch_resumes_from_a_version_and_follows_selectors(core: client.CoreV1Api) -> None:
    start = core.list_pod_for_all_namespaces().metadata.resource_version
    core.create_namespaced_pod("shop", _pod("p1", app="web"))
    core.patch_namespaced_pod("p1", "shop", {"metadata": {"labels": {"app": "db"}}})  # leaves app=web
    core.patch_namespaced_pod("p1", "shop", {"metadata": {"labels": {"app": "web"}}})  # comes back
    core.delete_namespaced_pod("p1", "shop")
    assert _watch(core, resource_version=start, label_selector="app=web") == [
        ("ADDED", "p1"),
        ("DELETED", "p1"),
        ("ADDED", "p1"),
        ("DELETED", "p1"),
    ]
    assert _watch(core, resource_version=start) == [
        ("ADDED", "p1"),
        ("MODIFIED", "p1"),
        ("MODIFIED", "p1"),
        ("DELETED", "p1"),
    ]


def test_watch_streams_live_events_and_bookmarks(core: client.CoreV1Api) -> None:
    start = core.list_pod_for_all_namespaces().metadata.resource_version

    def later() -> None:
        time.sleep(0.3)
        core.create_namespaced_pod("shop", _pod("live"))

    thread = threading.Thread(target=later)
    thread.start()
    events = _watch(core, seconds=2, resource_version=start, allow_watch_bookmarks=True)
    thread.join()
    assert ("ADDED", "live") in events and ("BOOKMARK", "") in events


def test_watch_from_a_compacted_version_is_410(kube: FakeKube, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("shop", _pod("p1"))
    old = core.list_pod_for_all_namespaces().metadata.resource_version
    core.create_namespaced_pod("shop", _pod("p2"))
    kube.compact()
    with pytest.raises(ApiException) as err:
        _watch(core, resource_version=old)
    assert err.value.status == 410 and "too old resource version" in str(err.value)


def test_watch_stops_when_the_client_stops(core: client.CoreV1Api) -> None:
    stream = watch.Watch()
    got: list[str] = []

    def stop_soon() -> None:
        time.sleep(0.3)
        stream.stop()

    core.create_namespaced_pod("shop", _pod("p1"))
    threading.Thread(target=stop_soon).start()
    try:
        for event in stream.stream(core.list_pod_for_all_namespaces, timeout_seconds=600):
            got.append(event["type"])
    except Exception:  # the shut socket surfaces as a protocol error in some client versions
        pass
    assert got[:1] == ["ADDED"]


# --- custom resources and discovery ---------------------------------------------------------------


def test_custom_resources(kube: FakeKube) -> None:
    kube.register(
        Resource(
            "security-profiles-operator.x-k8s.io", "v1", "seccompprofiles", "SeccompProfile", namespaced=False
        )
    )
    kube.register(Resource("syscribe.dev", "v1alpha1", "profilerecordings", "ProfileRecording"))
    custom = client.CustomObjectsApi(kube.api_client())
    group, version = "security-profiles-operator.x-k8s.io", "v1"
    body = {
        "apiVersion": f"{group}/v1",
        "kind": "SeccompProfile",
        "metadata": {"name": "rec-app"},
        "spec": {"defaultAction": "SCMP_ACT_ERRNO"},
    }
    made = custom.create_cluster_custom_object(group, version, "seccompprofiles", body)
    assert made["metadata"]["uid"] and made["metadata"]["generation"] == 1
    patched = custom.patch_cluster_custom_object(
        group, version, "seccompprofiles", "rec-app", {"spec": {"syscalls": []}}
    )
    assert (
        patched["spec"] == {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
        and patched["metadata"]["generation"] == 2
    )
    status = custom.patch_cluster_custom_object_status(
        group, version, "seccompprofiles", "rec-app", {"status": {"status": "Installed"}}
    )
    assert status["status"] == {"status": "Installed"} and status["metadata"]["generation"] == 2
    listed = custom.list_cluster_custom_object(group, version, "seccompprofiles")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["rec-app"]
    rec = {"metadata": {"name": "r1"}, "spec": {"podSelector": {"matchLabels": {"app": "x"}}}}
    custom.create_namespaced_custom_object("syscribe.dev", "v1alpha1", "shop", "profilerecordings", rec)
    got = custom.get_namespaced_custom_object("syscribe.dev", "v1alpha1", "shop", "profilerecordings", "r1")
    assert got["kind"] == "ProfileRecording" and got["apiVersion"] == "syscribe.dev/v1alpha1"
    custom.delete_cluster_custom_object(group, version, "seccompprofiles", "rec-app")
    with pytest.raises(ApiException) as err:
        custom.get_cluster_custom_object(group, version, "seccompprofiles", "rec-app")
    assert err.value.status == 404


def test_custom_resources_refuse_strategic_merge(kube: FakeKube) -> None:
    res = kube.register(Resource("syscribe.dev", "v1alpha1", "profilerecordings", "ProfileRecording"))
    kube.create(res, {"metadata": {"name": "r1"}}, "shop")
    with pytest.raises(Exception) as err:
        kube.patch(res, "r1", {"spec": {}}, "shop", content_type="application/strategic-merge-patch+json")
    assert getattr(err.value, "code", None) == 415


def test_discovery(kube: FakeKube) -> None:
    kube.register(Resource("syscribe.dev", "v1alpha1", "profilerecordings", "ProfileRecording"))
    api = kube.api_client()
    groups = client.ApisApi(api).get_api_versions()
    assert [g.name for g in groups.groups] == ["syscribe.dev"]
    resources = client.CustomObjectsApi(api).get_api_resources("syscribe.dev", "v1alpha1")
    assert {r.name for r in resources.resources} == {"profilerecordings", "profilerecordings/status"}
    assert "pods" in {r.name for r in client.CoreV1Api(api).get_api_resources().resources}


# --- hostile requests -----------------------------------------------------------------------------


def test_bad_requests_are_status_objects(kube: FakeKube) -> None:
    import urllib3

    http = urllib3.PoolManager()
    cases = [
        ("GET", "/api/v1/nothing", None, 404),
        ("GET", "/nowhere", None, 404),
        ("POST", "/api/v1/namespaces/a/pods", b"{not json", 400),
        ("POST", "/api/v1/namespaces/a/pods", b'{"metadata": {"name": "UPPER"}}', 422),
        ("POST", "/api/v1/namespaces/a/pods", b'{"metadata": {}}', 422),
        ("POST", "/api/v1/namespaces/a/pods", b'{"metadata": {"name": "x", "namespace": "b"}}', 400),
        ("PUT", "/api/v1/namespaces/a/pods", b"{}", 405),
        ("GET", "/api/v1/pods?watch=true&resourceVersion=abc", None, 400),
        ("GET", "/api/v1/pods?labelSelector=app%20in%20db", None, 400),
        ("PATCH", "/api/v1/namespaces/a/pods/x", b"{}", 404),
    ]
    for method, path, body, code in cases:
        resp = http.request(method, kube.url + path, body=body, headers={"Content-Type": "application/json"})
        assert resp.status == code, (method, path, resp.data)
        assert json.loads(resp.data)["kind"] == "Status"


def test_bearer_token_is_required_when_set() -> None:
    with FakeKube(token="s3cret") as kube:
        assert client.CoreV1Api(kube.api_client()).list_pod_for_all_namespaces().items == []
        config = kube.configuration()
        config.api_key = {}
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(client.ApiClient(config)).list_pod_for_all_namespaces()
        assert err.value.status == 401
