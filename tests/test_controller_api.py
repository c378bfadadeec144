"""The webhook and the agent against the real API server (tests/support/kubeapi.py), each a real process
running with its own service account's token and the shipped RBAC. Dumps here are written as the hook
writes them; tests/test_controller_loop.py makes them with the real hook and podman."""

from __future__ import annotations

import hashlib
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from syscribe import ociprofile as prof
from syscribe.arch import X86_64
from syscribe.controller import dumppath
from syscribe.controller.recording import GROUP, PLURAL, VERSION
from tests.support.controller import (
    AgentProcess,
    Certificates,
    Webhook,
    apply,
    control_plane,
    free_port,
    kubeconfig_for,
    manifest_docs,
    recording_status,
    running,
    wait_for,
    wait_pods_recorded,
)

SPO = ("security-profiles-operator.x-k8s.io", "v1", "seccompprofiles")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(kube_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Manifests applied; the webhook running and registered; kubeconfigs of both service accounts."""
    base = tmp_path_factory.mktemp("controller")
    with control_plane(kube_api, base, "/var/lib/syscribe/profiles") as state:
        yield state


def custom(api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api)


def core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def make_recording(api: Any, namespace: str, name: str = "web", **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {"matchLabels": {"app": "web"}})
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProfileRecording",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    made: dict[str, Any] = custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return made


def make_pod(
    api: Any,
    namespace: str,
    *,
    labels: dict[str, str] | None = None,
    name: str | None = None,
    generate_name: str = "web-",
    containers: tuple[str, ...] = ("app",),
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels if labels is not None else {"app": "web"}}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name
    if annotations:
        meta["annotations"] = annotations
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "node-1", "containers": [{"name": c, "image": "busybox"} for c in containers]},
    }
    made = core(api).create_namespaced_pod(namespace, body, _preload_content=False)
    doc: dict[str, Any] = orjson.loads(made.data)
    return doc


def wait_recording_seen(cluster: dict[str, Any], namespace: str) -> None:
    """The webhook's cache follows a watch: wait until a selected pod is marked (pods made for this are
    deleted again)."""
    api = cluster["api"]

    def marked() -> bool:
        pod = make_pod(api, namespace, labels={"app": "web"}, generate_name="probe-")
        core(api).delete_namespaced_pod(pod["metadata"]["name"], namespace)
        return any(
            k.startswith("io.containers.trace-syscall/") for k in (pod["metadata"].get("annotations") or {})
        )

    wait_for("the webhook to see the new ProfileRecording", marked, timeout=30, interval=0.2)


# --- CRDs -----------------------------------------------------------------------------------------


def test_the_api_server_enforces_the_recording_schema(cluster: dict[str, Any], kube_namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    api = cluster["api"]
    bad_specs = [
        ({"podSelector": {}, "containers": []}, "containers"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}, "operator"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "In and NotIn need values"),
        ({"podSelector": {}, "mergeStrategy": "Pods"}, "mergeStrategy"),
        ({"podSelector": None}, "podSelector"),
    ]
    for spec, words in bad_specs:
        with pytest.raises(ApiException) as err:
            make_recording(api, kube_namespace, "bad", **spec)
            pytest.fail(f"accepted: {spec}")
        assert err.value.status == 422 and words in err.value.body, err.value.body
    with pytest.raises(ApiException) as err:
        make_recording(api, kube_namespace, "r" * 64)
    assert "at most 63 characters" in err.value.body
    made = make_recording(api, kube_namespace)
    assert made["spec"]["mergeStrategy"] == "None" and made["spec"]["disableProfileAfterRecording"] is False


def test_the_docs_examples_are_accepted(cluster: dict[str, Any], kube_namespace: str) -> None:
    import yaml

    text = (Path(__file__).resolve().parents[1] / "docs" / "controller.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    docs = [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict)]
    kinds = {d["kind"] for d in docs}
    assert {"ProfileRecording", "Pod"} <= kinds
    for doc in docs:
        if doc["kind"] in ("ProfileRecording", "SeccompProfile"):
            if doc["kind"] == "ProfileRecording":
                doc["metadata"]["namespace"] = kube_namespace
            else:
                doc["metadata"]["name"] = f"{kube_namespace}-{doc['metadata']['name']}"
            apply(cluster["api"], doc)


# --- the webhook ----------------------------------------------------------------------------------


def test_selected_pods_are_marked_and_others_untouched(cluster: dict[str, Any], kube_namespace: str) -> None:
    api = cluster["api"]
    make_recording(api, kube_namespace, containers=["app", "setup"])
    wait_recording_seen(cluster, kube_namespace)
    pod = make_pod(
        api,
        kube_namespace,
        containers=("app", "sidecar"),
        annotations={"io.containers.trace-syscall/app": "of:/etc/cron.d/evil.json"},
    )
    annotations = pod["metadata"]["annotations"]
    assert set(k for k in annotations if k.startswith("io.containers")) == {"io.containers.trace-syscall/app"}
    value = annotations["io.containers.trace-syscall/app"]
    assert value.startswith(
        f"of:/var/lib/syscribe/profiles/{kube_namespace}/web/app_web-_"
    ) and value.endswith(".json")
    assert pod["metadata"]["labels"]["syscribe.io/recording"] == "web"
    other = make_pod(api, kube_namespace, labels={"app": "db"}, generate_name="db-")
    assert (
        "annotations" not in other["metadata"] and "syscribe.io/recording" not in other["metadata"]["labels"]
    )


def test_a_pod_with_200_containers(cluster: dict[str, Any], kube_namespace: str) -> None:
    api = cluster["api"]
    make_recording(api, kube_namespace)
    wait_recording_seen(cluster, kube_namespace)
    pod = make_pod(api, kube_namespace, containers=tuple(f"c{i}" for i in range(200)))
    assert (
        len([k for k in pod["metadata"]["annotations"] if k.startswith("io.containers.trace-syscall/")])
        == 200
    )


def _post(url: str, certs: Certificates, body: bytes) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(certs.ca))
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_malformed_reviews_get_a_reason_and_the_webhook_stays_up(cluster: dict[str, Any]) -> None:
    hook: Webhook = cluster["webhook"]
    for body, status, words in [
        (b"{", 400, b"not JSON"),
        (b'{"kind":"ConfigMap"}', 400, b"not an AdmissionReview"),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u","resource":'
            b'{"group":"","resource":"configmaps"},"operation":"CREATE"}}',
            200,
            b'"allowed":true',
        ),
    ]:
        code, answer = _post(hook.url, cluster["certs"], body)
        assert code == status and words in answer, answer
    code, _ = _post(hook.url.replace("/mutate", "/other"), cluster["certs"], b"{}")
    assert code == 404
    assert hook.proc.poll() is None


def test_a_replaced_certificate_is_served_without_a_restart(cluster: dict[str, Any]) -> None:
    hook: Webhook = cluster["webhook"]
    certs: Certificates = cluster["certs"]
    before = certs.serial_served(hook.port)
    (certs.dir / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\ncut here")  # a half-written file
    assert certs.serial_served(hook.port) == before  # the previous one is still served
    certs.renew(serial=before + 1)
    wait_for("the new certificate served", lambda: certs.serial_served(hook.port) == before + 1, timeout=30)
    assert "cannot be used" in hook.output() and "serving the new certificate" in hook.output()


def test_pods_are_created_while_the_webhook_is_down(
    kube_api: Any, cluster: dict[str, Any], kube_namespace: str, tmp_path: Path
) -> None:
    api = cluster["api"]
    make_recording(api, kube_namespace)
    wait_recording_seen(cluster, kube_namespace)
    hook: Webhook = cluster["webhook"]
    port = hook.port
    hook.stop()
    try:
        pod = make_pod(api, kube_namespace)
        assert pod["metadata"]["name"].startswith("web-") and not pod["metadata"].get("annotations")
    finally:
        restarted = Webhook(
            Path(hook.proc.args[-1]), hook.certs, "/var/lib/syscribe/profiles", tmp_path / "wh.log", port=port
        )
        cluster["webhook"] = restarted
        restarted.wait_ready()


# --- the agent ------------------------------------------------------------------------------------


def write_dump(
    root: Path,
    where: dumppath.DumpPath,
    names: list[str],
    pod: str,
    *,
    namespace: str | None = None,
    container: str | None = None,
) -> tuple[Path, Path]:
    """As the hook writes one: the profile, then the metadata naming the profile's digest."""
    profile_file, meta_file = root / where.relative(), root / where.relative_meta()
    profile_file.parent.mkdir(parents=True, exist_ok=True)
    body = prof.dumps(prof.from_names(names, X86_64)).encode()
    profile_file.write_bytes(body)
    meta_file.write_bytes(
        orjson.dumps(
            {
                "namespace": namespace or where.namespace,
                "pod": pod,
                "container": container or where.container,
                "podUID": "uid-" + pod,
                "containerID": "c" * 64,
                "profileSHA256": hashlib.sha256(body).hexdigest(),
            }
        )
    )
    return profile_file, meta_file


