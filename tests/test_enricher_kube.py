"""Pod labels from the API: the pure cache, and KubePodSource (the real kubernetes client) against
tests/support/fakekube.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from syscribe.enricher.kube import (
    KubeConfigError,
    KubePodSource,
    PodIndex,
    PodMeta,
    api_client_from_environment,
    mirror_of,
    pod_meta,
)

from tests.support.fakekube import FakeKube

NODE = "node-1"
UID = "aaaa2b4a-f398-41c0-928b-049e1cc4ec40"


def _pod(name: str, uid: str = UID, node: str = NODE, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": labels},
        "spec": {"nodeName": node},
    }


def _until(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for something the watch thread does; not a timing assertion."""
    for _ in range(1000):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# --- pure ----------------------------------------------------------------------------------------------


def test_pod_meta() -> None:
    assert pod_meta(_pod("web-0", app="web")) == PodMeta(UID, "web-0", "shop", {"app": "web"})


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        "pod",
        {},
        {"metadata": None},
        {"metadata": {"name": "x", "namespace": "y"}},  # no uid
        {"metadata": {"name": 5, "namespace": "y", "uid": "u"}},
        {"metadata": {"name": "x" * 2000, "namespace": "y", "uid": "u"}},
        {"metadata": {"name": "", "namespace": "y", "uid": "u"}},
    ],
)
def test_pod_meta_rejects_broken_objects(obj: object) -> None:
    assert pod_meta(obj) is None


def test_pod_meta_drops_broken_labels() -> None:
    obj = _pod("p")
    obj["metadata"]["labels"] = {"ok": "1", "num": 5, "": "empty key", "big": "x" * 5000, "k" * 5000: "v"}
    meta = pod_meta(obj)
    assert meta is not None and meta.labels == {"ok": "1"}
    obj["metadata"]["labels"] = {f"k{i}": "v" for i in range(100_000)}
    meta = pod_meta(obj)
    assert meta is not None and len(meta.labels) == 1024
    obj["metadata"]["labels"] = ["not", "a", "map"]
    assert pod_meta(obj) == PodMeta(UID, "p", "shop", {})


def test_index_add_modify_delete_and_tombstones() -> None:
    index = PodIndex(keep_deleted=60)
    index.apply("ADDED", _pod("p", app="a"), now=0)
    assert index.get(UID) == PodMeta(UID, "p", "shop", {"app": "a"})
    index.apply("MODIFIED", _pod("p", app="b"), now=1)
    assert index.get(UID).labels == {"app": "b"}  # type: ignore[union-attr]
    index.apply("DELETED", _pod("p", app="b"), now=2)
    assert index.get(UID) is not None  # late records of a deleted pod still get its labels
    index.apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}}, now=61)
    assert index.get(UID) is not None
    index.apply("BOOKMARK", {}, now=63)
    assert index.get(UID) is None and len(index) == 0


def test_index_relist_marks_missing_pods_deleted() -> None:
    index = PodIndex(keep_deleted=10)
    index.reset([_pod("a", uid="u1"), _pod("b", uid="u2")], now=0)
    index.reset([_pod("b", uid="u2"), "garbage", {"metadata": {}}], now=5)
    assert index.get("u1") is not None  # deleted while we were not watching: kept a while
    index.reset([_pod("b", uid="u2")], now=16)
    assert index.get("u1") is None and index.get("u2") is not None


def test_index_static_pods_by_their_own_uid() -> None:
    mirror = _pod("etcd-node-1", uid="mirror-uid", component="etcd")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "2a6b5d3c0d0e5b1c8b0f3e6f7a9b1c2d"}
    assert mirror_of(mirror) == "2a6b5d3c0d0e5b1c8b0f3e6f7a9b1c2d"
    index = PodIndex()
    index.apply("ADDED", mirror, now=0)
    meta = index.get("2a6b5d3c0d0e5b1c8b0f3e6f7a9b1c2d")  # the uid in the static pod's cgroup
    assert meta is not None and meta.name == "etcd-node-1" and meta.labels == {"component": "etcd"}
    assert index.get("") is None


# --- against the fake API server -----------------------------------------------------------------------


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def source(kube: FakeKube) -> Iterator[KubePodSource]:
    pods = KubePodSource(kube.api_client(), NODE, watch_timeout=30, retry_min=0.05, retry_max=0.2)
    pods.start()
    try:
        assert pods.wait_synced(30)
        yield pods
    finally:
        pods.stop()


