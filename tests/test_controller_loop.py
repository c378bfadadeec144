"""The full loop, as a platform engineer meets it: a ProfileRecording selects pods; the API server calls
the webhook over HTTPS as they are created; each mutated pod's container runs with podman through the
shipped hooks.d file (the hooks library CRI-O uses), with the annotations CRI-O would pass; the hook
records it; the node agent makes the SeccompProfile (the API server checks its schema) and installs it
on the node; the installed file, enforced on the same container, lets it run and denies what it never
did. Pods nothing selects, and a pod of another namespace that forges an annotation into this
recording's folder, leave no trace in any profile."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from syscribe import ociprofile as prof
from syscribe.controller.recording import GROUP, PLURAL, VERSION
from tests.support.controller import AgentProcess, control_plane, running, wait_for, wait_pods_recorded
from tests.support.prereq import require

ROOT = Path(__file__).resolve().parents[1]
HOOK = Path(sys.executable).parent / "syscribe-hook"
HOOKS_D = ROOT / "crio-config" / "hooks.d" / "syscribe-hook.json"
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]
PODMAN_RUN = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
SPO = ("security-profiles-operator.x-k8s.io", "v1", "seccompprofiles")
pytestmark = pytest.mark.slow

WORKLOADS = [["/bin/ls", "/"], ["/bin/ls", "/bin"], ["/bin/cat", "/etc/hostname"]]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A node's directories and a hooks.d holding the shipped hook file, pointed at this venv's hook and a
    config whose output root is this node's."""
    require("root", "ebpf", "podman", "busybox")
    base = tmp_path_factory.mktemp("node")
    dirs = {k: base / k for k in ("profiles", "quarantine", "seccomp", "hooks.d")}
    for d in dirs.values():
        d.mkdir()
    config = base / "hook.json"
    config.write_text(
        json.dumps(
            {
                "outputRoots": [str(dirs["profiles"])],
                "inputRoots": [str(dirs["profiles"])],
                "logFile": str(base / "hook.log"),
                "onFailure": "fail",
                "createDirectories": True,
                # Where the node agent's resident recorder listens, in the tests that start one; the
                # hook starts a tracer of its own when nothing does.
                "recorderSocket": str(base / "recorder.sock"),
            }
        )
    )
    doc = json.loads(HOOKS_D.read_text())
    doc["hook"]["path"] = str(HOOK)
    doc["hook"]["args"] = ["syscribe-hook", "--config", str(config)]
    (dirs["hooks.d"] / "syscribe-hook.json").write_text(json.dumps(doc))
    return {**dirs, "base": base, "log": base / "hook.log", "config": config}


@pytest.fixture(scope="module")
def cluster(
    kube_api: Any, node: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    with control_plane(kube_api, tmp_path_factory.mktemp("cp"), str(node["profiles"])) as state:
        yield state


def custom(api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api)


def create_pod(
    api: Any,
    namespace: str,
    labels: dict[str, str],
    generate_name: str,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    from kubernetes import client

    meta: dict[str, Any] = {"generateName": generate_name, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "busybox"}]},
    }
    made = client.CoreV1Api(api).create_namespaced_pod(namespace, body, _preload_content=False)
    doc: dict[str, Any] = orjson.loads(made.data)
    return doc