def generated(namespace: str, recording: str, container: str, uid: str) -> dumppath.DumpPath:
    return dumppath.for_pod(namespace, recording, container, None, "web-", uid.ljust(32, "0"))


def get_profile(api: Any, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        found: dict[str, Any] = custom(api).get_cluster_custom_object(*SPO[:2], SPO[2], name)
        return found
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def allowed(obj: dict[str, Any] | None) -> set[str]:
    if obj is None:
        return set()
    return {
        n
        for rule in obj["spec"].get("syscalls", [])
        if rule["action"] == "SCMP_ACT_ALLOW"
        for n in rule["names"]
    }


@pytest.fixture
def agent_dirs(tmp_path: Path) -> dict[str, Path]:
    dirs = {k: tmp_path / k for k in ("root", "quarantine", "seccomp")}
    for d in dirs.values():
        d.mkdir()
    return dirs


def test_replicas_merge_into_one_profile_installed_on_the_node(
    cluster: dict[str, Any], kube_namespace: str, agent_dirs: dict[str, Path], tmp_path: Path
) -> None:
    api = cluster["api"]
    own = f"{kube_namespace}-web"  # profiles are cluster-wide: a name no other test uses
    make_recording(api, kube_namespace, own, mergeStrategy="Containers")
    name = f"{own}-app"  # <recording>-<container>
    root = agent_dirs["root"]
    files = []
    for i, extra in enumerate(["mkdir", "rename", "unlink"]):
        files += write_dump(
            root, generated(kube_namespace, own, "app", f"{i:x}" * 12), ["read", extra], f"web-pod{i}"
        )
    agent = AgentProcess(
        cluster["agent_kubeconfig"],
        root,
        agent_dirs["quarantine"],
        tmp_path / "agent.log",
        seccomp_dir=agent_dirs["seccomp"],
    )
    with running(agent):
        got = wait_for(
            "the merged profile",
            lambda: (p := get_profile(api, name)) and len(allowed(p)) == 4 and p,
            timeout=60,
        )
        assert allowed(got) == {"read", "mkdir", "rename", "unlink"}
        labels = got["metadata"]["labels"]
        assert (
            labels["syscribe.io/recording-namespace"] == kube_namespace
            and labels["syscribe.io/container"] == "app"
        )
        installed = agent_dirs["seccomp"] / "syscribe" / f"{name}.json"
        wait_for(
            "the profile installed",
            lambda: (
                installed.exists()
                and prof.loads(installed.read_bytes()).named() == {"read", "mkdir", "rename", "unlink"}
            ),
            timeout=30,
        )
        wait_for("the dumps removed", lambda: not any(f.exists() for f in files), timeout=30)
        status = wait_pods_recorded(api, kube_namespace, own, 3)
        assert status["profiles"] == [name] and status["pods"] == ["web-pod0", "web-pod1", "web-pod2"]
        # Disabled: the node no longer holds it. Deleted: likewise.
        got = get_profile(api, name)
        assert got is not None
        got["spec"]["disabled"] = True
        custom(api).replace_cluster_custom_object(*SPO[:2], SPO[2], name, got)
        wait_for("a disabled profile removed from the node", lambda: not installed.exists(), timeout=30)
        got = get_profile(api, name)
        assert got is not None
        got["spec"]["disabled"] = False
        custom(api).replace_cluster_custom_object(*SPO[:2], SPO[2], name, got)
        wait_for("an enabled profile installed again", installed.exists, timeout=30)
        custom(api).delete_cluster_custom_object(*SPO[:2], SPO[2], name)
        wait_for("a deleted profile removed from the node", lambda: not installed.exists(), timeout=30)
    assert not list(agent_dirs["quarantine"].iterdir())


def test_merge_strategy_none_makes_one_profile_per_pod(
    cluster: dict[str, Any], kube_namespace: str, agent_dirs: dict[str, Path], tmp_path: Path
) -> None:
    api = cluster["api"]
    own = f"{kube_namespace}-per-pod"
    make_recording(api, kube_namespace, own)
    write_dump(agent_dirs["root"], generated(kube_namespace, own, "app", "a" * 12), ["read"], "web-x7k2p")
    write_dump(
        agent_dirs["root"], dumppath.for_pod(kube_namespace, own, "app", "db-0", None, ""), ["write"], "db-0"
    )
    with running(
        AgentProcess(
            cluster["agent_kubeconfig"], agent_dirs["root"], agent_dirs["quarantine"], tmp_path / "agent.log"
        )
    ):
        wait_for(
            "per-pod profiles",
            lambda: get_profile(api, f"{own}-app-x7k2p") and get_profile(api, f"{own}-app-db-0"),
        )
    assert allowed(get_profile(api, f"{own}-app-x7k2p")) == {"read"}
    assert allowed(get_profile(api, f"{own}-app-db-0")) == {"write"}


def quarantined(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(directory.glob("*.reason.json"))]


def test_dumps_the_node_does_not_vouch_for_go_to_quarantine(
    cluster: dict[str, Any], kube_namespace: str, agent_dirs: dict[str, Path], tmp_path: Path
) -> None:
    api = cluster["api"]
    own = f"{kube_namespace}-guarded"
    make_recording(api, kube_namespace, own, mergeStrategy="Containers")
    root = agent_dirs["root"]
    # A pod of another namespace pointed its annotation into this recording's folder.
    write_dump(
        root, generated(kube_namespace, own, "app", "1" * 12), ["ptrace"], "web-evil", namespace="intruder"
    )
    # A recording that does not exist.
    write_dump(root, generated(kube_namespace, "no-such-recording", "app", "2" * 12), ["read"], "web-a")
    # A cut profile, and metadata that is not JSON.
    p, _ = write_dump(root, generated(kube_namespace, own, "app", "3" * 12), ["read"], "web-b")
    p.write_bytes(p.read_bytes()[:20])
    _, m = write_dump(root, generated(kube_namespace, own, "app", "4" * 12), ["read"], "web-c")
    m.write_bytes(b"\x00not json")
    # A 100 MB profile.
    big, meta = write_dump(root, generated(kube_namespace, own, "app", "5" * 12), ["read"], "web-d")
    with big.open("wb") as f:
        f.truncate(100 * 1024 * 1024)
    meta.write_bytes(orjson.dumps({"namespace": kube_namespace, "pod": "web-d", "container": "app"}))
    # A file where no recording can be.
    (root / "stray.json").write_text("{}")
    agent = AgentProcess(
        cluster["agent_kubeconfig"],
        root,
        agent_dirs["quarantine"],
        tmp_path / "agent.log",
        extra=("--incomplete-grace", "3"),
    )
    with running(agent):
        reasons = wait_for(
            "six dumps quarantined", lambda: len(q := quarantined(agent_dirs["quarantine"])) == 6 and q
        )
        events = wait_for(
            "Events on the recording",
            lambda: [
                e
                for e in core(api).list_namespaced_event(kube_namespace).items
                if e.reason == "DumpQuarantined"
            ],
        )
    assert sorted(r["reason"] for r in reasons) == [
        "BadPath",
        "Incomplete",
        "NoRecording",
        "Unreadable",
        "Untrusted",
        "Untrusted",
    ]
    text = " ".join(r["message"] for r in reasons)
    assert (
        "recorded in namespace 'intruder'" in text
        and "no ProfileRecording" in text
        and "104857600 bytes" in text
    )
    assert get_profile(api, f"{own}-app") is None  # nothing of any of them became a profile
    assert any("intruder" in e.message for e in events)
    assert not [f for f in root.rglob("*.json")]  # all moved, none lost: both halves sit in quarantine
    assert len(list(agent_dirs["quarantine"].glob("*.meta.json"))) == 5


def test_a_name_taken_by_another_namespace_is_never_overwritten(
    cluster: dict[str, Any], kube_namespace: str, kube_api: Any, agent_dirs: dict[str, Path], tmp_path: Path
) -> None:
    api = cluster["api"]
    other = kube_api.create_namespace("other")
    shared = f"{kube_namespace}-shared"  # the same recording name in two namespaces: the same profile name
    make_recording(api, kube_namespace, shared, mergeStrategy="Containers")
    make_recording(api, other, shared, mergeStrategy="Containers")
    root = agent_dirs["root"]
    write_dump(root, generated(kube_namespace, shared, "app", "6" * 12), ["read"], "web-a")
    with running(
        AgentProcess(cluster["agent_kubeconfig"], root, agent_dirs["quarantine"], tmp_path / "a.log")
    ):
        wait_for(
            "the first namespace's profile", lambda: allowed(get_profile(api, f"{shared}-app")) == {"read"}
        )
        write_dump(root, generated(other, shared, "app", "7" * 12), ["ptrace"], "web-b")
        condition = wait_for(
            "the collision in the other recording's status",
            lambda: next(
                (
                    c
                    for c in custom(api)
                    .get_namespaced_custom_object(GROUP, VERSION, other, PLURAL, shared)
                    .get("status", {})
                    .get("conditions", [])
                    if c["type"] == "ProfileNameCollision"
                ),
                None,
            ),
        )
    assert kube_namespace in condition["message"]
    assert allowed(get_profile(api, f"{shared}-app")) == {"read"}
    assert [r["reason"] for r in quarantined(agent_dirs["quarantine"])] == ["ProfileNameCollision"]


def test_a_profile_edited_by_hand_in_between(
    cluster: dict[str, Any], kube_namespace: str, agent_dirs: dict[str, Path], tmp_path: Path
) -> None:
    api = cluster["api"]
    own = f"{kube_namespace}-edited"
    make_recording(api, kube_namespace, own, mergeStrategy="Containers")
    root = agent_dirs["root"]
    with running(
        AgentProcess(cluster["agent_kubeconfig"], root, agent_dirs["quarantine"], tmp_path / "a.log")
    ):
        write_dump(root, generated(kube_namespace, own, "app", "8" * 12), ["read", "write"], "web-a")
        got = wait_for("the profile", lambda: get_profile(api, f"{own}-app"))
        # Someone trims it by hand, and adds an errno rule: the next replica is merged into what is there.
        got["spec"]["syscalls"] = [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        ]
        custom(api).replace_cluster_custom_object(*SPO[:2], SPO[2], f"{own}-app", got)
        write_dump(root, generated(kube_namespace, own, "app", "9" * 12), ["mkdir"], "web-b")
        wait_for(
            "the merge into the edited profile",
            lambda: allowed(get_profile(api, f"{own}-app")) == {"read", "mkdir"},
        )
        # An edit the agent cannot merge into (a base profile it cannot read): quarantine, profile untouched.
        got = get_profile(api, f"{own}-app")
        assert got is not None
        got["spec"]["baseProfileName"] = "runc-v1.1.5"
        custom(api).replace_cluster_custom_object(*SPO[:2], SPO[2], f"{own}-app", got)
        write_dump(root, generated(kube_namespace, own, "app", "a" * 12), ["chdir"], "web-c")
        reasons = wait_for("quarantined", lambda: quarantined(agent_dirs["quarantine"]))
    assert reasons[0]["reason"] == "ProfileUnreadable" and "baseProfileName" in reasons[0]["message"]
    assert allowed(get_profile(api, f"{own}-app")) == {"read", "mkdir"}


def test_an_api_outage_and_a_restart_lose_and_duplicate_nothing(
    kube_api: Any, cluster: dict[str, Any], kube_namespace: str, agent_dirs: dict[str, Path], tmp_path: Path
) -> None:
    api = cluster["api"]
    own = f"{kube_namespace}-outage"
    make_recording(api, kube_namespace, own, mergeStrategy="Containers")
    root = agent_dirs["root"]
    port = free_port()
    agent = AgentProcess(
        cluster["agent_kubeconfig"],
        root,
        agent_dirs["quarantine"],
        tmp_path / "a1.log",
        extra=("--metrics-port", str(port)),
    )

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    with running(agent):
        write_dump(root, generated(kube_namespace, own, "app", "b" * 12), ["read"], "web-a")
        wait_for("the first profile", lambda: allowed(get_profile(api, f"{own}-app")) == {"read"})
        # The profile is written before the recording's status and before the dump is removed: the API
        # goes down only when the first dump is done with, so that one dump, the next, is waiting.
        wait_pods_recorded(api, kube_namespace, own, 1)
        wait_for("the first dump to be removed", lambda: not list(root.rglob("*.json")))
        with kube_api.down():
            write_dump(root, generated(kube_namespace, own, "app", "c" * 12), ["write"], "web-b")
            # Its metrics say what it waits for, and it keeps running.
            waiting = wait_for(
                "the agent's metrics to say what it waits for",
                lambda: [
                    line
                    for line in metrics().splitlines()
                    if line.startswith("syscribe_agent_waiting_dumps{") and "cannot connect" in line
                ],
                timeout=90,
            )
            assert waiting[0].endswith(" 1.0") and "syscribe_agent_pending_dumps 1.0" in metrics()
            assert agent.proc.poll() is None
        wait_for(
            "the dump made after the outage",
            lambda: allowed(get_profile(api, f"{own}-app")) == {"read", "write"},
            timeout=120,
        )
    # Stopped; a dump arrives; a new agent starts: it is processed once, nothing is duplicated.
    write_dump(root, generated(kube_namespace, own, "app", "d" * 12), ["mkdir"], "web-c")
    with running(
        AgentProcess(cluster["agent_kubeconfig"], root, agent_dirs["quarantine"], tmp_path / "a2.log")
    ):
        wait_for(
            "the dump made while no agent ran",
            lambda: allowed(get_profile(api, f"{own}-app")) == {"read", "write", "mkdir"},
        )
        status = wait_pods_recorded(api, kube_namespace, own, 3)
    assert status["pods"] == ["web-a", "web-b", "web-c"] and status["profiles"] == [f"{own}-app"]
    assert not list(root.rglob("*.json")) and not quarantined(agent_dirs["quarantine"])


def test_two_agents_merging_at_once_lose_nothing(
    cluster: dict[str, Any], kube_namespace: str, tmp_path: Path
) -> None:
    api = cluster["api"]
    own = f"{kube_namespace}-race"
    make_recording(api, kube_namespace, own, mergeStrategy="Containers")
    pool = [
        "read",
        "write",
        "open",
        "openat",
        "close",
        "mmap",
        "munmap",
        "brk",
        "mkdir",
        "rmdir",
        "rename",
        "unlink",
        "chdir",
        "fchdir",
        "getpid",
        "getppid",
        "getuid",
        "getgid",
        "dup",
        "dup2",
        "pipe",
        "poll",
        "lseek",
        "fstat",
        "stat",
        "lstat",
        "access",
        "uname",
        "kill",
        "nanosleep",
        "getcwd",
        "umask",
        "sysinfo",
        "times",
        "setsid",
        "getpgrp",
        "getsid",
        "sync",
        "fsync",
        "fdatasync",
    ]
    roots = [tmp_path / "n1", tmp_path / "n2"]
    for n, root in enumerate(roots):
        for i in range(20):
            name = pool[n * 20 + i]
            write_dump(
                root,
                generated(kube_namespace, own, "app", f"{n}{i:02x}".ljust(12, "e")),
                [name],
                f"web-{n}{i}",
            )
    agents = [
        AgentProcess(
            cluster["agent_kubeconfig"], root, tmp_path / f"q{n}", tmp_path / f"a{n}.log", node=f"node-{n}"
        )
        for n, root in enumerate(roots)
    ]
    try:
        wait_for(
            "the union of both nodes' dumps",
            lambda: allowed(get_profile(api, f"{own}-app")) == set(pool),
            timeout=120,
        )
    finally:
        for a in agents:
            a.stop()
    status = recording_status(api, kube_namespace, own)
    assert status["podsRecorded"] == 40


# --- RBAC: what the shipped roles allow, and no more ----------------------------------------------


def _can(
    kube_api: Any,
    account: str,
    tmp_path: Path,
    verb: str,
    resource: str,
    group: str = "",
    namespace: str | None = None,
    subresource: str = "",
) -> bool:
    from kubernetes import client

    config = kubeconfig_for(kube_api, account, tmp_path / f"{account}.kubeconfig")
    from syscribe.kube import api_client_from_environment

    authz = client.AuthorizationV1Api(api_client_from_environment(str(config)))
    review = authz.create_self_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    "namespace": namespace,
                    "subresource": subresource,
                }
            },
        }
    )
    return bool(review.status.allowed)


