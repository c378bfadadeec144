"""Shared fixtures. Tests that need the real system call `tests.support.prereq.require(...)`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kubeapi import KubeAPI
from tests.support.prereq import require


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs holding busybox-static and a link per applet (built once per session)."""
    require("root", "busybox")
    from syscribe.bundle import make_busybox_rootfs

    return make_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPI]:
    """A real kube-apiserver and etcd on loopback for the whole run (tests/support/kubeapi.py)."""
    require("kube", "openssl")
    with KubeAPI(tmp_path_factory.mktemp("kube")) as kube:
        yield kube


@pytest.fixture
def kube_namespace(kube_api: KubeAPI, request: pytest.FixtureRequest) -> str:
    """A fresh namespace for this test, named after it (namespaces never finish deleting here)."""
    return kube_api.create_namespace(request.node.name)
