"""A real runc container resolved to its pod by the node, and to its labels by the API (a real
kube-apiserver, tests/support/kubeapi.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from syscribe.enricher.containers import ContainerInfo, ContainerResolver, Lookup
from syscribe.enricher.kube import KubePodSource
from tests.support import kubebundle
from tests.support.enricherkube import EnricherCluster
from tests.support.kubeapi import KubeAPI
from tests.support.kubebundle import crio_like_bundle, run_detached
from tests.support.prereq import require

pytestmark = pytest.mark.real


def test_container_gets_its_pods_labels_from_the_api(
    busybox_rootfs: Path, tmp_path: Path, kube_api: KubeAPI, kube_namespace: str
) -> None:
    require("root", "runc", "busybox")
    cluster = EnricherCluster.make(kube_api, kube_namespace)
    ns = cluster.namespace
    uid = cluster.create("web-0", app="web")
    kb = crio_like_bundle(pod="web-0", namespace=ns, pod_uid=uid)
    bundle = kb.write(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"])
    with KubePodSource(cluster.api_client(), cluster.node) as pods:
        assert pods.wait_synced(30)
        resolver = ContainerResolver(api=pods)
        try:
            pid = run_detached(bundle, kb.container_id)
            expected = ContainerInfo(kb.container_id, "cri-o", "app", "web-0", ns, uid, {"app": "web"})
            assert resolver.lookup(pid) == Lookup(expected, True)
            cluster.label("web-0", release="2")
            for _ in range(1000):  # until the watch has brought the change (bounded)
                if resolver.lookup(pid).info.labels.get("release") == "2":  # type: ignore[union-attr]
                    break
                time.sleep(0.01)
            assert resolver.lookup(pid).info.labels == {"app": "web", "release": "2"}  # type: ignore[union-attr]
            assert resolver.stats.bundles_read == 1  # the labels came from the cache, not the bundle
        finally:
            kubebundle.stop(kb)
