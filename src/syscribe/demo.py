"""The built-in example that `make run` shows: record a busybox workload, read the profile, enforce it
with `syscribe run` and in a runc container, and show that the workload runs and another command does
not. Then the mission end to end: install the hook (`syscribe install-hook`), record a podman container
through the hooks.d file (the hooks library CRI-O uses) with the annotations CRI-O would give it,
enforce the recorded profile, trigger a denial, and show it as `syscribe enrich` writes it, with the
pod, namespace and container the annotations named. Every step runs the real command, printed before
it runs, so the output doubles as a tutorial."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from syscribe import annotations as keys
from syscribe import bundle

# A workload that does a little of everything a real one does: files, directories, a pipe, children.
WORKLOAD_SCRIPT = (
    "mkdir -p /tmp/syscribe-demo && echo hello > /tmp/syscribe-demo/greeting"
    " && cat /tmp/syscribe-demo/greeting | tr a-z A-Z && ls /tmp/syscribe-demo && rm -r /tmp/syscribe-demo"
)
WORKLOAD = ("/bin/busybox", "sh", "-c", WORKLOAD_SCRIPT)
# Something the workload never does: a symlink.
OTHER = ("/bin/busybox", "ln", "-s", "/tmp", "/tmp/syscribe-demo-link")

# The pod the podman container stands in for: the annotations CRI-O gives a container of pod shop/web
# (enricher/runtimestate.py reads them back), and the per-container recording key.
POD = {"namespace": "shop", "pod": "web", "container": "app"}
POD_ANNOTATIONS = {
    keys.POD_NAME: POD["pod"],
    keys.POD_NAMESPACE: POD["namespace"],
    keys.POD_UID: "5b0c3a52-7d0e-4c1e-9c55-0d3f1f0e2a10",
    keys.CONTAINER_NAME: POD["container"],
}
PODMAN = ("podman", "--cgroup-manager=cgroupfs")
PODMAN_RUN = ("--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# Hang guards, not expectations: each wait ends as soon as its thing happens.
DUMP_SECONDS = 60.0
ENRICH_SECONDS = 60.0
DENIAL_SECONDS = 15.0
DENIAL_TRIES = 4


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


class Demo:
    def __init__(
        self, workdir: Path, runtime: str, backend: str, say: Callable[[str], None], *, hook: bool = True
    ) -> None:
        self.workdir = workdir
        self.runtime = runtime
        self.backend = backend
        self.say = say
        self.hook = hook
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
        if self.hook:
            self.through_the_hook(rootfs)
        return self.report()

    # -- the hook, podman, the enricher ---------------------------------------------------------

    def through_the_hook(self, rootfs: Path) -> None:
        work = self.workdir.absolute()
        hooks_dir, config_dir, profiles = work / "hooks.d", work / "etc", work / "profiles"
        install = ["install-hook", "--hooks-dir", str(hooks_dir), "--config-dir", str(config_dir),
                   "--output-root", str(profiles)]
        self.step("5. Install the hook (for this demo, in the work directory)")
        self.say("   A config of its own first (install-hook keeps an existing one): the demo's output root,")
        self.say("   its own log, onFailure fail, and the tracer left in this shell's cgroup.")
        config_dir.mkdir(parents=True, exist_ok=True)
        log = work / "hook.log"
        log.unlink(missing_ok=True)
        (config_dir / "hook.json").write_text(json.dumps({
            "outputRoots": [str(profiles)], "inputRoots": [str(profiles)], "logFile": str(log),
            "onFailure": "fail", "tracerCgroup": None,
        }, indent=2) + "\n")
        installed = self.syscribe_cmd(install)
        self.expect("install-hook wrote the hooks.d file", installed.returncode == 0,
                    installed.stderr.strip())
        if installed.returncode != 0:
            return
        try:
            self.record_enforce_enrich(rootfs, hooks_dir, profiles, log)
        finally:
            self.step("9. Uninstall what install-hook wrote")
            self.syscribe_cmd([*install, "--uninstall"])

    def record_enforce_enrich(self, rootfs: Path, hooks_dir: Path, profiles: Path, log: Path) -> None:
        out = profiles / POD["namespace"] / f"{POD['pod']}-{POD['container']}.json"
        key = f"{keys.TRACE_SYSCALL}/{POD['container']}"
        self.step("6. Record a podman container through the hooks.d file (CRI-O's hooks library reads it)")
        self.say("   The container carries the annotations CRI-O would give container app of pod shop/web.")
        labels = {**POD_ANNOTATIONS, key: f"of:{out}"}
        ran = self.podman(["--hooks-dir", str(hooks_dir)], labels, rootfs, WORKLOAD)
        ok = ran.returncode == 0 and self.wait_for_dump(out)
        for logged in log.read_text().splitlines() if log.exists() else []:
            self.say(f"   hook.log | {logged}")
        self.expect("the hook recorded the podman container", ok, ran.stderr.strip())
        if not ok:
            return
        names = self.allowed_names(out)
        meta_name = out.name.removesuffix(".json") + ".meta.json"
        self.say(f"   {out}: {len(names)} syscalls allowed; {meta_name} beside it")

        self.step("7. Enforce the recorded profile in podman, logging what it denies")
        self.say("   SECCOMP_FILTER_FLAG_LOG makes the kernel write an audit record for each EPERM;")
        self.say("   `syscribe enrich --source netlink` reads them from the kernel itself (no auditd).")
        enforced = self.workdir.absolute() / "web-app-enforced.json"
        enforced.write_text(json.dumps({**json.loads(out.read_text()), "flags": ["SECCOMP_FILTER_FLAG_LOG"]}))
        denials = self.workdir.absolute() / "denials.json"
        denials.unlink(missing_ok=True)
        with self.enricher(denials) as started:
            if not started:
                self.expect("syscribe enrich started", False, "see above")
                return
            seccomp = ["--security-opt", f"seccomp={enforced}"]
            same = self.podman((), POD_ANNOTATIONS, rootfs, WORKLOAD, run_options=seccomp)
            self.expect("the workload runs in podman under its recorded profile", same.returncode == 0,
                        same.stderr.strip())
            other = self.podman((), POD_ANNOTATIONS, rootfs, OTHER, run_options=seccomp)
            self.expect("another command is denied in podman (EPERM)",
                        other.returncode != 0 and "Operation not permitted" in other.stdout + other.stderr,
                        (other.stdout + other.stderr).strip())
            self.step("8. The denial, as `syscribe enrich` writes it")
            line = self.wait_for_denial(denials, DENIAL_SECONDS)
            # The denied process is gone within a millisecond; on a busy node its record can reach the
            # enricher after the process left no trace to place it by. Denied again, it is named.
            for _ in range(DENIAL_TRIES - 1):
                if line is not None:
                    break
                self.say("   (not placed in its pod yet: denying it once more)")
                self.podman((), POD_ANNOTATIONS, rootfs, OTHER, run_options=seccomp)
                line = self.wait_for_denial(denials, DENIAL_SECONDS)
        if line is None:
            self.expect("syscribe enrich named the pod of the denial", False, f"nothing in {denials}")
            return
        self.say(f"   {denials}:")
        self.say("   " + json.dumps(line))
        self.say(f"   pod {line.get('pod')} in namespace {line.get('namespace')}, container "
                 f"{line.get('container')}, was denied syscall {line.get('syscallName')}")
        named = (line.get("namespace"), line.get("pod"), line.get("container"))
        self.expect("syscribe enrich named the pod, namespace and container of the denial",
                    named == (POD["namespace"], POD["pod"], POD["container"]), json.dumps(line))

    def podman(
        self,
        options: Sequence[str],
        annotations: Mapping[str, str],
        rootfs: Path,
        args: Sequence[str],
        *,
        run_options: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        # crun: runc 1.1.5 refuses seccomp flags, and the denial is only logged with one.
        cmd = [*PODMAN, *options, "run", "--runtime", "crun", *PODMAN_RUN, *run_options]
        for k, v in annotations.items():
            cmd += ["--annotation", f"{k}={v}"]
        cmd += ["--rootfs", str(rootfs.absolute()), *args]
        self.say(f"$ {shlex.join(cmd)}")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120,
                                stdin=subprocess.DEVNULL)
        self.show(result)
        return result

    def wait_for_dump(self, out: Path) -> bool:
        """The tracer writes once the container has exited: the profile, then the metadata naming its
        SHA-256 (the readers' rule, docs/hook.md)."""
        from syscribe.hooks.output import dump_complete

        meta = out.with_name(out.name.removesuffix(".json") + ".meta.json")
        deadline = time.monotonic() + DUMP_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if dump_complete(out.read_bytes(), json.loads(meta.read_text())):
                    return True
            time.sleep(0.02)
        return False

    @contextlib.contextmanager
    def enricher(self, output: Path) -> Iterator[bool]:
        ready = output.with_suffix(".prom")
        ready.unlink(missing_ok=True)
        args = ["enrich", "--source", "netlink", "--output", str(output), "--metrics-textfile", str(ready),
                "--hold-seconds", "0.1", "--quiet"]
        self.say(f"$ syscribe {shlex.join(args)} &")
        proc = subprocess.Popen([*self.syscribe, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # The metrics file appears once the netlink socket is open.
            deadline = time.monotonic() + ENRICH_SECONDS
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            yield ready.exists() and proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            for text in err.splitlines()[-3:]:
                self.say(f"   enrich | {text}")
            ready.unlink(missing_ok=True)

    def wait_for_denial(self, denials: Path, seconds: float) -> dict[str, object] | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for raw in denials.read_text().splitlines():
                    with contextlib.suppress(ValueError):
                        line = json.loads(raw)
                        if line.get("syscallName") in ("symlink", "symlinkat") and line.get("pod"):
                            return dict(line)
            time.sleep(0.05)
        return None

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