def run_as_crio_would(
    node: dict[str, Path], rootfs: Path, pod: dict[str, Any], args: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """The pod's container through podman and hooks.d, with the annotations CRI-O puts in the container's
    config: the pod's own (the per-container trace key among them) and its io.kubernetes.* keys."""
    meta = pod["metadata"]
    annotations = {
        **(meta.get("annotations") or {}),
        "io.kubernetes.pod.name": meta["name"],
        "io.kubernetes.pod.namespace": meta["namespace"],
        "io.kubernetes.pod.uid": meta["uid"],
        "io.kubernetes.container.name": "app",
        "io.kubernetes.cri-o.ContainerType": "container",
    }
    flags = [f for k, v in annotations.items() for f in ("--annotation", f"{k}={v}")]
    name = f"syscribe-loop-{uuid.uuid4().hex[:10]}"
    try:
        return subprocess.run(
            [
                *PODMAN,
                "--hooks-dir",
                str(node["hooks.d"]),
                "run",
                "--rm",
                "--name",
                name,
                *PODMAN_RUN,
                *flags,
                "--rootfs",
                str(rootfs),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True, check=False)


def enforced(rootfs: Path, profile: Path, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *PODMAN,
            "run",
            "--rm",
            *PODMAN_RUN,
            "--security-opt",
            f"seccomp={profile}",
            "--rootfs",
            str(rootfs),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def denied(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and "Operation not permitted" in result.stdout + result.stderr


@pytest.mark.parametrize("recorder", ["resident", "tracer"])
def test_record_a_deployment_by_its_labels(
    recorder: str,
    kube_api: Any,
    cluster: dict[str, Any],
    node: dict[str, Path],
    kube_namespace: str,
    busybox_rootfs: Path,
) -> None:
    api = cluster["api"]
    recording = f"loop-{recorder}"
    never_ran = ["/bin/mkdir", f"/tmp/never-ran-{uuid.uuid4().hex[:8]}"]  # the rootfs is shared
    custom(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        kube_namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ProfileRecording",
            "metadata": {"name": recording, "namespace": kube_namespace},
            "spec": {"podSelector": {"matchLabels": {"app": "loop"}}, "mergeStrategy": "Containers"},
        },
    )
    profile_name = f"{recording}-app"
    # Profiles are cluster-scoped: one left by an earlier run of this test would be merged into.
    from kubernetes.client.exceptions import ApiException

    try:
        custom(api).delete_cluster_custom_object(*SPO[:2], SPO[2], profile_name)
    except ApiException as exc:
        assert exc.status == 404

    def marked() -> dict[str, Any] | None:
        pod = create_pod(api, kube_namespace, {"app": "loop"}, "loop-")
        return pod if pod["metadata"].get("annotations") else None

    # The webhook follows recordings through a watch: the first pod it marks is the first replica.
    replicas = [wait_for("the webhook marking a selected pod", marked, timeout=30, interval=0.2)]
    replicas += [create_pod(api, kube_namespace, {"app": "loop"}, "loop-") for _ in range(2)]
    assert all(p["metadata"]["annotations"] for p in replicas)
    unselected = create_pod(api, kube_namespace, {"app": "other"}, "other-")
    assert not unselected["metadata"].get("annotations")
    # A pod of another namespace (no recording there) points its own annotation into this folder.
    elsewhere = kube_api.create_namespace("intruder")
    target = f"{node['profiles']}/{kube_namespace}/{recording}/app_loop-_{'f' * 12}.json"
    forged = create_pod(
        api,
        elsewhere,
        {"app": "loop"},
        "loop-",
        annotations={"io.containers.trace-syscall/app": f"of:{target}"},
    )
    assert forged["metadata"]["annotations"] == {"io.containers.trace-syscall/app": f"of:{target}"}

    quarantine, seccomp = node["quarantine"] / recorder, node["seccomp"] / recorder
    installed = seccomp / "syscribe" / f"{profile_name}.json"
    extra: tuple[str, ...] = ()
    if recorder == "resident":  # the agent hosts the node's resident recorder; the hook hands over to it
        extra = (
            "--host-recorder",
            str(node["config"]),
            "--recorder-pin-dir",
            f"/sys/fs/bpf/syscribe-test-{uuid.uuid4().hex[:10]}",
            "--recorder-state-dir",
            str(node["base"] / f"state-{uuid.uuid4().hex[:6]}"),
        )
    agent = AgentProcess(
        cluster["agent_kubeconfig"],
        node["profiles"],
        quarantine,
        node["base"] / f"agent-{recorder}.log",
        seccomp_dir=seccomp,
        extra=extra,
    )
    with running(agent):
        if recorder == "resident":
            wait_for("the resident recorder's socket", (node["base"] / "recorder.sock").exists, timeout=60)
        lines_before = len(node["log"].read_text().splitlines()) if node["log"].exists() else 0
        for pod, args in zip(replicas, WORKLOADS, strict=True):
            ran = run_as_crio_would(node, busybox_rootfs, pod, args)
            assert ran.returncode == 0, ran.stderr + node["log"].read_text()
        assert run_as_crio_would(node, busybox_rootfs, unselected, ["/bin/ls", "/"]).returncode == 0
        assert run_as_crio_would(node, busybox_rootfs, forged, never_ran).returncode == 0
        hook_lines = node["log"].read_text().splitlines()[lines_before:]
        handed = {
            line.split(" container ", 1)[1].split(":", 1)[0]
            for line in hook_lines
            if "(resident recorder, slot" in line
        }
        assert len(handed) == (4 if recorder == "resident" else 0), hook_lines  # each container, once
        status = wait_pods_recorded(api, kube_namespace, recording, 3, timeout=180)
        wait_for("the profile installed on the node", installed.exists, timeout=60)
        reasons = wait_for(
            "the forged dump quarantined",
            lambda: [orjson.loads(p.read_bytes()) for p in quarantine.glob("*.reason.json")],
            timeout=60,
        )
    assert status["profiles"] == [profile_name]
    assert sorted(status["pods"]) == sorted(p["metadata"]["name"] for p in replicas)
    assert [r["reason"] for r in reasons] == ["Untrusted"] and "'" + elsewhere + "'" in reasons[0]["message"]
    resource = custom(api).get_cluster_custom_object(*SPO[:2], SPO[2], profile_name)
    assert resource["metadata"]["labels"]["syscribe.io/recording-namespace"] == kube_namespace
    names = prof.loads(installed.read_bytes()).named()
    assert "mkdir" not in names and "mkdirat" not in names  # only the forged pod ran mkdir
    # Nothing of the unselected pod was written anywhere, and every dump was consumed.
    assert not list(node["profiles"].rglob("*.json"))
    for args in WORKLOADS:
        again = enforced(busybox_rootfs, installed, args)
        assert again.returncode == 0, again.stderr
    assert denied(enforced(busybox_rootfs, installed, never_ran))


def test_pods_are_still_created_with_the_webhook_stopped(
    cluster: dict[str, Any], kube_namespace: str
) -> None:
    """failurePolicy: Ignore: a webhook that is down never stops a pod, which is just not recorded."""
    api = cluster["api"]
    custom(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        kube_namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ProfileRecording",
            "metadata": {"name": "late", "namespace": kube_namespace},
            "spec": {"podSelector": {"matchLabels": {"app": "loop"}}},
        },
    )
    cluster["webhook"].stop()
    late = create_pod(api, kube_namespace, {"app": "loop"}, "loop-")
    assert late["metadata"]["name"].startswith("loop-") and not late["metadata"].get("annotations")
