"""`syscribe enrich --kube` end to end: the real command, real audit records from a runc container made
as CRI-O would for a pod, and a real kube-apiserver (tests/support/kubeapi.py) on 127.0.0.1 reached
through a kubeconfig with the token of the enricher's service account (bound to the ClusterRole that
packaging/kubernetes/enricher.yaml ships). The pod on this node whose uid is the container's
`io.kubernetes.pod.uid` annotation gives the line its `labels`.

Also what happens when the API server is not there: down at start (the enricher starts anyway, says so
in one line, writes lines without labels, and adds them once the server answers), and gone mid-run (the
enricher keeps writing lines, with the labels it already had).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import kubebundle
from tests.support.enricherkube import EnricherCluster
from tests.support.kubeapi import KubeAPI
from tests.support.kubebundle import KubeBundle, crio_like_bundle, run_detached
from tests.support.prereq import require
from tests.test_enricher_proctrack_real import ARCHES, SYSCRIBE, EnricherRun, run_enricher, wait_until

pytestmark = pytest.mark.real

LOG_CHDIR: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ARCHES,
    "syscalls": [{"names": ["chdir"], "action": "SCMP_ACT_LOG"}],
}
LABELS = {"app": "web", "tier": "front"}


@dataclass
class Workload:
    kb: KubeBundle
    pid: int
    tmp: Path  # the container's /tmp, seen from the host
    tag: str
    sent: int = 0

    def trigger(self, e: EnricherRun, timeout: float = 60.0) -> dict[str, Any]:
        """Make the container's shell `cd` (a logged chdir) and return the line of a record it made.

        The netlink group may drop a record (a buffer overrun, counted by the enricher): another `cd`
        makes another record, so the shell is asked again every few seconds until a line comes.
        """
        seen = {r["auditID"] for r in e.records() if r["pid"] == self.pid}

        def new_chdir(r: dict[str, Any]) -> bool:
            return r["pid"] == self.pid and r["syscallName"] == "chdir" and r["auditID"] not in seen

        deadline = time.monotonic() + timeout
        while True:
            (self.tmp / f"t-{self.tag}-{self.sent}").touch()
            self.sent += 1
            try:
                return e.wait_for(new_chdir, timeout=min(10.0, max(0.1, deadline - time.monotonic())))
            except AssertionError:
                if time.monotonic() >= deadline or e.process.poll() is not None:
                    raise

    def trigger_until(
        self, e: EnricherRun, good: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Trigger lines until one is `good` (something the enricher learns in the background)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.trigger(e)
            if good(line):
                return line
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout} s; stderr: {e.stderr()[-2000:]!r}")


@contextlib.contextmanager
def workload(rootfs: Path, tmp_path: Path, namespace: str, pod_uid: str) -> Iterator[Workload]:
    """A shell in a runc container of pod NAMESPACE/web-0 (uid `pod_uid`) that does `cd /tmp` each time a
    trigger file appears."""
    kb = crio_like_bundle(pod="web-0", namespace=namespace, container="app", pod_uid=pod_uid)
    tag = kb.container_id[:12]
    script = (
        f"n=0; while :; do if [ -e /tmp/t-{tag}-$n ]; then cd /tmp; n=$((n+1)); fi; sleep 0.05; done"
    )
    bundle = kb.write(tmp_path / f"bundle-{tag}", rootfs, ["sh", "-c", script], seccomp=LOG_CHDIR)
    w = None
    try:
        w = Workload(kb, run_detached(bundle, kb.container_id), rootfs / "tmp", tag)
        yield w
    finally:
        kubebundle.stop(kb)
        for trigger in (rootfs / "tmp").glob(f"t-{tag}-*"):
            trigger.unlink(missing_ok=True)


def _kube_args(cluster: EnricherCluster, tmp_path: Path) -> tuple[str, ...]:
    kubeconfig = cluster.kube.kubeconfig_for_token(cluster.token, tmp_path / "kubeconfig")
    return ("--source", "netlink", "--kube", "--kubeconfig", str(kubeconfig), "--node", cluster.node)


@pytest.fixture
def real(busybox_rootfs: Path) -> Path:
    require("root", "runc", "busybox")
    return busybox_rootfs


@pytest.fixture
def cluster(kube_api: KubeAPI, kube_namespace: str) -> EnricherCluster:
    return EnricherCluster.make(kube_api, kube_namespace)


def test_the_line_carries_the_pods_labels_and_their_changes(
    real: Path, tmp_path: Path, cluster: EnricherCluster
) -> None:
    uid = cluster.create("web-0", **LABELS)
    # Same namespace, another node: not this node's business.
    cluster.create("web-1", node=f"{cluster.node}-other", app="elsewhere")
    ns = cluster.namespace
    with run_enricher(tmp_path, *_kube_args(cluster, tmp_path)) as e, workload(real, tmp_path, ns, uid) as w:
        line = w.trigger(e)
        assert (line["namespace"], line["pod"], line["container"], line["podUID"]) == (
            ns, "web-0", "app", uid
        ), line
        assert line["labels"] == LABELS and line["action"] == "log", line
        cluster.label("web-0", release="2")
        changed = w.trigger_until(e, lambda r: r["labels"].get("release") == "2", "the new label")
        assert changed["labels"] == {**LABELS, "release": "2"}
    # One list, then watches: never a request per record.
    asked = cluster.requests()
    selector = f"fieldSelector=spec.nodeName%3D{cluster.node}"
    assert asked and all(r.verb in ("list", "watch") and selector in r.uri for r in asked), asked
    assert [r.verb for r in asked].count("list") == 1, asked
    assert "Traceback" not in e.stderr()


def test_api_server_down_at_start(real: Path, tmp_path: Path, cluster: EnricherCluster) -> None:
    """Degraded, not failed: the node alone names the pod; labels come when the server answers."""
    uid = cluster.create("web-0", **LABELS)
    kube, ns = cluster.kube, cluster.namespace
    with contextlib.ExitStack() as outage:
        outage.enter_context(kube.down())
        args = _kube_args(cluster, tmp_path)
        with run_enricher(tmp_path, *args) as e, workload(real, tmp_path, ns, uid) as w:
            said = [line for line in e.stderr().splitlines() if "did not answer" in line]
            assert len(said) == 1 and kube.url in said[0] and "without pod labels" in said[0], e.stderr()
            line = w.trigger(e)
            assert (line["pod"], line["namespace"], line["container"], line["podUID"]) == (
                "web-0", ns, "app", uid
            )
            assert line["labels"] == {}
            outage.close()  # the API server starts
            labelled = w.trigger_until(e, lambda r: bool(r["labels"]), "a line with labels", 120)
            assert labelled["labels"] == LABELS
            assert e.process.poll() is None
    assert "Kubernetes API answers again" in e.stderr() and "Traceback" not in e.stderr()


def test_api_server_going_away_mid_run(real: Path, tmp_path: Path, cluster: EnricherCluster) -> None:
    uid = cluster.create("web-0", **LABELS)
    kube, ns = cluster.kube, cluster.namespace
    with run_enricher(tmp_path, *_kube_args(cluster, tmp_path)) as e, workload(real, tmp_path, ns, uid) as w:
        assert w.trigger(e)["labels"] == LABELS
        with kube.down():
            wait_until(lambda: f"Kubernetes API at {kube.url}:" in e.stderr(), "the enricher noticing")
            for _ in range(3):  # lines keep coming, with the labels it had
                line = w.trigger(e)
                assert (line["pod"], line["labels"]) == ("web-0", LABELS), line
            assert e.process.poll() is None
            assert e.stop() == 0
    said = [line for line in e.stderr().splitlines() if f"Kubernetes API at {kube.url}:" in line]
    assert len(said) == 1 and "pods already listed keep their labels" in said[0], e.stderr()
    assert "Traceback" not in e.stderr()


def test_a_kubeconfig_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [\n")
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    done = subprocess.run(
        [SYSCRIBE, "enrich", "--source", "auditd", "--input", str(log), "--no-follow",
         "--kube", "--kubeconfig", str(bad), "--node", "node-1"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "kubeconfig" in errors[0].lower() and "drop --kube" in errors[0], done.stderr
