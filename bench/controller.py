"""Controller benchmark: `python -m bench.controller` (as root, from the repository root, after
`make test` has built the API server once).

Against the tests' real kube-apiserver and etcd (tests/support/kubeapi.py), prints:
- the webhook: AdmissionReviews per second and latency percentiles with 50 concurrent HTTPS clients
  posting a pod CREATE that a ProfileRecording selects (the answer carries a patch), for `--reviews`
  requests; and the same through the API server (pods created with 50 threads), which is what a
  user waits for;
- the agent: from one dump appearing under its root to the profile in the API server (median of
  `--single` dumps, one at a time), and 100 dumps written at once until the last pod is in the
  recording's status.

Nothing is asserted: the numbers go to docs/controller.md.
"""

from __future__ import annotations

import argparse
import hashlib
import ssl
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syscribe import ociprofile as prof  # noqa: E402
from syscribe.arch import X86_64  # noqa: E402
from syscribe.controller import dumppath  # noqa: E402
from syscribe.controller.recording import GROUP, PLURAL, VERSION  # noqa: E402
from tests.support.controller import AgentProcess, control_plane, wait_for  # noqa: E402
from tests.support.kubeapi import KubeAPI  # noqa: E402

SPO = ("security-profiles-operator.x-k8s.io", "v1", "seccompprofiles")


def review_body(i: int) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"{i:08x}-0000-4000-8000-000000000000",
                "namespace": "bench",
                "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "object": {
                    "metadata": {"generateName": "web-", "labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "busybox"},
                            {"name": "sidecar", "image": "busybox"},
                        ]
                    },
                },
            },
        }
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_webhook_direct(url: str, ca: Path, reviews: int, concurrency: int) -> tuple[float, list[float]]:
    context = ssl.create_default_context(cafile=str(ca))
    local = threading.local()

    def one(i: int) -> float:
        import http.client

        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPSConnection(
                "127.0.0.1", int(url.split(":")[2].split("/", 1)[0]), context=context, timeout=30
            )
        start = time.perf_counter()
        conn.request("POST", "/mutate", body=review_body(i), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - start
        assert response.status == 200 and b"JSONPatch" in data, data[:200]
        return elapsed

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(reviews)))
    return reviews / (time.perf_counter() - start), latencies


def bench_through_api(api: Any, namespace: str, pods: int, concurrency: int) -> tuple[float, list[float]]:
    from kubernetes import client

    core = client.CoreV1Api(api)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"}},
        "spec": {"nodeName": "n", "containers": [{"name": "app", "image": "busybox"}]},
    }

    def one(_i: int) -> float:
        start = time.perf_counter()
        made = core.create_namespaced_pod(namespace, body, _preload_content=False)
        elapsed = time.perf_counter() - start
        assert b"io.containers.trace-syscall/app" in made.data
        return elapsed

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(pods)))
    return pods / (time.perf_counter() - start), latencies


def write_dump(root: Path, namespace: str, recording: str, i: int, name: str) -> None:
    where = dumppath.for_pod(namespace, recording, "app", None, "web-", f"{i:012x}".ljust(32, "0"))
    body = prof.dumps(prof.from_names(["read", name], X86_64)).encode()
    profile_file, meta_file = root / where.relative(), root / where.relative_meta()
    profile_file.parent.mkdir(parents=True, exist_ok=True)
    profile_file.write_bytes(body)
    meta_file.write_bytes(
        orjson.dumps(
            {
                "namespace": namespace,
                "pod": f"web-p{i:05d}",
                "container": "app",
                "profileSHA256": hashlib.sha256(body).hexdigest(),
            }
        )
    )


def pods_recorded(custom: Any, namespace: str, recording: str) -> int:
    status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, recording).get(
        "status", {}
    )
    count: int = status.get("podsRecorded", 0)
    return count


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    from kubernetes import client

    pool = ["write", "open", "close", "mmap", "brk", "mkdir", "rmdir", "rename", "unlink", "chdir"]
    with (
        tempfile.TemporaryDirectory(prefix="syscribe-bench-") as tmp,
        KubeAPI(Path(tmp) / "kube") as kube,
        control_plane(kube, Path(tmp) / "cp", "/var/lib/syscribe/profiles") as cp,
    ):
        api = cp["api"]
        custom = client.CustomObjectsApi(api)
        namespace = kube.create_namespace("bench")
        for ns in (namespace, "bench"):
            if ns == "bench":
                client.CoreV1Api(api).create_namespace({"metadata": {"name": "bench"}})
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ProfileRecording",
                    "metadata": {"name": "web"},
                    "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "mergeStrategy": "Containers"},
                },
            )
        time.sleep(2)  # the webhook's watch delivers the recordings
        rate, latencies = bench_webhook_direct(
            cp["webhook"].url, cp["certs"].ca, args.reviews, args.concurrency
        )
        print(
            f"webhook, {args.reviews} reviews from {args.concurrency} HTTPS clients: {rate:.0f}/s, "
            f"p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms"
        )
        rate, latencies = bench_through_api(api, namespace, 500, args.concurrency)
        print(
            f"pod CREATE through the API server with the webhook, 500 pods, {args.concurrency} clients: "
            f"{rate:.0f}/s, p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.1f} ms"
        )

        root, quarantine = Path(tmp) / "root", Path(tmp) / "quarantine"
        agent = AgentProcess(cp["agent_kubeconfig"], root, quarantine, Path(tmp) / "agent.log")
        try:
            # The first dump waits for the agent to list recordings; one not timed.
            write_dump(root, namespace, "web", 0, "write")
            wait_for(
                "agent up", lambda: pods_recorded(custom, namespace, "web") == 1, timeout=60, interval=0.01
            )
            singles = []
            for i in range(1, args.single + 1):
                start = time.perf_counter()
                write_dump(root, namespace, "web", i, pool[i % len(pool)])
                wait_for(
                    "one dump",
                    lambda n=i + 1: pods_recorded(custom, namespace, "web") == n,
                    timeout=60,
                    interval=0.005,
                )
                singles.append(time.perf_counter() - start)
            print(
                f"agent, one dump to its profile and status (median of {args.single}): "
                f"{statistics.median(singles) * 1000:.0f} ms (max {max(singles) * 1000:.0f} ms)"
            )
            base = args.single + 1
            start = time.perf_counter()
            for i in range(base, base + args.burst):
                write_dump(root, namespace, "web", i, pool[i % len(pool)])
            written = time.perf_counter() - start
            wait_for(
                "the burst",
                lambda: pods_recorded(custom, namespace, "web") == base + args.burst,
                timeout=600,
                interval=0.02,
            )
            total = time.perf_counter() - start
            print(
                f"agent, {args.burst} dumps at once (written in {written * 1000:.0f} ms): "
                "last in the API after "
                f"{total:.2f} s ({args.burst / total:.0f} dumps/s)"
            )
        except AssertionError:
            print(agent.output()[-3000:])
            raise
        finally:
            agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