def test_each_component_may_do_what_it_needs_and_no_more(
    kube_api: Any, cluster: dict[str, Any], tmp_path: Path
) -> None:
    spo = "security-profiles-operator.x-k8s.io"
    # The agent: profiles, status, events; never Secrets, never pods.
    assert _can(kube_api, "syscribe-agent", tmp_path, "create", "seccompprofiles", spo)
    assert _can(kube_api, "syscribe-agent", tmp_path, "update", "profilerecordings", GROUP, "x", "status")
    assert _can(kube_api, "syscribe-agent", tmp_path, "create", "events", "", "x")
    for verb in ("get", "list"):
        assert not _can(kube_api, "syscribe-agent", tmp_path, verb, "secrets", "", "kube-system")
    assert not _can(kube_api, "syscribe-agent", tmp_path, "update", "profilerecordings", GROUP, "x")
    assert not _can(kube_api, "syscribe-agent", tmp_path, "delete", "seccompprofiles", spo)
    # The webhook: reads recordings; writes nothing.
    assert _can(kube_api, "syscribe-webhook", tmp_path, "watch", "profilerecordings", GROUP)
    for verb in ("create", "update", "patch", "delete"):
        assert not _can(kube_api, "syscribe-webhook", tmp_path, verb, "seccompprofiles", spo)
    assert not _can(kube_api, "syscribe-webhook", tmp_path, "get", "secrets", "", "syscribe")
    assert not _can(
        kube_api, "syscribe-webhook", tmp_path, "update", "profilerecordings", GROUP, "x", "status"
    )


def test_the_kustomization_lists_every_manifest() -> None:
    import yaml

    base = Path(__file__).resolve().parents[1] / "packaging" / "kubernetes"
    listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(str(p.relative_to(base)) for p in base.rglob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted([*listed, "crds/seccompprofile.yaml"]) == on_disk
    assert manifest_docs("crds/seccompprofile.yaml")[0]["spec"]["scope"] == "Cluster"
    assert os.path.exists(base / "crds" / "profilerecording.yaml")
