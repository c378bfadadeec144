"""Container id -> pod from the runtimes' state directories, laid out as each runtime writes them, and
what a hostile state directory or /proc cannot make the resolver do. (The same against real runc, crun
and podman containers: test_enricher_containers_real.py.)"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import pytest

from syscribe.enricher.containers import ContainerInfo, ContainerResolver, Lookup, parse_btime, parse_stat
from syscribe.enricher.kube import PodMeta
from syscribe.enricher.statedirs import MAX_JSON, read_bounded

CID = "5d8a4b9c1e0f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3"
SANDBOX = "134b58ab2e0cfd7432a9db818b1b4ec52fdc747333f0ba2c9342860dc2ea7c50"
UID = "aaaa2b4a-f398-41c0-928b-049e1cc4ec40"


def _write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _crio_annotations(**extra: str) -> dict[str, str]:
    labels = {
        "io.kubernetes.container.name": "app",
        "io.kubernetes.pod.name": "segfaulter",
        "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.pod.uid": UID,
    }
    return {
        **labels,
        "io.container.manager": "cri-o",
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.SandboxID": SANDBOX,
        "io.kubernetes.cri-o.Labels": json.dumps(labels),
        **extra,
    }


# --- each runtime's layout ---------------------------------------------------------------------------------


def test_crio_storage_with_the_pods_labels_from_its_sandbox(tmp_path: Path) -> None:
    storage = tmp_path / "run-containers-storage"
    _write(
        storage / "overlay-containers" / CID / "userdata" / "config.json",
        {"annotations": _crio_annotations()},
    )
    sandbox_labels = {
        "io.kubernetes.container.name": "POD",
        "io.kubernetes.pod.name": "segfaulter",
        "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.pod.uid": UID,
        "run": "segfaulter",
        "app.kubernetes.io/name": "demo",
    }
    _write(
        storage / "overlay-containers" / SANDBOX / "userdata" / "config.json",
        {
            "annotations": {
                "io.kubernetes.cri-o.ContainerType": "sandbox",
                "io.kubernetes.cri-o.Labels": json.dumps(sandbox_labels),
                "io.kubernetes.container.name": "POD",
            }
        },
    )
    info = ContainerResolver(state_dirs=[storage]).container(CID, "cri-o")
    labels = {"run": "segfaulter", "app.kubernetes.io/name": "demo"}
    assert info == ContainerInfo(CID, "cri-o", "app", "segfaulter", "default", UID, labels)
    sandbox = ContainerResolver(state_dirs=[storage]).container(SANDBOX)
    assert sandbox is not None and sandbox.container_name == "POD" and sandbox.labels == labels


def test_crio_names_only_in_its_labels_json(tmp_path: Path) -> None:
    annotations = _crio_annotations()
    for key in ("io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.container.name"):
        del annotations[key]
    _write(tmp_path / "overlay-containers" / CID / "userdata" / "config.json", {"annotations": annotations})
    info = ContainerResolver(state_dirs=[tmp_path]).container(CID)
    assert info is not None
    assert (info.pod, info.namespace, info.container_name, info.runtime) == (
        "segfaulter",
        "default",
        "app",
        "cri-o",
    )


def test_containerd_task_bundles(tmp_path: Path) -> None:
    tasks = tmp_path / "io.containerd.runtime.v2.task"
    annotations = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "nginx",
        "io.kubernetes.cri.sandbox-name": "web-7c9d",
        "io.kubernetes.cri.sandbox-namespace": "prod",
        "io.kubernetes.cri.sandbox-uid": UID,
        "io.kubernetes.cri.sandbox-id": SANDBOX,
    }
    _write(tasks / "k8s.io" / CID / "config.json", {"ociVersion": "1.1.0", "annotations": annotations})
    sandbox_annotations = {k: v for k, v in annotations.items() if k != "io.kubernetes.cri.container-name"}
    sandbox_annotations["io.kubernetes.cri.container-type"] = "sandbox"
    _write(tasks / "k8s.io" / SANDBOX / "config.json", {"annotations": sandbox_annotations})
    resolver = ContainerResolver(state_dirs=[tasks])
    assert resolver.container(CID) == ContainerInfo(CID, "containerd", "nginx", "web-7c9d", "prod", UID, {})
    sandbox = resolver.container(SANDBOX)
    assert sandbox is not None and sandbox.container_name == "POD"


def test_containerd_runc_root_has_a_namespace_level(tmp_path: Path) -> None:
    root = tmp_path / "containerd-runc"
    labels = ["io.kubernetes.cri.sandbox-name=web", "io.kubernetes.cri.sandbox-namespace=prod", "bundle=/x"]
    _write(root / "k8s.io" / CID / "state.json", {"id": CID, "config": {"labels": labels}})
    info = ContainerResolver(state_dirs=[root]).container(CID)
    assert info is not None and (info.pod, info.namespace, info.runtime) == ("web", "prod", "containerd")


def test_docker_container_config(tmp_path: Path) -> None:
    labels = {
        "io.kubernetes.pod.name": "api-0",
        "io.kubernetes.pod.namespace": "team",
        "io.kubernetes.container.name": "api",
        "io.kubernetes.pod.uid": UID,
    }
    _write(
        tmp_path / CID / "config.v2.json", {"ID": CID, "Name": "/k8s_api_api-0", "Config": {"Labels": labels}}
    )
    info = ContainerResolver(state_dirs=[tmp_path]).container(CID, "docker")
    assert info == ContainerInfo(CID, "docker", "api", "api-0", "team", UID, {})
    _write(tmp_path / "plain" / CID / "config.v2.json", {"Name": "/web", "Config": {}})
    plain = ContainerResolver(state_dirs=[tmp_path / "plain"]).container(CID)
    assert plain == ContainerInfo(CID, "docker", "web", None, None, None, {})


def test_docker_through_containerd_moby_namespace(tmp_path: Path) -> None:
    _write(tmp_path / "moby" / CID / "config.json", {"annotations": {}})
    info = ContainerResolver(state_dirs=[tmp_path]).container(CID)
    assert info is not None and info.runtime == "docker"


def test_podman_name_from_containers_json(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    annotations = {"io.container.manager": "libpod", "io.podman.annotations.autoremove": "FALSE"}
    _write(storage / "overlay-containers" / CID / "userdata" / "config.json", {"annotations": annotations})
    _write(storage / "overlay-containers" / "containers.json", [{"id": CID, "names": ["db"], "layer": "x"}])
    resolver = ContainerResolver(state_dirs=[storage])
    assert resolver.container(CID) == ContainerInfo(CID, "podman", "db", None, None, None, {})


def test_podman_name_follows_a_rename_of_containers_json(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    other = secrets.token_hex(32)
    _write(storage / "overlay-containers" / "containers.json", [{"id": CID, "names": ["db"]}])
    for cid in (CID, other):
        _write(storage / "overlay-containers" / cid / "userdata" / "config.json", {"annotations": {}})
    resolver = ContainerResolver(state_dirs=[storage])
    assert resolver.container(CID) is not None
    _write(
        storage / "overlay-containers" / "containers.json",
        [{"id": CID, "names": ["db"]}, {"id": other, "names": ["cache-1"]}],
    )
    later = resolver.container(other)
    assert later is not None and later.container_name == "cache-1"


def test_runc_state_json_as_runc_writes_it(tmp_path: Path) -> None:
    # The shape of /run/runc/<id>/state.json (runc 1.1.5), trimmed.
    state = {
        "id": CID,
        "init_process_pid": 8028,
        "init_process_start": 55773,
        "config": {
            "rootfs": "/tmp/rootfs",
            "labels": [
                "io.kubernetes.pod.name=p1",
                "io.kubernetes.pod.namespace=ns1",
                "odd=value=with=equals",
                "bundle=/tmp/bundle",
            ],
            "cgroups": {"path": f"/kubepods/besteffort/pod{UID}/crio-{CID}"},
        },
    }
    _write(tmp_path / CID / "state.json", state)
    info = ContainerResolver(state_dirs=[tmp_path]).container(CID)
    assert info == ContainerInfo(CID, "runc", None, "p1", "ns1", None, {})


def test_crun_status_without_its_config_copy_is_not_there_yet(tmp_path: Path) -> None:
    _write(tmp_path / CID / "status", {"pid": 1, "bundle": "/b"})
    resolver = ContainerResolver(state_dirs=[tmp_path])
    assert resolver.container(CID) is None
    _write(tmp_path / CID / "config.json", {"annotations": {"io.kubernetes.pod.name": "p"}})
    info = resolver.container(CID)
    assert info is not None and (info.runtime, info.pod) == ("crun", "p")


def test_first_state_dir_that_knows_the_container_wins(tmp_path: Path) -> None:
    _write(tmp_path / "a" / CID / "state.json", {"config": {"labels": ["io.kubernetes.pod.name=from-a"]}})
    _write(tmp_path / "b" / CID / "state.json", {"config": {"labels": ["io.kubernetes.pod.name=from-b"]}})
    info = ContainerResolver(state_dirs=[tmp_path / "missing", tmp_path / "b", tmp_path / "a"]).container(CID)
    assert info is not None and info.pod == "from-b"


def test_container_info_is_cached_by_id(tmp_path: Path) -> None:
    path = _write(tmp_path / CID / "state.json", {"config": {"labels": ["io.kubernetes.pod.name=p"]}})
    resolver = ContainerResolver(state_dirs=[tmp_path], cache_size=1)
    assert resolver.container(CID) is not None
    path.unlink()
    assert resolver.container(CID) is not None  # cached
    other = secrets.token_hex(32)
    _write(tmp_path / other / "state.json", {"config": {"labels": []}})
    assert resolver.container(other) is not None  # evicts CID (cache of one)
    assert resolver.container(CID) is None
    assert resolver.stats.bundles_read == 2 and resolver.stats.bundles_missing == 1


# --- hostile state directories -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../../etc",
        "..",
        "",
        CID[:63],
        CID + "0",
        CID.upper(),
        f"{CID[:60]}/../",
        "a" * 10_000,
        "\x00" * 64,
    ],
)
def test_ids_outside_the_alphabet_are_never_used_as_paths(tmp_path: Path, bad_id: str) -> None:
    _write(tmp_path / "etc" / "state.json", {"config": {"labels": ["io.kubernetes.pod.name=escaped"]}})
    resolver = ContainerResolver(state_dirs=[tmp_path / "runc"])
    assert resolver.container(bad_id) is None
    assert resolver.stats.bundles_missing == 0  # refused before any file was looked at


def test_symlinked_config_is_not_followed(tmp_path: Path) -> None:
    secret = _write(
        tmp_path / "elsewhere" / "config.json", {"annotations": {"io.kubernetes.pod.name": "leak"}}
    )
    folder = tmp_path / "state" / "k8s.io" / CID
    folder.mkdir(parents=True)
    (folder / "config.json").symlink_to(secret)
    assert ContainerResolver(state_dirs=[tmp_path / "state"]).container(CID) is None


def test_symlinked_container_folder_is_not_followed(tmp_path: Path) -> None:
    _write(tmp_path / "elsewhere" / "state.json", {"config": {"labels": ["io.kubernetes.pod.name=leak"]}})
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / CID).symlink_to(tmp_path / "elsewhere")
    assert ContainerResolver(state_dirs=[tmp_path / "state"]).container(CID) is None


def test_state_dir_itself_may_be_a_link(tmp_path: Path) -> None:
    # A DaemonSet mounts the host's /run somewhere; the operator's own path may be a link.
    _write(tmp_path / "real" / CID / "state.json", {"config": {"labels": ["io.kubernetes.pod.name=p"]}})
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert ContainerResolver(state_dirs=[tmp_path / "link"]).container(CID) is not None


def test_fifo_and_device_are_refused_without_blocking(tmp_path: Path) -> None:
    folder = tmp_path / CID
    folder.mkdir()
    os.mkfifo(folder / "state.json")  # opening it for reading would block forever without O_NONBLOCK
    assert read_bounded(tmp_path, [CID, "state.json"], 1024) is None
    assert ContainerResolver(state_dirs=[tmp_path]).container(CID) is None
    assert read_bounded(Path("/dev"), ["zero"], 1024) is None


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / CID
    folder.mkdir()
    with open(folder / "state.json", "wb") as handle:
        handle.truncate(MAX_JSON + 1)  # sparse: costs no disk
    assert ContainerResolver(state_dirs=[tmp_path]).container(CID) is None
    (tmp_path / "small").write_bytes(b"x" * 100)
    assert read_bounded(tmp_path, ["small"], 99) is None
    assert read_bounded(tmp_path, ["small"], 100) == b"x" * 100


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b"null",
        b'{"annotations": "nope"}',
        b'{"annotations": {"io.kubernetes.pod.name": 5}}',
        b'{"annotations": {"io.kubernetes.pod.name": "bad\\nname"}}',
        b'{"annotations": {"io.kubernetes.pod.name": "' + b"x" * 300 + b'"}}',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,
        b'{"annotations": {"io.kubernetes.cri-o.Labels": "{not json"}}',
        b'{"annotations": {"io.kubernetes.pod.uid": "../../etc"}}',
    ],
)
def test_broken_configs_yield_no_names(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "k8s.io" / CID).mkdir(parents=True)
    (tmp_path / "k8s.io" / CID / "config.json").write_bytes(content)
    info = ContainerResolver(state_dirs=[tmp_path]).container(CID)
    assert info is None or (info.pod, info.namespace, info.pod_uid, info.container_name) == (None,) * 4


def test_many_annotations_are_bounded(tmp_path: Path) -> None:
    annotations = {f"k{i}": "v" * 100 for i in range(50_000)}  # 5.5 MB, under the size cap
    annotations["io.kubernetes.pod.name"] = "p"
    _write(tmp_path / "k8s.io" / CID / "config.json", {"annotations": annotations})
    info = ContainerResolver(state_dirs=[tmp_path]).container(CID)
    # Bounded, but the keys that name the pod are taken first: a pod cannot hide behind annotations.
    assert info is not None and info.pod == "p"


def test_many_namespace_folders_are_bounded(tmp_path: Path) -> None:
    for i in range(1000):
        (tmp_path / f"ns{i:04d}").mkdir()
    assert ContainerResolver(state_dirs=[tmp_path]).container(CID) is None


# --- /proc parsing ------------------------------------------------------------------------------------------


def test_parse_stat_with_a_hostile_comm() -> None:
    rest = b" S 1 2 3 0 -1 4194560 90 0 1 0 0 0 0 0 20 0 1 0 56028 2322432 332 0"
    assert parse_stat(b"8150 (sleep)" + rest) == ("sleep", 56028)
    assert parse_stat(b"8150 (a) (b) 1 2 3)" + rest) == ("a) (b) 1 2 3", 56028)
    assert parse_stat(b"8150 (\xff\xfe)" + rest) == ("\ufffd\ufffd", 56028)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"1 (x", b"1 x) S", b"1 (x) S 1 2", b"1 (x) S" + b" z" * 30, b")(" * 100]
)
def test_parse_stat_garbage(data: bytes) -> None:
    assert parse_stat(data) is None


def test_parse_btime() -> None:
    assert parse_btime(b"cpu  1 2 3\nbtime 1700000000\nprocesses 5\n") == 1700000000
    assert parse_btime(b"btime x\n") is None
    assert parse_btime(b"") is None


def test_fake_proc_tree_with_a_reused_pid(tmp_path: Path) -> None:
    """The same pid with another start time is another process (real reuse: the _real test)."""
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "stat").write_bytes(b"btime 1000\n")
    stat = b"4242 (app) S" + b" 0" * 18 + b" %d 1 1 0"
    (proc / "4242" / "stat").write_bytes(stat % 500)
    (proc / "4242" / "cgroup").write_bytes(f"0::/kubepods/besteffort/pod{UID}/crio-{CID}\n".encode())
    state = tmp_path / "runc"
    _write(state / CID / "state.json", {"config": {"labels": ["io.kubernetes.pod.name=p"]}})
    resolver = ContainerResolver(proc=proc, state_dirs=[state])
    first = resolver.lookup(4242)
    assert first.settled and first.info is not None and first.info.pod == "p"
    (proc / "4242" / "stat").write_bytes(stat % 900)
    (proc / "4242" / "cgroup").write_bytes(b"0::/system.slice/cron.service\n")
    assert resolver.lookup(4242) == Lookup(None, True)
    # at= before the new process started (btime 1000 + 900 ticks / CLK_TCK): the old one's answer.
    started_old = 1000 + 500 / os.sysconf("SC_CLK_TCK")
    assert resolver.lookup(4242, at=started_old + 0.5) == first
    (proc / "4242" / "stat").unlink()
    assert resolver.lookup(4242) == Lookup(None, True)  # gone: the newest known owner's answer


# --- the optional API source --------------------------------------------------------------------------------


class StaticPods:
    """A PodLabelSource over a fixed set of pods (the real one, over the API: test_enricher_kube.py)."""

    def __init__(self, pods: Mapping[str, PodMeta], synced: bool = True) -> None:
        self.pods, self._synced = dict(pods), synced

    def pod(self, pod_uid: str) -> PodMeta | None:
        return self.pods.get(pod_uid)

    def labels(self, pod_uid: str) -> Mapping[str, str] | None:
        meta = self.pods.get(pod_uid)
        return meta.labels if meta else None

    def synced(self) -> bool:
        return self._synced


def _proc_with_container(tmp_path: Path, annotations: list[str]) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    (proc / "77").mkdir(parents=True)
    (proc / "77" / "stat").write_bytes(b"77 (app) S" + b" 0" * 18 + b" 5 1 1 0")
    (proc / "77" / "cgroup").write_bytes(f"0::/kubepods/besteffort/pod{UID}/crio-{CID}\n".encode())
    state = tmp_path / "runc"
    _write(state / CID / "state.json", {"config": {"labels": annotations}})
    return proc, state


def test_api_labels_and_missing_names_are_added(tmp_path: Path) -> None:
    proc, state = _proc_with_container(tmp_path, [])
    api = StaticPods({UID: PodMeta(UID, "from-api", "ns-api", {"app": "x"})})
    found = ContainerResolver(proc=proc, state_dirs=[state], api=api).lookup(77)
    assert found == Lookup(ContainerInfo(CID, "cri-o", None, "from-api", "ns-api", UID, {"app": "x"}), True)


def test_bundle_names_win_over_the_api(tmp_path: Path) -> None:
    proc, state = _proc_with_container(
        tmp_path, ["io.kubernetes.pod.name=p", "io.kubernetes.pod.namespace=n"]
    )
    api = StaticPods({UID: PodMeta(UID, "other", "other-ns", {"app": "x"})})
    found = ContainerResolver(proc=proc, state_dirs=[state], api=api).lookup(77)
    assert found.info is not None and (found.info.pod, found.info.namespace) == ("p", "n")
    assert found.info.labels == {"app": "x"}


def test_pod_the_synced_api_has_not_seen_yet_is_unsettled(tmp_path: Path) -> None:
    proc, state = _proc_with_container(tmp_path, ["io.kubernetes.pod.name=p"])
    api = StaticPods({})
    resolver = ContainerResolver(proc=proc, state_dirs=[state], api=api)
    assert not resolver.lookup(77).settled
    api.pods[UID] = PodMeta(UID, "p", "n", {"tier": "web"})
    found = resolver.lookup(77)  # the node part is cached; the labels are looked up each time
    assert found.settled and found.info is not None and found.info.labels == {"tier": "web"}
    # An API that never synced (unreachable) does not hold records back.
    assert (
        ContainerResolver(proc=proc, state_dirs=[state], api=StaticPods({}, synced=False)).lookup(77).settled
    )


def test_runc_labels_cannot_push_the_pods_names_out(tmp_path: Path) -> None:
    labels = [f"junk{i}=x" for i in range(20_000)] + ["io.kubernetes.pod.name=p", "bundle=/b"]
    _write(tmp_path / CID / "state.json", {"config": {"labels": labels}})
    info = ContainerResolver(state_dirs=[tmp_path]).container(CID)
    assert info is not None and info.pod == "p"
