"""Pod labels from the API: the pure cache, and KubePodSource (the real kubernetes client) against a real
kube-apiserver (tests/support/kubeapi.py), reached as the enricher's own service account with the
ClusterRole that packaging/kubernetes/enricher.yaml ships.

Each test has its own namespace and its own node name, so that the pods of other tests (the API server
lives for the whole session) are not on its node; what the source asked the server is read from the
server's audit log, filtered by the test's service account."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from tests.support.enricherkube import EnricherCluster
from tests.support.kubeapi import KubeAPI

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


# --- against the real API server ------------------------------------------------------------------------


@pytest.fixture
def cluster(kube_api: KubeAPI, kube_namespace: str) -> EnricherCluster:
    return EnricherCluster.make(kube_api, kube_namespace)


@pytest.fixture
def source(cluster: EnricherCluster) -> Iterator[KubePodSource]:
    pods = KubePodSource(cluster.api_client(), cluster.node, watch_timeout=30, retry_min=0.05, retry_max=0.2)
    pods.start()
    try:
        assert pods.wait_synced(30)
        yield pods
    finally:
        pods.stop()


def test_pods_of_this_node_appear_with_their_labels(cluster: EnricherCluster) -> None:
    here = cluster.create("web-0", app="web", tier="front")
    there = cluster.create("db-0", node=f"{cluster.node}-other", app="db")
    with KubePodSource(cluster.api_client(), cluster.node) as pods:
        assert pods.wait_synced(30)
        assert pods.pod(here) == PodMeta(here, "web-0", cluster.namespace, {"app": "web", "tier": "front"})
        assert pods.labels(here) == {"app": "web", "tier": "front"}
        assert pods.pod(there) is None and pods.labels(there) is None
        assert pods.synced()
    # Listed once, with the node's field selector.
    lists = [r.uri for r in cluster.requests() if r.verb == "list"]
    assert lists == [f"/api/v1/pods?fieldSelector=spec.nodeName%3D{cluster.node}&limit=500"]


def test_changes_arrive_through_the_watch(cluster: EnricherCluster, source: KubePodSource) -> None:
    uid = cluster.create("web-1", app="web")
    _until(lambda: source.labels(uid) == {"app": "web"}, "the new pod")
    cluster.label("web-1", app="web", version="2")
    _until(lambda: source.labels(uid) == {"app": "web", "version": "2"}, "the label change")
    cluster.delete("web-1")
    _until(lambda: source.stats.events >= 3, "the deletion")
    assert source.labels(uid) == {"app": "web", "version": "2"}  # kept for late records
    assert source.stats.lists == 1  # all of it without listing again


def _watched_from(uri: str) -> int:
    query = parse_qs(urlsplit(uri).query)
    return int(query["resourceVersion"][0])


def test_a_watch_the_server_ends_resumes_from_its_version(cluster: EnricherCluster) -> None:
    """The server ends each watch after its timeout (1 s here); the source watches again from the
    newest version it has seen, without listing again."""
    with KubePodSource(cluster.api_client(), cluster.node, watch_timeout=1, retry_min=0.05) as pods:
        assert pods.wait_synced(30)
        _until(lambda: pods.stats.watches >= 2, "a second watch")
        uid = cluster.create("a")
        _until(lambda: pods.pod(uid) is not None, "the pod")
        seen = int(cluster.get("a")["metadata"]["resourceVersion"])
        after = pods.stats.watches
        _until(lambda: pods.stats.watches >= after + 2, "the next watches")
        assert pods.stats.lists == 1 and pods.stats.expired == 0
    watches = [r.uri for r in cluster.requests() if r.verb == "watch"]
    assert len(watches) >= after + 2
    versions = [_watched_from(uri) for uri in watches]
    assert versions == sorted(versions)  # never back to an older version
    assert versions[-1] >= seen  # resumed from what it had seen, not from the start


def test_a_restarted_api_server_drops_the_watch(cluster: EnricherCluster, source: KubePodSource) -> None:
    """A restart drops every watch; the source watches again from its version, or, when the restarted
    server no longer has that version (it usually has moved on: it writes its own leases), gets 410
    Gone and lists again. Either way nothing is missed."""
    first = cluster.create("a")
    _until(lambda: source.pod(first) is not None, "the first pod")
    before = source.stats.watches
    cluster.kube.restart()
    second = cluster.create("b")
    _until(lambda: source.pod(second) is not None, "the pod created after the restart")
    assert source.stats.watches > before
    assert source.stats.lists == 1 + source.stats.expired  # every list after the first was for a 410
    assert source.pod(first) is not None


def test_expired_version_relists(cluster: EnricherCluster, source: KubePodSource) -> None:
    """etcd compacted past the source's version while the server was away: its watch gets 410 Gone and
    it lists again (in principle more than once: a list the restarted server answers from etcd can
    predate its fresh watch cache, which then finds that version too old as well)."""
    before = cluster.create("a")
    _until(lambda: source.pod(before) is not None, "the first pod")
    with cluster.kube.down():
        cluster.kube.compact()
    after = cluster.create("b")
    _until(lambda: source.pod(after) is not None, "the pod created after compaction")
    assert source.stats.expired >= 1 and source.stats.lists == 1 + source.stats.expired
    assert source.pod(before) is not None


def test_paged_list(cluster: EnricherCluster) -> None:
    """1001 pods on the node: three pages of (at most) 500, each asked for with the previous one's
    continue token, and every pod in the cache."""
    uids = cluster.create_many([f"p{i}" for i in range(1001)])
    with KubePodSource(cluster.api_client(), cluster.node) as pods:
        assert pods.wait_synced(60)
        assert all(pods.pod(uid) is not None for uid in uids)
    lists = [r.uri for r in cluster.requests() if r.verb == "list"]
    assert len(lists) == 3, lists
    assert "continue=" not in lists[0] and all("continue=" in uri for uri in lists[1:])


def test_lookups_never_call_the_api(cluster: EnricherCluster, source: KubePodSource) -> None:
    uid = cluster.create("web-0", app="web")
    _until(lambda: source.pod(uid) is not None, "the pod")
    calls = len(cluster.requests())
    for _ in range(10_000):
        source.labels(uid)
        source.pod("unknown-uid")
    assert len(cluster.requests()) == calls


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


def test_stop_ends_an_open_watch(cluster: EnricherCluster) -> None:
    pods = KubePodSource(cluster.api_client(), cluster.node, watch_timeout=3600)
    pods.start()
    assert pods.wait_synced(30)
    _until(lambda: pods.stats.watches == 1, "the watch")
    assert pods.alive()
    pods.stop(timeout=30)
    assert not pods.alive()


@pytest.mark.parametrize("name", ["", "a,b", "a=b"])
def test_node_name_must_be_plain(name: str) -> None:
    from kubernetes import client

    with pytest.raises(ValueError):
        KubePodSource(client.ApiClient(), name)


def test_config_from_a_kubeconfig(cluster: EnricherCluster, tmp_path: Path) -> None:
    kubeconfig = cluster.kube.kubeconfig_for_token(cluster.token, tmp_path / "config")
    uid = cluster.create("web-0", app="web")
    with KubePodSource(api_client_from_environment(str(kubeconfig)), cluster.node) as pods:
        assert pods.wait_synced(30)
        assert pods.labels(uid) == {"app": "web"}
    assert [r.verb for r in cluster.requests()][:1] == ["list"]  # as the kubeconfig's service account


@pytest.mark.parametrize("content", [None, "", "not: [yaml", "apiVersion: v1\nkind: Config\n"])
def test_bad_kubeconfig_is_one_clear_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KubeConfigError) as err:
        api_client_from_environment(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_an_outage_is_reported_once_and_so_is_its_end(cluster: EnricherCluster) -> None:
    """At start and mid-run: one line when the API stops answering (not one per retry), one when it
    answers again; the pods already listed keep their labels meanwhile."""
    kube = cluster.kube
    uid = cluster.create("web-0", app="web")
    reports: list[tuple[str, str]] = []
    pods = KubePodSource(
        cluster.api_client(), cluster.node, request_timeout=2, retry_min=0.05, retry_max=0.1,
        report=lambda code, text: reports.append((code, text)),
    )
    try:
        with kube.down():
            pods.start()
            _until(lambda: pods.stats.errors >= 3, "three failed attempts")
            assert [code for code, _ in reports] == ["kube_unreachable"]
            assert reports[0][1] == (
                f"Kubernetes API at {kube.url}: cannot connect: Connection refused; no pod labels until "
                "it answers (retrying)"
            )
        assert pods.wait_synced(30)
        _until(lambda: len(reports) == 2, "the recovery")
        assert reports[1][0] == "kube_recovered"
        errors = pods.stats.errors
        with kube.down():
            _until(
                lambda: len(reports) == 3 and pods.stats.errors >= errors + 3, "the second outage, retried"
            )
            assert reports[2][0] == "kube_unreachable"
            assert "pods already listed keep their labels" in reports[2][1]
            assert len(reports) == 3
            meta = pods.pod(uid)
            assert meta is not None and meta.labels == {"app": "web"}
        cluster.label("web-0", app="web2")
        _until(lambda: (m := pods.pod(uid)) is not None and m.labels == {"app": "web2"}, "the change")
        assert [code for code, _ in reports][-1] == "kube_recovered"
    finally:
        pods.stop()


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
