"""What a node needs for syscribe, as data: one Check per need, each a small probe that says what it
found or what to install or mount. `syscribe doctor` only prints these.

Probes read the system through an `Env` (a root directory, normally `/`) so that tests can point
them at a made-up tree; the parsers of what they read are pure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
NETLINK_AUDIT = 9
BACKENDS = ("core", "bcc")


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    detail: str  # what was found, or what to do


@dataclass(frozen=True, slots=True)
class Env:
    root: Path = Path("/")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str, limit: int = 1 << 16) -> str | None:
        try:
            with self.path(absolute).open("rb") as f:
                return f.read(limit).decode(errors="replace")
        except OSError:
            return None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    needed_by: frozenset[
        str
    ]  # recorder backends that cannot run without it ("core", "bcc"); else informative
    purpose: str
    probe: Callable[[Env], Result]

    @property
    def required(self) -> bool:
        return bool(self.needed_by)


# ---------------------------------------------------------------------------------------------------
# Pure parsers


def parse_cap_eff(status: str) -> int | None:
    """The effective capability mask from /proc/<pid>/status, or None when it is not there."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            try:
                mask = int(value.strip(), 16)
            except ValueError:
                return None
            return mask if 0 <= mask < (1 << 64) else None
    return None


def parse_lockdown(text: str) -> str | None:
    """The active mode of /sys/kernel/security/lockdown ("[none] integrity confidentiality")."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]") and len(word) > 2:
            return word[1:-1]
    return None


def parse_actions(text: str) -> frozenset[str]:
    return frozenset(text.split())


def ready_backends(results: Iterable[tuple[Check, Result]]) -> list[str]:
    """The recorder backends whose every need holds."""
    pairs = list(results)
    return [
        backend
        for backend in BACKENDS
        if all(result.ok for check, result in pairs if backend in check.needed_by)
    ]


# ---------------------------------------------------------------------------------------------------
# Probes


def _root(env: Env) -> Result:
    uid = os.geteuid()
    return Result(True, "uid 0") if uid == 0 else Result(False, f"uid {uid}: run syscribe as root")


def _capabilities(env: Env) -> Result:
    status = env.read("/proc/self/status")
    mask = parse_cap_eff(status or "")
    if mask is None:
        return Result(False, "cannot read CapEff from /proc/self/status; is /proc mounted?")
    wanted = {"CAP_SYS_ADMIN": CAP_SYS_ADMIN, "CAP_BPF": CAP_BPF, "CAP_PERFMON": CAP_PERFMON}
    missing = [name for name, bit in wanted.items() if not mask >> bit & 1]
    if missing:
        return Result(
            False,
            f"missing {', '.join(missing)}: run as root in the host's user namespace "
            "(a container needs --privileged or these capabilities)",
        )
    return Result(True, " ".join(wanted))


def _btf(env: Env) -> Result:
    if env.path("/sys/kernel/btf/vmlinux").exists():
        return Result(True, "/sys/kernel/btf/vmlinux")
    return Result(
        False, "no /sys/kernel/btf/vmlinux: the kernel lacks CONFIG_DEBUG_INFO_BTF; use --backend bcc"
    )


def _tracefs(env: Env) -> Result:
    for base in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            env.path(f"{base}/events/raw_syscalls/sys_enter").stat()
        except PermissionError:
            return Result(False, f"cannot look into {base} (permission denied): run as root")
        except OSError:
            continue
        return Result(True, f"{base} (raw_syscalls:sys_enter)")
    return Result(
        False,
        "tracefs not mounted or no raw_syscalls tracepoint: mount -t tracefs tracefs /sys/kernel/tracing",
    )


def _libbpf(env: Env) -> Result:
    try:
        lib = ctypes.CDLL("libbpf.so.1")
    except OSError:
        return Result(False, "libbpf.so.1 does not load: apt-get install libbpf1")
    try:
        major, minor = lib.libbpf_major_version(), lib.libbpf_minor_version()
    except AttributeError:
        return Result(True, "libbpf.so.1")
    return Result(True, f"libbpf {major}.{minor}")


def _bpf_object(env: Env) -> Result:
    try:
        obj = resources.files("syscribe.bpf").joinpath("recorder.bpf.o")
        if obj.is_file():
            return Result(True, "syscribe.bpf/recorder.bpf.o")
    except (ModuleNotFoundError, OSError):
        pass
    return Result(False, "the CO-RE object recorder.bpf.o is not installed: reinstall syscribe (or make bpf)")


def _bcc(env: Env) -> Result:
    try:
        import bcc
    except Exception:  # bcc's import fails in several ways when its shared library is missing
        return Result(
            False,
            "bcc is not importable: apt-get install python3-bpfcc (and a venv with --system-site-packages)",
        )
    return Result(True, f"bcc {getattr(bcc, '__version__', '')}".strip())


def _headers(env: Env) -> Result:
    build = f"/lib/modules/{os.uname().release}/build"
    if env.path(build).exists():
        return Result(True, build)
    return Result(
        False, f"no kernel headers at {build}: apt-get install linux-headers-amd64 and link it there"
    )


def _libseccomp(env: Env) -> Result:
    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        from syscribe import seccomp

        return Result(True, f"libseccomp {seccomp.version()} ({path})")
    except Exception:  # SeccompError, or a library too old to have seccomp_version
        return Result(False, "libseccomp does not load: apt-get install libseccomp2")


def _lockdown(env: Env) -> Result:
    text = env.read("/sys/kernel/security/lockdown")
    if text is None:
        if not env.path("/sys/kernel/security/lockdown").exists():
            return Result(True, "no lockdown file (securityfs not mounted or no lockdown LSM); assuming none")
        return Result(False, "cannot read /sys/kernel/security/lockdown")
    mode = parse_lockdown(text)
    if mode is None:
        return Result(False, f"unreadable lockdown state {text.strip()[:60]!r}")
    if mode == "confidentiality":
        return Result(
            False,
            "kernel lockdown=confidentiality forbids eBPF from reading kernel memory; boot with "
            "lockdown=integrity or none",
        )
    return Result(True, f"lockdown={mode}")


def _seccomp(env: Env) -> Result:
    text = env.read("/proc/sys/kernel/seccomp/actions_avail")
    if text is None:
        return Result(
            False, "no /proc/sys/kernel/seccomp/actions_avail: the kernel lacks CONFIG_SECCOMP_FILTER"
        )
    actions = parse_actions(text)
    missing = sorted({"allow", "errno", "log"} - actions)
    if missing:
        return Result(
            False, f"the kernel's seccomp lacks {', '.join(missing)} (it has {' '.join(sorted(actions))})"
        )
    return Result(True, "actions: " + " ".join(sorted(actions)))


def _audit(env: Env) -> Result:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    except OSError as exc:
        if exc.errno == errno.EPROTONOSUPPORT:
            return Result(False, "the kernel has no audit (CONFIG_AUDIT); the enricher cannot see denials")
        return Result(False, f"cannot open an audit socket: {exc.strerror}")
    sock.close()
    daemon = shutil.which("auditd")
    extra = f", auditd at {daemon}" if daemon else ", no auditd (apt-get install auditd for audit.log)"
    return Result(True, "kernel audit" + extra)


def _runtime(env: Env) -> Result:
    found = [f"{name} ({path})" for name in ("runc", "crun") if (path := shutil.which(name))]
    if not found:
        return Result(False, "no OCI runtime on PATH: apt-get install runc (or crun)")
    return Result(True, ", ".join(found))


CHECKS: tuple[Check, ...] = (
    Check("root", frozenset(BACKENDS), "the recorder loads eBPF programs", _root),
    Check("capabilities", frozenset(BACKENDS), "eBPF and namespaces", _capabilities),
    Check("btf", frozenset({"core"}), "CO-RE relocations of the core backend", _btf),
    Check("tracefs", frozenset(BACKENDS), "the raw_syscalls tracepoint", _tracefs),
    Check("libbpf", frozenset({"core"}), "loading the core backend", _libbpf),
    Check("bpf-object", frozenset({"core"}), "the core backend's compiled program", _bpf_object),
    Check("bcc", frozenset({"bcc"}), "the bcc backend", _bcc),
    Check("kernel-headers", frozenset({"bcc"}), "bcc compiles against them", _headers),
    Check("libseccomp", frozenset(BACKENDS), "syscall names and `syscribe run`", _libseccomp),
    Check("lockdown", frozenset(BACKENDS), "eBPF reads of kernel memory", _lockdown),
    Check("seccomp", frozenset(), "enforcing profiles", _seccomp),
    Check("audit", frozenset(), "the enricher's denial records", _audit),
    Check("oci-runtime", frozenset(), "containers and the hook", _runtime),
)


def run_checks(checks: Sequence[Check] = CHECKS, env: Env | None = None) -> list[tuple[Check, Result]]:
    env = env or Env()
    out: list[tuple[Check, Result]] = []
    for check in checks:
        try:
            result = check.probe(env)
        except Exception as exc:  # a probe that breaks is a finding, not a crash of the doctor
            result = Result(False, f"the check itself failed: {exc}")
        out.append((check, result))
    return out
