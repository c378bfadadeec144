"""The test API server itself (tests/support/kubeapi.py): what the Kubernetes tests rely on it for, and
scripts/build-kube.sh's answers when it cannot build."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.kubeapi import BUILD_SCRIPT, KubeAPI, KubeAPIError, pod_manifest, service_account_user


def test_admin_kubeconfig_and_a_pod_that_stays_pending(kube_api: KubeAPI, kube_namespace: str) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(kube_api.admin_kubeconfig))
    core = client.CoreV1Api(api_client)
    made = core.create_namespaced_pod(kube_namespace, pod_manifest("web-0", "node-a", {"app": "web"}))
    assert made.spec.node_name == "node-a" and made.status.phase == "Pending"
    assert kube_api.requests("admin")[-1].verb == "create"


def test_a_service_account_token_is_judged_by_rbac(
    kube_api: KubeAPI, kube_namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    token = kube_api.token_for(kube_namespace, "nobody")
    user = service_account_user(kube_namespace, "nobody")
    kubeconfig = kube_api.kubeconfig_for_token(token, tmp_path / "kubeconfig")
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_pod(kube_namespace)
    assert denied.value.status == 403
    assert not kube_api.allowed(user, "list", "pods", namespace=kube_namespace)
    assert kube_api.allowed("admin", "list", "pods", groups=["system:masters"])
    assert [r.verb for r in kube_api.requests(user)] == ["list"]
    assert kube_api.token_for(kube_namespace, "nobody") != token  # the account is reused, the token new


def test_namespaces_are_fresh_and_valid(kube_api: KubeAPI) -> None:
    names = {kube_api.create_namespace("Weird_Name/" + "x" * 100) for _ in range(3)}
    assert len(names) == 3
    assert all(name.startswith("weird-name-x") and len(name) <= 63 for name in names)


def test_compaction_makes_old_versions_gone(kube_api: KubeAPI, kube_namespace: str) -> None:
    from kubernetes import client, watch
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube_api.client())
    made = core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "cm"}})
    old = made.metadata.resource_version
    revision = kube_api.compact()
    assert revision > int(old) and kube_api.revision() >= revision
    # The API server's watch cache still serves that version; restarted, it has only etcd to ask.
    kube_api.restart()
    with pytest.raises(ApiException) as gone:
        core.list_namespaced_config_map(kube_namespace, resource_version=old, resource_version_match="Exact")
    assert gone.value.status == 410
    with pytest.raises(ApiException) as expired:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, kube_namespace, resource_version=old, timeout_seconds=5
        ):
            pass
    assert expired.value.status == 410


def test_down_refuses_and_restart_keeps_the_data(kube_api: KubeAPI, kube_namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_api.client())
    core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "kept"}})
    with kube_api.down(), pytest.raises(Exception) as refused:
        core.list_namespaced_config_map(kube_namespace, _request_timeout=5)
    assert "Connection refused" in repr(refused.value)
    kube_api.restart()
    assert core.read_namespaced_config_map("kept", kube_namespace).metadata.name == "kept"
    assert kube_api.start_seconds is not None


def test_a_start_that_fails_says_why_and_leaves_nothing_running(tmp_path: Path) -> None:
    binaries = tmp_path / "bin"
    binaries.mkdir()
    for name in ("etcd", "kube-apiserver"):
        fake = binaries / name
        fake.write_text(f"#!/bin/sh\necho '{name}: cannot do it: boom' >&2\nexit 3\n")
        fake.chmod(0o755)
    kube = KubeAPI(tmp_path / "work", binaries)
    (tmp_path / "work").mkdir()
    with pytest.raises(KubeAPIError) as err:
        kube.start()
    assert "etcd exited with 3" in str(err.value) and "etcd: cannot do it: boom" in str(err.value)
    assert kube._etcd is None and kube._apiserver is None


def _build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SYSCRIBE_KUBE_CACHE": str(tmp_path / "cache"), **env},
    )


def test_build_without_go_is_one_clear_line(tmp_path: Path) -> None:
    done = _build(tmp_path, GO=str(tmp_path / "no-go"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"build-kube: Go 1.26+ not found: GO={tmp_path / 'no-go'} is not a command; install Go from "
        "https://go.dev/dl/"
    ]
    old = tmp_path / "go"
    old.write_text("#!/bin/sh\necho go1.21.4\n")
    old.chmod(0o755)
    done = _build(tmp_path, GO=str(old))
    assert done.returncode == 1 and f"{old} is go1.21.4" in done.stderr
    assert not (tmp_path / "cache").exists()  # nothing half-built


def test_build_dir_is_named_by_the_modules(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "SYSCRIBE_KUBE_CACHE": str(tmp_path)},
    )
    where = Path(done.stdout.strip())
    assert where.parent == tmp_path and len(where.name) == 16
    assert int(where.name, 16) >= 0
