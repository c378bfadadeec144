"""The resolver against real containers (runc, crun, podman) and real processes on this machine."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syscribe.enricher.containers import ContainerInfo, ContainerResolver, Lookup
from tests.support import kubebundle
from tests.support.kubebundle import KubeBundle, crio_like_bundle, run_detached
from tests.support.prereq import require

pytestmark = pytest.mark.real


def _wait_gone(pid: int) -> None:
    """Until /proc/<pid> is gone (the runtime's zombie is reaped by pid 1 a little later)."""
    for _ in range(600):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still there")


def _expected(kb: KubeBundle, runtime: str = "cri-o") -> ContainerInfo:
    return ContainerInfo(kb.container_id, runtime, kb.container, kb.pod, kb.namespace, kb.pod_uid, {})


@pytest.fixture
def pod_container(busybox_rootfs: Path, tmp_path: Path) -> Iterator[tuple[KubeBundle, int]]:
    """A runc container that CRI-O could have made for pod shop/web-0, running `sleep`."""
    require("root", "runc", "busybox")
    kb = crio_like_bundle()
    bundle = kb.write(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"])
    try:
        pid = run_detached(bundle, kb.container_id)
        yield kb, pid
    finally:
        kubebundle.stop(kb)


def test_runc_container_resolves_to_its_pod(pod_container: tuple[KubeBundle, int]) -> None:
    kb, pid = pod_container
    resolver = ContainerResolver()
    assert resolver.lookup(pid) == Lookup(_expected(kb), True)
    # The second time comes from the cache, keyed by (pid, start time).
    assert resolver.lookup(pid) == Lookup(_expected(kb), True)
    assert resolver.stats.cache_hits == 1 and resolver.stats.bundles_read == 1


def test_exec_in_the_container_resolves_too(pod_container: tuple[KubeBundle, int]) -> None:
    kb, _pid = pod_container
    subprocess.run(
        ["runc", "exec", "-d", kb.container_id, "sleep", "999"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )
    ps = subprocess.run(
        ["runc", "ps", "--format", "json", kb.container_id],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    pids = json.loads(ps.stdout)
    assert len(pids) == 2
    resolver = ContainerResolver()
    for pid in pids:
        assert resolver.lookup(pid) == Lookup(_expected(kb), True)
    # Two processes, one container: its state was read once.
    assert resolver.stats.bundles_read == 1


def test_gone_process_is_answered_from_the_cache(busybox_rootfs: Path, tmp_path: Path) -> None:
    require("root", "runc", "busybox")
    kb = crio_like_bundle(pod="batch-7", namespace="jobs", container="worker", qos="guaranteed")
    bundle = kb.write(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"])
    resolver = ContainerResolver()
    try:
        pid = run_detached(bundle, kb.container_id)
        assert resolver.lookup(pid) == Lookup(_expected(kb), True)
    finally:
        kubebundle.stop(kb)
    _wait_gone(pid)
    # The record arrived after its process went: written with what was known, settled.
    assert resolver.lookup(pid) == Lookup(_expected(kb), True)
    assert resolver.stats.gone == 1
    # A resolver that never saw it knows nothing, and says so once (settled).
    assert ContainerResolver().lookup(pid) == Lookup(None, True)


def _spawn_at(pid: int) -> subprocess.Popen[bytes] | None:
    """A host `sleep` that gets exactly `pid`, through ns_last_pid (other forks on the machine may race)."""
    last_pid = Path("/proc/sys/kernel/ns_last_pid")
    for _ in range(50):
        last_pid.write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "1000"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


def test_reused_pid_is_not_misattributed(busybox_rootfs: Path, tmp_path: Path) -> None:
    require("root", "runc", "busybox")
    kb = crio_like_bundle()
    bundle = kb.write(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"])
    resolver = ContainerResolver()
    try:
        pid = run_detached(bundle, kb.container_id)
        assert resolver.lookup(pid).info == _expected(kb)
        record_time = time.time()  # a record the container wrote, read later
    finally:
        kubebundle.stop(kb)
    _wait_gone(pid)
    # The clocks compared have a slack of START_SLACK seconds: the new owner starts well after it.
    time.sleep(2.5)
    host = _spawn_at(pid)
    if host is None:
        pytest.fail(f"could not get pid {pid} back through ns_last_pid (the machine forked too much)")
    try:
        # Same pid, another process (another start time): a host process now, not the container.
        assert resolver.lookup(pid) == Lookup(None, True)
        # A record older than the new process came from the old one: the history answers it.
        assert resolver.lookup(pid, at=record_time) == Lookup(_expected(kb), True)
        # A record newer than the new process is the new one's.
        assert resolver.lookup(pid, at=time.time()) == Lookup(None, True)
    finally:
        host.kill()
        host.wait()


def test_host_processes_are_not_containers() -> None:
    require("root")
    resolver = ContainerResolver()
    assert resolver.lookup(os.getpid()) == Lookup(None, True)
    assert resolver.lookup(1) == Lookup(None, True)


@pytest.mark.parametrize("pid", [0, -1, 2**22 + 1, 2**63, True])
def test_impossible_pids(pid: int) -> None:
    assert ContainerResolver().lookup(pid) == Lookup(None, True)


def _into_cgroup(pid: int, path: str) -> None:
    # Not cpuset: a new cpuset cgroup has no cpus until someone sets them (ENOSPC).
    for name in ("unified", "systemd", "pids", "memory"):
        hierarchy = Path("/sys/fs/cgroup") / name
        if not (hierarchy / "cgroup.procs").exists():
            continue
        target = hierarchy / path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        (target / "cgroup.procs").write_text(str(pid))


def test_container_whose_state_is_not_there_yet_is_unsettled() -> None:
    require("root")
    cid, uid = secrets.token_hex(32), str(uuid.uuid4())
    pod_cgroup = f"/kubepods/besteffort/pod{uid}"
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        _into_cgroup(proc.pid, f"{pod_cgroup}/crio-{cid}")
        resolver = ContainerResolver()
        partial = ContainerInfo(cid, "cri-o", None, None, None, uid, {})
        assert resolver.lookup(proc.pid) == Lookup(partial, False)
        assert resolver.stats.unsettled == 1 and resolver.stats.bundles_missing == 1
        proc.kill()
        proc.wait()
        _wait_gone(proc.pid)
        # Gone before its state appeared: what is known, settled, so the pipeline writes it.
        assert resolver.lookup(proc.pid) == Lookup(partial, True)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kubebundle.remove_cgroup(pod_cgroup)


def test_runtime_init_before_its_cgroup_is_unsettled(tmp_path: Path) -> None:
    require("root")
    # runc's init, between its start and its move into the container's cgroup, is called this; a
    # process gets that name (comm) from the file name it was executed as.
    init = tmp_path / "runc:[2:INIT]"
    init.symlink_to("/bin/sleep")
    plain = subprocess.Popen(["sleep", "1000"])
    named = subprocess.Popen([str(init), "1000"])
    try:
        for _ in range(200):  # until the child has exec'd (Popen can return just before)
            if Path(f"/proc/{named.pid}/comm").read_text().strip() == "runc:[2:INIT]":
                break
            time.sleep(0.01)
        assert Path(f"/proc/{named.pid}/comm").read_text().strip() == "runc:[2:INIT]"
        resolver = ContainerResolver()
        assert resolver.lookup(plain.pid) == Lookup(None, True)
        assert resolver.lookup(named.pid) == Lookup(None, False)
    finally:
        for proc in (plain, named):
            proc.kill()
            proc.wait()


def test_private_runc_root_needs_its_state_dir(busybox_rootfs: Path, tmp_path: Path) -> None:
    require("root", "runc", "busybox")
    root = tmp_path / "runc-root"
    kb = crio_like_bundle(qos="burstable")
    bundle = kb.write(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"])
    try:
        pid = run_detached(bundle, kb.container_id, root=root)
        partial = ContainerInfo(kb.container_id, "cri-o", None, None, None, kb.pod_uid, {})
        assert ContainerResolver().lookup(pid) == Lookup(partial, False)
        assert ContainerResolver(state_dirs=[root]).lookup(pid) == Lookup(_expected(kb), True)
    finally:
        kubebundle.stop(kb, root=root)


def test_crun_container(busybox_rootfs: Path, tmp_path: Path) -> None:
    require("root", "crun", "busybox")
    kb = crio_like_bundle(container="sidecar")
    bundle = kb.write(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"], runtime="crun")
    try:
        pid = run_detached(bundle, kb.container_id, runtime="crun")
        # Found through /run/crun/<id>/status and crun's copy of config.json.
        resolver = ContainerResolver(state_dirs=[Path("/run/crun")])
        assert resolver.lookup(pid) == Lookup(_expected(kb), True)
    finally:
        kubebundle.stop(kb, runtime="crun")


def test_plain_crun_container_without_kubernetes(busybox_rootfs: Path, tmp_path: Path) -> None:
    require("root", "crun", "busybox")
    cid = secrets.token_hex(32)
    from syscribe.bundle import make_bundle

    bundle = make_bundle(tmp_path / "bundle", busybox_rootfs, ["sleep", "1000"], runtime="crun")
    spec = json.loads((bundle / "config.json").read_text())
    spec["linux"]["cgroupsPath"] = f"/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))
    try:
        pid = run_detached(bundle, cid, runtime="crun")
        info = ContainerInfo(cid, "crun", None, None, None, None, {})
        assert ContainerResolver().lookup(pid) == Lookup(info, True)
    finally:
        kubebundle.stop(cid, runtime="crun")
        kubebundle.remove_cgroup(f"/{cid}")


def test_podman_container_and_its_conmon(busybox_rootfs: Path) -> None:
    require("root", "podman", "busybox")
    name = f"syscribe-resolver-{secrets.token_hex(4)}"
    podman = ["podman", "--cgroup-manager=cgroupfs"]
    run = [
        *podman, "run", "-d", "--name", name, "--network", "none",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
        "--annotation", "io.kubernetes.pod.name=ignored-outside-kubernetes",
        "--rootfs", str(busybox_rootfs), "sleep", "1000",
    ]  # fmt: skip
    try:
        cid = subprocess.run(run, capture_output=True, text=True, check=True, timeout=120).stdout.strip()
        inspect = subprocess.run(
            [*podman, "inspect", name, "--format", "{{.State.Pid}} {{.State.ConmonPid}}"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        pid, conmon = (int(x) for x in inspect.stdout.split())
        resolver = ContainerResolver()
        found = resolver.lookup(pid)
        assert found.settled and found.info is not None
        assert found.info.container_id == cid
        assert found.info.runtime == "podman"
        assert found.info.container_name == name  # from containers/storage's containers.json
        # The annotation is there, so it is reported; podman sets no namespace or pod uid.
        assert found.info.pod == "ignored-outside-kubernetes"
        assert (found.info.namespace, found.info.pod_uid) == (None, None)
        assert resolver.lookup(conmon) == Lookup(None, True)
    finally:
        subprocess.run([*podman, "rm", "-f", "-t", "0", name], capture_output=True, check=False, timeout=120)
