"""OCI bundles from a busybox rootfs, and running them with runc or crun.

Used by `syscribe demo` and by the tests: a real container, started by a real runtime, with the
annotations, seccomp profile and hooks a test asks for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")


class BundleError(RuntimeError):
    pass


def make_busybox_rootfs(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """Fill `dest` with busybox-static and one link per applet; return `dest`. Idempotent."""
    if not busybox.exists():
        raise BundleError(f"{busybox} not found: apt-get install busybox-static")
    bindir = dest / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "proc", "dev", "sys", "etc", "root"):
        (dest / sub).mkdir(exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    target = bindir / "busybox"
    if not target.exists():
        shutil.copy2(busybox, target)
    applets = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        # A link named busybox would replace the binary with a link to itself.
        if applet == "busybox" or "/" in applet:
            continue
        link = bindir / applet
        if not link.is_symlink() and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")
    return dest


def default_spec(runtime: str = "runc") -> dict[str, Any]:
    """The runtime's own starter spec (`runc spec` / `crun spec`), as a dict."""
    work = Path(tempfile.mkdtemp(prefix="syscribe-spec-"))
    try:
        for tool in (runtime, "runc", "crun"):
            if shutil.which(tool) is None:
                continue
            subprocess.run([tool, "spec"], cwd=work, check=True, capture_output=True)
            spec: dict[str, Any] = json.loads((work / "config.json").read_text())
            return spec
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise BundleError("neither runc nor crun is installed: apt-get install runc crun")


def make_bundle(
    bundle: Path,
    rootfs: Path,
    args: Sequence[str],
    *,
    annotations: Mapping[str, str] | None = None,
    seccomp: Mapping[str, Any] | None = None,
    prestart: Sequence[Mapping[str, Any]] = (),
    runtime: str = "runc",
    hostname: str = "syscribe",
) -> Path:
    """Write `bundle/config.json` for a container running `args` on `rootfs`; return the bundle."""
    bundle.mkdir(parents=True, exist_ok=True)
    spec = default_spec(runtime)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["root"] = {"path": str(rootfs.resolve()), "readonly": False}
    spec["hostname"] = hostname
    if annotations:
        spec["annotations"] = dict(annotations)
    linux = spec.setdefault("linux", {})
    if seccomp is not None:
        linux["seccomp"] = dict(seccomp)
    else:
        linux.pop("seccomp", None)
    if prestart:
        spec.setdefault("hooks", {})["prestart"] = [dict(h) for h in prestart]
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))
    return bundle


def run_container(
    bundle: Path,
    container_id: str,
    *,
    runtime: str = "runc",
    timeout: float = 60.0,
    root: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the bundle to completion with `runtime run`; the container is deleted afterwards."""
    cmd = [runtime]
    if root is not None:
        cmd += ["--root", str(root)]
    cmd += ["run", "--bundle", str(bundle), container_id]
    try:
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        kill = [runtime] + (["--root", str(root)] if root is not None else [])
        subprocess.run([*kill, "delete", "--force", container_id], capture_output=True, check=False)
        raise
