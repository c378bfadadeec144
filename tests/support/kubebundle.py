"""OCI bundles that look to the enricher's resolver like containers CRI-O made for a pod.

What the resolver needs to find a pod from a runc container (see enricher/containers.py and statedirs.py):

- a 64-hex container id (every CRI runtime uses one; the resolver trusts no other id);
- `linux.cgroupsPath` as CRI-O's cgroupfs manager writes it: `/kubepods/<qos>/pod<uid>/crio-<id>`
  (`/kubepods/pod<uid>/crio-<id>` for guaranteed pods);
- the annotations CRI-O puts in config.json: `io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`,
  `io.kubernetes.pod.uid`, `io.kubernetes.container.name`, plus its `io.kubernetes.cri-o.*` keys;
- runc's state in a directory the resolver reads: the default root /run/runc is among its default
  state dirs; with `runc --root DIR`, give DIR to `ContainerResolver(state_dirs=[...])`.

`crio_like_bundle()` makes the names, `write()` the bundle, `run_detached()` starts it and returns the
container's host pid, `stop()` removes it and its pod cgroup.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syscribe import annotations as keys
from syscribe.bundle import make_bundle

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class KubeBundle:
    container_id: str
    pod_uid: str
    pod: str
    namespace: str
    container: str
    qos: str
    sandbox_id: str
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def pod_cgroup(self) -> str:
        return (
            f"/kubepods/pod{self.pod_uid}"
            if self.qos == "guaranteed"
            else f"/kubepods/{self.qos}/pod{self.pod_uid}"
        )

    @property
    def cgroups_path(self) -> str:
        return f"{self.pod_cgroup}/crio-{self.container_id}"

    def write(
        self,
        bundle: Path,
        rootfs: Path,
        args: Sequence[str],
        *,
        seccomp: Mapping[str, Any] | None = None,
        runtime: str = "runc",
        prestart: Sequence[Mapping[str, Any]] = (),
    ) -> Path:
        """The bundle (syscribe.bundle.make_bundle) with these annotations and this cgroupsPath."""
        make_bundle(
            bundle,
            rootfs,
            args,
            annotations=self.annotations,
            seccomp=seccomp,
            prestart=prestart,
            runtime=runtime,
        )
        config = bundle / "config.json"
        spec = json.loads(config.read_text())
        spec.setdefault("linux", {})["cgroupsPath"] = self.cgroups_path
        config.write_text(json.dumps(spec, indent=2))
        return bundle


def crio_like_bundle(
    *,
    pod: str = "web-0",
    namespace: str = "shop",
    container: str = "app",
    qos: str = "besteffort",
    pod_uid: str | None = None,
    container_id: str | None = None,
    extra_annotations: Mapping[str, str] | None = None,
) -> KubeBundle:
    """Names and annotations of a container that CRI-O would have made for pod `namespace/pod`."""
    if qos not in ("guaranteed", "burstable", "besteffort"):
        raise ValueError(f"unknown QoS class {qos!r}")
    cid = container_id or secrets.token_hex(32)
    uid = pod_uid or str(uuid.uuid4())
    sandbox = secrets.token_hex(32)
    labels = {
        keys.CONTAINER_NAME: container,
        keys.POD_NAME: pod,
        keys.POD_NAMESPACE: namespace,
        keys.POD_UID: uid,
    }
    annotations = {
        **labels,
        "io.container.manager": "cri-o",
        keys.CRIO_CONTAINER_TYPE: "container",
        "io.kubernetes.cri-o.ContainerID": cid,
        keys.CRIO_SANDBOX_ID: sandbox,
        "io.kubernetes.cri-o.Name": f"k8s_{container}_{pod}_{namespace}_{uid}_0",
        keys.CRIO_LABELS: json.dumps(labels),
        **(extra_annotations or {}),
    }
    return KubeBundle(cid, uid, pod, namespace, container, qos, sandbox, annotations)


def _runtime_cmd(runtime: str, root: Path | None) -> list[str]:
    return [runtime, *(["--root", str(root)] if root is not None else [])]


def run_detached(bundle: Path, container_id: str, *, runtime: str = "runc", root: Path | None = None) -> int:
    """`runtime run -d`; the container's init pid on the host."""
    # Detached, the container keeps the runtime's stdio: pipes here would never reach EOF.
    subprocess.run(
        [*_runtime_cmd(runtime, root), "run", "-d", "--bundle", str(bundle), container_id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )
    state = subprocess.run(
        [*_runtime_cmd(runtime, root), "state", container_id],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return int(json.loads(state.stdout)["pid"])


def stop(kb: KubeBundle | str, *, runtime: str = "runc", root: Path | None = None) -> None:
    """Kill and delete the container (if there), then remove its pod's cgroup. Never raises."""
    cid = kb.container_id if isinstance(kb, KubeBundle) else kb
    cmd = _runtime_cmd(runtime, root)
    subprocess.run([*cmd, "kill", cid, "KILL"], capture_output=True, check=False, timeout=30)
    for _ in range(50):
        done = subprocess.run([*cmd, "delete", "--force", cid], capture_output=True, check=False, timeout=30)
        state = subprocess.run([*cmd, "state", cid], capture_output=True, check=False, timeout=30)
        if state.returncode != 0:
            break
        del done
        time.sleep(0.1)
    if isinstance(kb, KubeBundle):
        remove_cgroup(kb.pod_cgroup)


def remove_cgroup(path: str) -> None:
    """rmdir `path` (and the container cgroups below it) in every hierarchy; only empty ones go. The
    shared `/kubepods/<qos>` parents stay: another test may be creating a pod under them right now."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / path.lstrip("/")
        if not top.is_dir():
            continue
        for child in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
