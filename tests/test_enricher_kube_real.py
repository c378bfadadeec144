"""A real runc container resolved to its pod by the node, and to its labels by the API (fakekube)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from syscribe.enricher.containers import ContainerInfo, ContainerResolver, Lookup
from syscribe.enricher.kube import KubePodSource

from tests.support import kubebundle
from tests.support.fakekube import FakeKube
from tests.support.kubebundle import crio_like_bundle, run_detached
from tests.support.prereq import require

pytestmark = pytest.mark.real


def test_container_gets_its_pods_labels_from_the_api(busybox_rootfs: Path, tmp_path: Path) -> None:
    require("root", "runc", "busybox")
    with FakeKube(bookmark_interval=0.2) as kube:
        pod = kube.create(
            "pods",
            {"metadata": {"name": "web-0", "labels": {"app": "web"}}, "spec": {"nodeName": "node-1"}},
            "shop",
        )
        uid = pod["metadata"]["uid"]
        kb = crio_like_bundle(pod="web-0", namespace="shop", pod_uid=uid)
        bundle = kb.write(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"])
        with KubePodSource(kube.api_client(), "node-1") as pods:
            assert pods.wait_synced(30)
            resolver = ContainerResolver(api=pods)
            try:
                pid = run_detached(bundle, kb.container_id)
                expected = ContainerInfo(
                    kb.container_id, "cri-o", "app", "web-0", "shop", uid, {"app": "web"}
                )
                assert resolver.lookup(pid) == Lookup(expected, True)
                kube.patch("pods", "web-0", {"metadata": {"labels": {"app": "web", "release": "2"}}}, "shop")
                for _ in range(1000):  # until the watch has brought the change (bounded)
                    if resolver.lookup(pid).info.labels.get("release") == "2":  # type: ignore[union-attr]
                        break
                    time.sleep(0.01)
                assert resolver.lookup(pid).info.labels == {"app": "web", "release": "2"}  # type: ignore[union-attr]
                assert resolver.stats.bundles_read == 1  # the labels came from the cache, not the bundle
            finally:
                kubebundle.stop(kb)