def _create(kube: FakeKube, name: str, node: str = NODE, **labels: str) -> str:
    made = kube.create(
        "pods", {"metadata": {"name": name, "labels": labels}, "spec": {"nodeName": node}}, "shop"
    )
    return str(made["metadata"]["uid"])


def test_pods_of_this_node_appear_with_their_labels(kube: FakeKube) -> None:
    here = _create(kube, "web-0", app="web", tier="front")
    there = _create(kube, "db-0", node="node-2", app="db")
    with KubePodSource(kube.api_client(), NODE) as pods:
        assert pods.wait_synced(30)
        assert pods.pod(here) == PodMeta(here, "web-0", "shop", {"app": "web", "tier": "front"})
        assert pods.labels(here) == {"app": "web", "tier": "front"}
        assert pods.pod(there) is None and pods.labels(there) is None
        assert pods.synced()
    # Listed once, with the node's field selector.
    lists = [path for method, path in kube.requests if method == "GET" and "watch=" not in path]
    assert lists == ["/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&limit=500"]


def test_changes_arrive_through_the_watch(kube: FakeKube, source: KubePodSource) -> None:
    uid = _create(kube, "web-1", app="web")
    _until(lambda: source.labels(uid) == {"app": "web"}, "the new pod")
    kube.patch("pods", "web-1", {"metadata": {"labels": {"app": "web", "version": "2"}}}, "shop")
    _until(lambda: source.labels(uid) == {"app": "web", "version": "2"}, "the label change")
    kube.delete("pods", "web-1", "shop")
    _until(lambda: source.stats.events >= 3, "the deletion")
    assert source.labels(uid) == {"app": "web", "version": "2"}  # kept for late records
    assert source.stats.lists == 1  # all of it without listing again


def test_dropped_watch_resumes_from_its_version(kube: FakeKube, source: KubePodSource) -> None:
    first = _create(kube, "a")
    _until(lambda: source.pod(first) is not None, "the first pod")
    kube.drop_watches()
    second = _create(kube, "b")
    _until(lambda: source.pod(second) is not None, "the pod created while the watch was down")
    assert source.stats.lists == 1 and source.stats.watches >= 2
    watches = [path for method, path in kube.requests if "watch=true" in path]
    assert "resourceVersion=1&" not in watches[-1]  # resumed from what it had seen, not from the start


def test_expired_version_relists() -> None:
    # No bookmarks: the watch's version falls behind writes it does not see (a configmap here).
    with FakeKube(bookmark_interval=3600) as kube:
        pods = KubePodSource(kube.api_client(), NODE, retry_min=0.05, retry_max=0.2)
        with pods:
            assert pods.wait_synced(30)
            before = _create(kube, "a")
            _until(lambda: pods.pod(before) is not None, "the first pod")
            kube.create("configmaps", {"metadata": {"name": "cm"}}, "shop")
            kube.compact()  # etcd compaction: the watch's version is history now
            kube.drop_watches()  # it has to resume from that version: 410 Gone
            after = _create(kube, "b")
            _until(lambda: pods.pod(after) is not None, "the pod created after compaction")
            assert pods.stats.expired == 1 and pods.stats.lists == 2
            assert pods.pod(before) is not None


def test_paged_list(kube: FakeKube) -> None:
    uids = [_create(kube, f"p{i}") for i in range(5)]
    with KubePodSource(kube.api_client(), NODE, page_size=2) as pods:
        assert pods.wait_synced(30)
        assert all(pods.pod(uid) is not None for uid in uids)
    assert sum(1 for method, path in kube.requests if method == "GET" and "watch=" not in path) == 3


def test_lookups_never_call_the_api(kube: FakeKube, source: KubePodSource) -> None:
    uid = _create(kube, "web-0", app="web")
    _until(lambda: source.pod(uid) is not None, "the pod")
    calls = len(kube.requests)
    for _ in range(10_000):
        source.labels(uid)
        source.pod("unknown-uid")
    assert len(kube.requests) == calls


