"""The built-in example that `make run` shows: record a busybox workload, read the profile, enforce it
with `syscribe run` and in a runc container, and show that the workload runs and another command does
not. Every step runs the real `syscribe` command, printed before it runs, so the output doubles as a
tutorial."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from syscribe import bundle

# A workload that does a little of everything a real one does: files, directories, a pipe, children.
WORKLOAD_SCRIPT = (
    "mkdir -p /tmp/syscribe-demo && echo hello > /tmp/syscribe-demo/greeting"
    " && cat /tmp/syscribe-demo/greeting | tr a-z A-Z && ls /tmp/syscribe-demo && rm -r /tmp/syscribe-demo"
)
WORKLOAD = ("/bin/busybox", "sh", "-c", WORKLOAD_SCRIPT)
# Something the workload never does: a symlink.
OTHER = ("/bin/busybox", "ln", "-s", "/tmp", "/tmp/syscribe-demo-link")


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


class Demo:
    def __init__(self, workdir: Path, runtime: str, backend: str, say: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.runtime = runtime
        self.backend = backend
        self.say = say
        self.checks: list[Check] = []
        self.syscribe = [sys.executable, "-m", "syscribe"]

    def run(self) -> bool:
        self.workdir.mkdir(parents=True, exist_ok=True)
        profile_path = self.workdir / "workload.json"
        container_profile_path = self.workdir / f"workload-{self.runtime}.json"

        self.step("1. Record the workload (its own mount and pid namespaces; eBPF counts its syscalls)")
        recorded = self.syscribe_cmd(
            ["record", "--backend", self.backend, "-o", str(profile_path), "--", *WORKLOAD]
        )
        self.expect("the workload ran while recorded", recorded.returncode == 0, recorded.stdout.strip())
        if recorded.returncode != 0:
            return self.report()

        self.step("2. The profile")
        names = self.allowed_names(profile_path)
        self.say(f"   {profile_path}: default SCMP_ACT_ERRNO, {len(names)} syscalls allowed:")
        self.say("   " + " ".join(names))
        self.expect("the profile allows mkdir", bool({"mkdir", "mkdirat"} & set(names)), "")
        self.expect("the profile does not allow symlink", not {"symlink", "symlinkat"} & set(names), "")

        self.step("3. Enforce it the way a runtime does (libseccomp in the child, right before exec)")
        same = self.syscribe_cmd(["run", "--profile", str(profile_path), "--", *WORKLOAD])
        self.expect("the workload still runs under its profile", same.returncode == 0, same.stdout.strip())
        other = self.syscribe_cmd(["run", "--profile", str(profile_path), "--", *OTHER])
        self.expect(
            "another command is denied (EPERM)",
            other.returncode != 0 and "Operation not permitted" in other.stderr,
            other.stderr.strip(),
        )

        self.step(f"4. Enforce it in a {self.runtime} container (busybox rootfs)")
        self.say(
            f"   {self.runtime} makes a few syscalls of its own after loading the filter; "
            "--for-runtime adds them."
        )
        for_runtime = self.syscribe_cmd(
            ["merge", "--for-runtime", self.runtime, "-o", str(container_profile_path), str(profile_path)]
        )
        if for_runtime.returncode != 0:
            self.expect(f"made the profile for {self.runtime}", False, for_runtime.stderr.strip())
            return self.report()
        rootfs = bundle.make_busybox_rootfs(self.workdir / "rootfs")
        seccomp = json.loads(container_profile_path.read_text())
        ran = self.container(rootfs, WORKLOAD, seccomp)
        self.expect(
            f"the workload runs in {self.runtime} under the profile", ran.returncode == 0, ran.stdout.strip()
        )
        denied = self.container(rootfs, OTHER, seccomp)
        self.expect(
            f"another command is denied in {self.runtime} (EPERM)",
            denied.returncode != 0 and "Operation not permitted" in denied.stdout + denied.stderr,
            (denied.stdout + denied.stderr).strip(),
        )
        return self.report()

    # -- helpers --------------------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.say("")
        self.say(f"== {title}")

    def syscribe_cmd(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.say(f"$ syscribe {shlex.join(args)}")
        result = subprocess.run(
            [*self.syscribe, *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
        self.show(result)
        return result

    def container(
        self, rootfs: Path, args: Sequence[str], seccomp: dict[str, object]
    ) -> subprocess.CompletedProcess[str]:
        container_id = f"syscribe-demo-{uuid.uuid4().hex[:12]}"
        target = self.workdir / f"bundle-{container_id}"
        bundle.make_bundle(target, rootfs, args, seccomp=seccomp, runtime=self.runtime)
        self.say(f"$ {self.runtime} run --bundle {target} {container_id}    # {shlex.join(args)}")
        try:
            result = bundle.run_container(target, container_id, runtime=self.runtime)
        finally:
            subprocess.run(
                [self.runtime, "delete", "--force", container_id], capture_output=True, check=False
            )
            shutil.rmtree(target, ignore_errors=True)
        self.show(result)
        return result

    def show(self, result: subprocess.CompletedProcess[str]) -> None:
        for line in (result.stdout + result.stderr).splitlines():
            self.say(f"   | {line}")
        self.say(f"   exit status {result.returncode}")

    def allowed_names(self, path: Path) -> list[str]:
        data = json.loads(path.read_text())
        return sorted(
            n for rule in data.get("syscalls", []) if rule.get("action") == "SCMP_ACT_ALLOW"
            for n in rule.get("names", [])
        )

    def expect(self, what: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(what, ok, detail))

    def report(self) -> bool:
        self.step("Result")
        for check in self.checks:
            self.say(f"   [{'ok' if check.ok else 'FAILED'}] {check.what}")
        ok = all(c.ok for c in self.checks)
        self.say("")
        verdict = "All as expected." if ok else "Something did not hold: see above, then `syscribe doctor`."
        self.say(f"   {verdict}")
        return ok


def default_workdir() -> Path:
    return Path(os.environ.get("SYSCRIBE_DEMO_DIR", "out/demo"))
