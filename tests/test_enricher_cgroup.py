"""cgroup path -> container: every layout the runtimes write, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syscribe.enricher.cgroup import (
    CONTAINER_ID,
    MAX_PATH,
    ContainerRef,
    parse_path,
    parse_proc_cgroup,
)

ID = "d5a41c7c2ea9956c57b5c72dc267b1dae12f3dfc5e36021dffd3dd8082f59571"
ID2 = "18b2adc8507104e412c946bec11679590801f547eee513fa298054f14fbf4240"
NODE = "134b58ab2e0cfd7432a9db818b1b4ec52fdc747333f0ba2c9342860dc2ea7c50"
UID = "f6ec7293-3d26-407f-8861-8593e009f36e"
UID_ = UID.replace("-", "_")
STATIC_UID = "2a6b5d3c0d0e5b1c8b0f3e6f7a9b1c2d"  # static pods: a hash of the manifest

# (path, runtime, container id, pod uid, qos, monitor, outer)
LAYOUTS = [
    # CRI-O, systemd driver (cgroupsPath "kubepods-besteffort-pod<u_u>.slice:crio:<id>")
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope",
        "cri-o",
        ID,
        UID,
        "besteffort",
        False,
        (),
    ),
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope",
        "cri-o",
        ID,
        UID,
        "burstable",
        False,
        (),
    ),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope", "cri-o", ID, UID, "guaranteed", False, ()),
    # crun with systemd may add a sub-cgroup below the scope
    (
        f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope/container",
        "cri-o",
        ID,
        UID,
        "guaranteed",
        False,
        (),
    ),
    # CRI-O, cgroupfs driver (ContainerCgroupPath: <parent>/crio-<id>), as runc writes it here
    (f"/kubepods/besteffort/pod{UID}/crio-{ID}", "cri-o", ID, UID, "besteffort", False, ()),
    (f"/kubepods/pod{UID}/crio-{ID}", "cri-o", ID, UID, "guaranteed", False, ()),
    # CRI-O's default parent without a kubelet
    (f"/crio/crio-{ID}", "cri-o", ID, None, None, False, ()),
    # conmon: beside the container, not in it
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope",
        "cri-o",
        None,
        UID,
        "besteffort",
        True,
        (),
    ),
    (f"/kubepods/besteffort/pod{UID}/crio-conmon-{ID}", "cri-o", None, UID, "besteffort", True, ()),
    # containerd, systemd driver
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope",
        "containerd",
        ID,
        UID,
        "burstable",
        False,
        (),
    ),
    # containerd (and cri-dockerd), cgroupfs driver: a bare id
    (f"/kubepods/burstable/pod{UID}/{ID}", None, ID, UID, "burstable", False, ()),
    (f"/kubepods/pod{UID}/{ID}", None, ID, UID, "guaranteed", False, ()),
    # static pod: 32-hex uid
    (f"/kubepods/burstable/pod{STATIC_UID}/{ID}", None, ID, STATIC_UID, "burstable", False, ()),
    # docker
    (f"/docker/{ID}", "docker", ID, None, None, False, ()),
    (f"/system.slice/docker-{ID}.scope", "docker", ID, None, None, False, ()),
    # podman
    (f"/machine.slice/libpod-{ID}.scope", "podman", ID, None, None, False, ()),
    (f"/machine.slice/libpod-{ID}.scope/container", "podman", ID, None, None, False, ()),
    (f"/libpod_parent/libpod-{ID}", "podman", ID, None, None, False, ()),
    (f"/machine.slice/libpod-conmon-{ID}.scope", "podman", None, None, None, True, ()),
    (
        f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
        "podman",
        ID,
        None,
        None,
        False,
        (),
    ),
    # plain runc / crun: a 64-hex id as the last component
    (f"/{ID}", None, ID, None, None, False, ()),
    (f"/mygroup/{ID}", None, ID, None, None, False, ()),
    # kind / minikube: the node is a docker container; the pod's container is inside it
    (f"/docker/{NODE}/kubepods/besteffort/pod{UID}/{ID}", None, ID, UID, "besteffort", False, (NODE,)),
    (
        f"/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope",
        "containerd",
        ID,
        UID,
        "besteffort",
        False,
        (NODE,),
    ),
    # kind's node with no node container in view (read from inside the node)
    (
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod83b090de_9676_407c_99aa_d33dc6aa0c0d.slice/cri-containerd-{ID2}.scope",
        "containerd",
        ID2,
        "83b090de-9676-407c-99aa-d33dc6aa0c0d",
        "besteffort",
        False,
        (),
    ),
    # the kind node's own processes (its containerd, kubelet): in the node container
    (f"/docker/{NODE}/system.slice/containerd.service", "docker", NODE, None, None, False, ()),
    # read from inside a cgroup namespace: `..` components
    (f"/../../kubepods/besteffort/pod{UID}/crio-{ID}", "cri-o", ID, UID, "besteffort", False, ()),
    # a removed cgroup (v2 appends " (deleted)")
    (f"/kubepods/besteffort/pod{UID}/crio-{ID} (deleted)", "cri-o", ID, UID, "besteffort", False, ()),
    # docker-in-docker in a pod: the innermost container; the pod belongs to the outer one
    (f"/kubepods/besteffort/pod{UID}/{ID2}/docker/{ID}", "docker", ID, None, None, False, (ID2,)),
]


@pytest.mark.parametrize(("path", "runtime", "cid", "uid", "qos", "monitor", "outer"), LAYOUTS)
def test_layouts(
    path: str,
    runtime: str | None,
    cid: str | None,
    uid: str | None,
    qos: str | None,
    monitor: bool,
    outer: tuple[str, ...],
) -> None:
    assert parse_path(path) == ContainerRef(runtime, cid, uid, qos, monitor, outer)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/init.scope",
        "/system.slice/cron.service",
        "/user.slice/user-0.slice/session-1.scope",
        "/process_api/dd15036ee35e6fbf11e760bd00dba156",  # 32 hex: not a container id
        "/libpod_parent/conmon",  # podman's conmon, cgroupfs manager
        "/kubepods",
        "/kubepods/besteffort",
        "/kubepods.slice/kubepods-besteffort.slice",
        "/docker",
        "",
    ],
)
def test_host_cgroups(path: str) -> None:
    assert parse_path(path) is None


def test_pod_without_container() -> None:
    ref = parse_path(f"/kubepods/besteffort/pod{UID}")
    assert ref == ContainerRef(None, None, UID, "besteffort")


@pytest.mark.parametrize(
    "path",
    [
        f"/kubepods/besteffort/pod{UID}/crio-{ID[:-1]}",  # too short
        f"/kubepods/besteffort/pod{UID}/crio-{ID}0",  # too long
        f"/kubepods/besteffort/pod{UID}/crio-{ID.upper()}",  # runtimes write lower case
        f"/kubepods/besteffort/pod{UID}/crio-../../../../etc/passwd",
        f"/kubepods/besteffort/pod{UID}/crio-{ID[:60]}/../x",
        f"/docker/{ID[:63]}g",
        "/docker/../../../../run/runc",
        f"/kubepods/besteffort/pod{UID}/cri-containerd-{ID}.scope.evil",
        f"/kubepods/besteffort/pod{UID}/xcrio-{ID}",
        f"/kubepods/besteffort/pod{UID}/{ID}\x00",
    ],
)
def test_wrong_ids_are_not_containers(path: str) -> None:
    ref = parse_path(path)
    assert ref is None or ref.container_id is None


@pytest.mark.parametrize(
    "segment",
    ["podnot-a-uid", "pod../../etc", f"pod{UID}x", f"pod{UID.upper()}", "pod" + "a" * 36],
)
def test_wrong_pod_uids_are_dropped(segment: str) -> None:
    ref = parse_path(f"/kubepods/besteffort/{segment}/crio-{ID}")
    assert ref is not None and ref.container_id == ID and ref.pod_uid is None


# --- whole /proc/<pid>/cgroup files ------------------------------------------------------------------------

HYBRID_RUNC = (
    "\n".join(
        f"{n}:{c}:/kubepods/besteffort/pod{UID}/crio-{ID}"
        for n, c in [(10, "hugetlb"), (9, "name=systemd"), (8, "pids"), (4, "memory"), (1, "cpu")]
    )
    + f"\n0::/kubepods/besteffort/pod{UID}/crio-{ID}\n"
)


def test_hybrid_file_as_runc_writes_it_here() -> None:
    assert parse_proc_cgroup(HYBRID_RUNC) == ContainerRef("cri-o", ID, UID, "besteffort")
    assert parse_proc_cgroup(HYBRID_RUNC.encode()) == ContainerRef("cri-o", ID, UID, "besteffort")


def test_v2_only() -> None:
    text = f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
    assert parse_proc_cgroup(text) == ContainerRef("containerd", ID, UID, "guaranteed")


def test_v1_only_with_named_systemd() -> None:
    text = f"12:pids:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"
    assert parse_proc_cgroup(text) == ContainerRef("docker", ID, None, None)


def test_hybrid_where_v2_is_unmanaged() -> None:
    # Runtimes that manage only the v1 controllers leave the process at the v2 root.
    text = f"0::/\n9:name=systemd:/\n4:memory:/kubepods/besteffort/pod{UID}/crio-{ID}\n"
    assert parse_proc_cgroup(text) == ContainerRef("cri-o", ID, UID, "besteffort")


def test_v2_wins_over_v1_when_both_name_containers() -> None:
    text = f"4:memory:/docker/{ID2}\n0::/kubepods/besteffort/pod{UID}/crio-{ID}\n"
    assert parse_proc_cgroup(text).container_id == ID  # type: ignore[union-attr]


def test_podman_conmon_file_is_a_host_process() -> None:
    text = "10:hugetlb:/libpod_parent/conmon\n9:name=systemd:/\n4:memory:/libpod_parent/conmon\n0::/\n"
    assert parse_proc_cgroup(text) is None


def test_monitor_is_reported_when_no_container() -> None:
    text = f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope\n"
    ref = parse_proc_cgroup(text)
    assert ref is not None and ref.monitor and ref.container_id is None and ref.pod_uid == UID


def test_host_file() -> None:
    text = "10:hugetlb:/\n9:name=systemd:/\n4:memory:/process_api/dd15036ee35e6fbf11e760bd00dba156\n0::/\n"
    assert parse_proc_cgroup(text) is None


# --- hostile input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 1000,
        b"garbage",
        b":::::\n::\n0\n",
        b"x:memory:/docker/" + ID.encode(),  # hierarchy not a number
        b"4:memory:docker/" + ID.encode(),  # not absolute
        b"\xff\xfe0::/\xff/" + ID.encode() + b"\n",
        bytes(range(256)) * 10,
    ],
)
def test_garbage_is_not_a_container(data: bytes) -> None:
    ref = parse_proc_cgroup(data)
    assert ref is None or ref.container_id is None


def test_invalid_utf8_around_a_real_id_still_parses() -> None:
    data = b"0::/\xff\xfe/crio-" + ID.encode() + b"\n"
    assert parse_proc_cgroup(data) == ContainerRef("cri-o", ID)


def test_huge_inputs_are_bounded() -> None:
    # A 10 MB line, a path over PATH_MAX, a million components, a million lines.
    assert parse_proc_cgroup(b"0::/" + b"a" * 10_000_000) is None
    assert parse_path("/" + "x" * MAX_PATH + f"/crio-{ID}") is None
    assert parse_path("/a" * 1_000_000 + f"/crio-{ID}") is None
    many = ("4:memory:/\n" * 1_000_000).encode() + f"0::/crio-{ID}\n".encode()
    assert parse_proc_cgroup(many) is None  # past the line bound: never looked at


def test_deeply_nested_ids_keep_the_innermost() -> None:
    ids = [f"{i:064x}" for i in range(1, 6)]
    path = "".join(f"/docker/{i}" for i in ids)
    ref = parse_path(path)
    assert ref is not None and ref.container_id == ids[-1] and ref.outer == tuple(ids[:-1])


@given(st.text(max_size=300))
def test_any_text_gives_only_valid_ids(text: str) -> None:
    ref = parse_proc_cgroup(text)
    if ref is not None:
        for cid in (ref.container_id, *ref.outer):
            assert cid is None or CONTAINER_ID.fullmatch(cid)


@given(st.binary(max_size=300))
def test_any_bytes_give_only_valid_ids(data: bytes) -> None:
    ref = parse_proc_cgroup(b"0::/" + data)
    if ref is not None and ref.container_id is not None:
        assert CONTAINER_ID.fullmatch(ref.container_id)