def test_unreachable_server_is_retried_and_reported() -> None:
    from kubernetes import client

    config = client.Configuration()
    config.host = "http://127.0.0.1:9"  # discard port: nothing listens
    pods = KubePodSource(client.ApiClient(config), NODE, request_timeout=2, retry_min=0.05, retry_max=0.1)
    pods.start()
    try:
        _until(lambda: pods.stats.errors >= 2, "two failed attempts")
        assert not pods.synced() and pods.pod(UID) is None
        assert pods.stats.last_error is not None and "\n" not in pods.stats.last_error
    finally:
        pods.stop()


def test_stop_ends_an_open_watch(kube: FakeKube) -> None:
    pods = KubePodSource(kube.api_client(), NODE, watch_timeout=3600)
    pods.start()
    assert pods.wait_synced(30)
    _until(lambda: pods.stats.watches == 1, "the watch")
    pods.stop(timeout=30)
    assert pods._thread is not None and not pods._thread.is_alive()


@pytest.mark.parametrize("name", ["", "a,b", "a=b"])
def test_node_name_must_be_plain(kube: FakeKube, name: str) -> None:
    with pytest.raises(ValueError):
        KubePodSource(kube.api_client(), name)


def test_config_from_a_kubeconfig(kube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{kube.url}"}}}}]
users: [{{name: me, user: {{token: abc}}}}]
contexts: [{{name: ctx, context: {{cluster: fake, user: me}}}}]
current-context: ctx
"""
    )
    uid = _create(kube, "web-0", app="web")
    with KubePodSource(api_client_from_environment(str(kubeconfig)), NODE) as pods:
        assert pods.wait_synced(30)
        assert pods.labels(uid) == {"app": "web"}


@pytest.mark.parametrize("content", [None, "", "not: [yaml", "apiVersion: v1\nkind: Config\n"])
def test_bad_kubeconfig_is_one_clear_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KubeConfigError) as err:
        api_client_from_environment(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_an_outage_is_reported_once_and_so_is_its_end() -> None:
    """At start and mid-run: one line when the API stops answering (not one per retry), one when it
    answers again; the pods already listed keep their labels meanwhile."""
    kube = FakeKube(port=FakeKube.free_port(), bookmark_interval=0.2)
    uid = _create(kube, "web-0", app="web")
    reports: list[tuple[str, str]] = []
    pods = KubePodSource(
        kube.api_client(), NODE, request_timeout=2, retry_min=0.05, retry_max=0.1,
        report=lambda code, text: reports.append((code, text)),
    )
    pods.start()
    try:
        _until(lambda: pods.stats.errors >= 3, "three failed attempts")
        assert [code for code, _ in reports] == ["kube_unreachable"]
        assert reports[0][1] == (
            f"Kubernetes API at {kube.url}: cannot connect: Connection refused; no pod labels until it "
            "answers (retrying)"
        )
        kube.start()
        assert pods.wait_synced(30)
        _until(lambda: len(reports) == 2, "the recovery")
        assert reports[1][0] == "kube_recovered"
        kube.stop()
        _until(lambda: len(reports) == 3 and pods.stats.errors >= 6, "the second outage, retried")
        assert reports[2][0] == "kube_unreachable"
        assert "pods already listed keep their labels" in reports[2][1]
        assert len(reports) == 3
        meta = pods.pod(uid)
        assert meta is not None and meta.labels == {"app": "web"}
        kube.start()  # the same store: the watch resumes from its version
        kube.patch("pods", "web-0", {"metadata": {"labels": {"app": "web2"}}}, "shop")
        _until(lambda: (m := pods.pod(uid)) is not None and m.labels == {"app": "web2"}, "the change")
        assert [code for code, _ in reports][-1] == "kube_recovered"
    finally:
        pods.stop()
        kube.stop()


def test_socket_errors_are_named_without_the_clients_wrappers() -> None:
    from syscribe.enricher.kube import _one_line

    inner = ConnectionRefusedError(111, "Connection refused")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("HTTPConnectionPool(host='x'): Max retries exceeded " + "x" * 5000) from exc
    except RuntimeError as wrapped:
        assert _one_line(wrapped) == "cannot connect: Connection refused"
    looped = RuntimeError("a")
    looped.__context__ = looped
    assert _one_line(looped) == "RuntimeError: a"
    assert len(_one_line(ValueError("y" * 10_000 + "\nsecond line"))) <= 300
