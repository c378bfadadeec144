"""The recorder on this machine, for real: both eBPF backends, the namespaced runner, compat syscalls.

Each test names what it needs with prereq.require; test programs are C compiled here with clang-14
(which `make setup` installs), so the syscalls they make are exactly the ones named below.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syscribe import arch as archmod
from syscribe.recorder import libbpf, open_tracer
from syscribe.recorder.base import RecorderError, Target, Tracer
from syscribe.recorder.bcc import BccTracer
from syscribe.recorder.coreobject import PROGRAMS, CoreTracer, load_object_bytes
from syscribe.recorder.names import NamedSyscalls, name_recording
from syscribe.recorder.workload import WorkloadResult, record_command, run_traced
from syscribe.usercommand import CommandError, CommandNotExecutableError, CommandNotFoundError
from tests.support.prereq import require

pytestmark = pytest.mark.real

BUSYBOX = "/bin/busybox"
BACKENDS = ("core", "bcc")
NEEDS = {"core": ("root", "ebpf", "busybox"), "bcc": ("root", "bcc", "tracefs", "busybox")}

# Each process and thread makes one syscall that nothing else in the workload makes:
#   main's thread: sysinfo; the forked child: getpriority; the child's thread: sched_getscheduler;
#   a busybox started by a shell that the grandchild execs: sync.
FAMILY_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

static void *main_thread(void *arg) { struct sysinfo si; syscall(SYS_sysinfo, &si); return arg; }
static void *child_thread(void *arg) { syscall(SYS_sched_getscheduler, 0); return arg; }

int main(void)
{
    pthread_t t;
    int st = 1;
    if (pthread_create(&t, NULL, main_thread, NULL) || pthread_join(t, NULL)) return 10;
    pid_t p = fork();
    if (p == 0) {
        syscall(SYS_getpriority, PRIO_PROCESS, 0);
        if (pthread_create(&t, NULL, child_thread, NULL) || pthread_join(t, NULL)) _exit(11);
        pid_t q = fork();
        if (q == 0) {
            execl("/bin/busybox", "busybox", "sh", "-c", "/bin/busybox sync; /bin/busybox true", (char *)0);
            _exit(12);
        }
        waitpid(q, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 13);
    }
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 14;
}
"""

# Makes the syscall numbered argv[1] forever; writes a byte to stdout every 1000 calls.
NOISE_C = r"""
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long nr = argc > 1 ? atol(argv[1]) : SYS_sysinfo;
    char buf[512];
    for (unsigned long i = 1;; i++) {
        syscall(nr, buf, 0, 0);
        if (i % 1000 == 0 && write(1, "x", 1) != 1) return 1;
    }
}
"""

# A 64-bit program making one 32-bit syscall: getpid through int $0x80 (i386 number 20, which is
# writev on x86_64). Exits 0 when the call returned its pid.
INT80_C = r"""
#include <unistd.h>
int main(void)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    return ret == getpid() ? 0 : 1;
}
"""

# Numbers that no table has, a negative one, and x32-flagged ones (ENOSYS here: no x32 ABI).
ODD_C = r"""
#include <sys/syscall.h>
#include <unistd.h>
int main(void)
{
    syscall(-1L);
    syscall(5000L);
    syscall(0x40000000L | 39);
    syscall(0x40000000L | 600);
    return 0;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require("clang")
    out = tmp_path_factory.mktemp("cprog")
    built = {}
    for name, source in {"family": FAMILY_C, "noise": NOISE_C, "int80": INT80_C, "odd": ODD_C}.items():
        src = out / f"{name}.c"
        src.write_text(source)
        subprocess.run(["clang-14", "-O2", "-pthread", "-o", str(out / name), str(src)], check=True)
        built[name] = out / name
    return built


def need(backend: str) -> None:
    require(*NEEDS[backend])


def record(argv: list[str], backend: str) -> tuple[WorkloadResult, NamedSyscalls]:
    result = record_command(argv, backend)
    return result, name_recording(result.recording)


@pytest.mark.parametrize("backend", BACKENDS)
def test_busybox_mkdir(backend: str, tmp_path: Path) -> None:
    need(backend)
    result, named = record([BUSYBOX, "mkdir", str(tmp_path / "d")], backend)
    assert result.exit_status == 0
    assert (tmp_path / "d").is_dir()
    assert result.recording.backend == backend
    assert {"mkdir", "mkdirat"} & named.names
    assert not {"symlink", "symlinkat"} & named.names
    assert "execve" in named.names and "exit_group" in named.names
    # Nothing of the runner's own handshake (it blocks in read before the tracer attaches and
    # makes no other syscall before its exec).
    assert not {"read", "wait4", "pipe2", "unshare", "mount", "setns"} & named.names
    assert set(named.by_arch) == {archmod.X86_64}
    assert not named.unknown
    assert result.recording.attach_seconds > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_process_and_thread_is_recorded(backend: str, programs: dict[str, Path]) -> None:
    need(backend)
    result, named = record([str(programs["family"])], backend)
    assert result.exit_status == 0
    assert {"sysinfo", "getpriority", "sched_getscheduler", "sync"} <= named.names
    assert {"clone", "clone3"} & named.names and "wait4" in named.names


@contextlib.contextmanager
def running(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def wait_for_calls(proc: subprocess.Popen[bytes], thousands: int) -> None:
    """Return once `proc` has made `thousands` thousand more calls from now on."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:  # forget what it reported before now
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)
    got = 0
    while got < thousands:
        chunk = os.read(fd, thousands - got)
        assert chunk, "the noise process stopped"
        got += len(chunk)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_from_outside_gets_in(backend: str, programs: dict[str, Path], tmp_path: Path) -> None:
    """The bcc header trap: a filter that reads 0 for every task would record the noise below."""
    need(backend)
    require("root")
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    sysinfo, getpriority = "99", "140"
    noise = str(programs["noise"])
    other_ns = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", noise, getpriority]
    with running([noise, sysinfo]) as host, running(other_ns) as other:
        wait_for_calls(host, 1)
        wait_for_calls(other, 1)
        tracer = open_tracer(backend)
        outcome: list[WorkloadResult] = []

        def release() -> None:
            # Opening the FIFO for writing returns once the workload has opened it, i.e. while it
            # is being recorded; then both noise processes make thousands of calls before it ends.
            with open(gate, "w") as fifo:
                wait_for_calls(host, 5)
                wait_for_calls(other, 5)
                fifo.write("go\n")

        t = threading.Thread(target=release)
        t.start()
        try:
            outcome.append(run_traced([BUSYBOX, "head", "-n", "1", str(gate)], tracer))
        finally:
            tracer.close()
            if t.is_alive():  # the workload never opened the gate: let the writer's open return
                with contextlib.suppress(OSError):
                    os.close(os.open(gate, os.O_RDONLY | os.O_NONBLOCK))
            t.join()
    result = outcome[0]
    named = name_recording(result.recording)
    assert result.exit_status == 0
    assert "read" in named.names and {"open", "openat"} & named.names
    assert "sysinfo" not in named.names
    assert "getpriority" not in named.names


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_noise_is_seen_when_its_namespace_is_the_target(backend: str, programs: dict[str, Path]) -> None:
    """Control for the test above: the same noise, recorded on purpose, does show up."""
    need(backend)
    with running([str(programs["noise"]), "99"]) as host:
        wait_for_calls(host, 1)
        tracer: Tracer = open_tracer(backend)
        try:
            tracer.attach(Target.of_pid(host.pid))
            wait_for_calls(host, 5)
            counts = tracer.snapshot().counts
        finally:
            tracer.close()
    assert counts.get((archmod.X86_64, 99), 0) >= 1000


def test_core_and_bcc_record_the_same_set(tmp_path: Path, programs: dict[str, Path]) -> None:
    need("core")
    need("bcc")
    script = (
        f"{BUSYBOX} mkdir -p {tmp_path}/d/e && {BUSYBOX} ls -la {tmp_path}/d > /dev/null && "
        f"{BUSYBOX} cat /proc/self/status > /dev/null && {BUSYBOX} rm -r {tmp_path}/d && "
        f"{programs['family']}"
    )
    results = {b: record([BUSYBOX, "sh", "-c", script], b) for b in BACKENDS}
    (core_result, core_named), (bcc_result, bcc_named) = results["core"], results["bcc"]
    assert core_result.exit_status == bcc_result.exit_status == 0
    assert dict(core_named.by_arch) == dict(bcc_named.by_arch)
    assert dict(core_named.unknown) == dict(bcc_named.unknown)
    assert len(core_named.names) > 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_int80_is_recorded_as_i386(backend: str, programs: dict[str, Path]) -> None:
    need(backend)
    require("btf")
    result, named = record([str(programs["int80"])], backend)
    assert result.exit_status == 0
    counts = result.recording.counts
    assert counts.get((archmod.I386, 20), 0) == 1
    assert (archmod.X86_64, 20) not in counts  # writev: the number read with the wrong table
    assert "getpid" in named.by_arch[archmod.I386]
    assert "writev" not in named.names
    assert not result.recording.warnings


def test_bcc_without_btf_warns_about_compat(programs: dict[str, Path]) -> None:
    need("bcc")
    tracer = BccTracer(btf_path=None)
    try:
        result = run_traced([str(programs["int80"])], tracer)
    finally:
        tracer.close()
    assert result.exit_status == 0
    assert any("32-bit" in w and "BTF" in w for w in result.recording.warnings)


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_numbers_are_kept(backend: str, programs: dict[str, Path]) -> None:
    need(backend)
    result, named = record([str(programs["odd"])], backend)
    assert result.exit_status == 0
    assert named.unknown[archmod.X86_64] == {-1, 5000}
    assert named.unknown[archmod.X32] == {600}
    assert named.by_arch[archmod.X32] == {"getpid"}
    assert "getpid" not in named.by_arch[archmod.X86_64]


def test_workload_is_pid_1_with_its_own_proc(tmp_path: Path) -> None:
    need("core")
    out = tmp_path / "out"
    script = f"echo $$ > {out}; {BUSYBOX} ls /proc >> {out}"
    result = record_command([BUSYBOX, "sh", "-c", script], "core")
    assert result.exit_status == 0
    lines = out.read_text().split()
    assert lines[0] == "1"
    pids = sorted(int(x) for x in lines[1:] if x.isdigit())
    assert pids[:1] == [1] and len(pids) <= 3  # sh, ls, maybe a zombie: not the host's processes


def test_mounts_do_not_leak_to_the_host(tmp_path: Path) -> None:
    need("core")
    target = tmp_path / "mnt"
    target.mkdir()
    argv = [BUSYBOX, "mount", "-t", "tmpfs", "syscribe-leak-test", str(target)]
    result = record_command(argv, "core")
    assert result.exit_status == 0
    assert "syscribe-leak-test" not in Path("/proc/self/mountinfo").read_text()
    assert not os.path.ismount(target)


def test_our_pid_namespace_for_children_is_restored() -> None:
    need("core")
    record_command([BUSYBOX, "true"], "core")
    assert os.readlink("/proc/self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")
    # And a plain child is still in our namespace.
    out = subprocess.run([BUSYBOX, "sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 1


@pytest.mark.parametrize(("script", "status"), [("exit 7", 7), ("exit 0", 0), ("exit 255", 255)])
def test_exit_status(script: str, status: int) -> None:
    need("core")
    assert record_command([BUSYBOX, "sh", "-c", script], "core").exit_status == status


def children_of(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            kids.update(int(x) for x in (task / "children").read_text().split())
    return kids


def exe_of(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


RECORD_SCRIPT = (
    "import sys; from syscribe.recorder.workload import record_command; "
    "print(record_command(sys.argv[1:], 'core').exit_status, flush=True)"
)


def signalled(argv: list[str], sig: int, ready: Path | None = None) -> int:
    """Record argv in a separate Python, send it `sig` once argv runs, return what it printed."""
    cmd = [sys.executable, "-c", RECORD_SCRIPT, *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3000):  # until the workload has exec'd (and, if asked, made its file)
            kids = children_of(proc.pid)
            execd = any(exe_of(k) == Path(BUSYBOX).resolve() for k in kids)
            if execd and (ready is None or ready.exists()):
                break
            time.sleep(0.01)
        else:
            pytest.fail("the workload never started")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, out
    return int(out.split()[-1])


def test_sigterm_kills_a_workload_without_handler() -> None:
    need("core")
    assert signalled([BUSYBOX, "sleep", "600"], signal.SIGTERM) == 128 + signal.SIGTERM


def test_sigint_kills_a_workload_without_handler() -> None:
    need("core")
    assert signalled([BUSYBOX, "sleep", "600"], signal.SIGINT) == 128 + signal.SIGINT


def test_sigterm_reaches_a_workload_handler(tmp_path: Path) -> None:
    need("core")
    ready = tmp_path / "ready"
    script = f"trap 'exit 7' TERM; {BUSYBOX} touch {ready}; while :; do {BUSYBOX} sleep 0.05; done"
    assert signalled([BUSYBOX, "sh", "-c", script], signal.SIGTERM, ready) == 7


class TestExecFailures:
    """Failures that only the child sees, reported over the close-on-exec pipe; nothing is left behind."""

    def run(self, argv: list[str]) -> CommandError:
        need("core")
        before = children_of(os.getpid())
        with pytest.raises(CommandError) as info:
            record_command(argv, "core")
        assert children_of(os.getpid()) == before
        message = str(info.value)
        assert "\n" not in message
        return info.value

    def test_interpreter_missing(self, tmp_path: Path) -> None:
        script = tmp_path / "script"
        script.write_text("#!/nonexistent/interpreter\n")
        script.chmod(0o755)
        err = self.run([str(script)])
        assert isinstance(err, CommandNotFoundError)
        assert err.command == str(script) and str(script) in str(err)

    def test_not_a_program(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk"
        junk.write_bytes(b"\x7fELF" + os.urandom(200))
        junk.chmod(0o755)
        err = self.run([str(junk)])
        assert isinstance(err, CommandNotExecutableError)
        assert str(junk) in str(err)

    def test_argument_list_too_long(self) -> None:
        err = self.run([BUSYBOX, "true", "x" * (256 * 1024)])
        assert "too long" in str(err)


class TestCoreLoader:
    """The libbpf binding's failures, on the real library and kernel."""

    def attach_bytes(self, data: bytes) -> RecorderError:
        need("core")
        tracer = CoreTracer(object_bytes=data)
        try:
            with pytest.raises(RecorderError) as info:
                tracer.attach(Target.of_pid(os.getpid()))
        finally:
            tracer.close()
        one_line = str(info.value)
        assert "\n" not in one_line
        return info.value

    @pytest.mark.parametrize(
        "data", [b"", b"garbage", b"\x7fELF" + b"\0" * 60, os.urandom(1 << 20), b"\x7fELF" * (1 << 22)]
    )
    def test_hostile_objects(self, data: bytes) -> None:
        assert "opening the eBPF object failed" in str(self.attach_bytes(data))

    def test_truncated_object(self) -> None:
        whole = load_object_bytes()
        err = self.attach_bytes(whole[: len(whole) // 2])
        assert "failed" in str(err) and "libbpf:" in str(err)

    def test_lifecycle(self) -> None:
        need("core")
        tracer = CoreTracer()
        with pytest.raises(RecorderError, match="not attached"):
            tracer.snapshot()
        tracer.attach(Target.of_pid(os.getpid()))
        try:
            with pytest.raises(RecorderError, match="already attached"):
                tracer.attach(Target.of_pid(os.getpid()))
            first = tracer.snapshot().counts
            os.getppid()
            second = tracer.snapshot().counts
            assert second[(archmod.X86_64, 110)] > first.get((archmod.X86_64, 110), 0)  # getppid
        finally:
            tracer.close()
        tracer.close()  # idempotent
        with pytest.raises(RecorderError, match="not attached"):
            tracer.snapshot()

    def test_btf_member_offsets(self) -> None:
        require("root", "btf", "libbpf")
        assert libbpf.member_offset("task_struct", "thread_info.status") == 16
        assert libbpf.member_offset("task_struct", "no_such_member") is None
        assert libbpf.member_offset("no_such_struct_xyz", "a") is None
        assert libbpf.member_offset("task_struct", "thread_info.status.deeper") is None

    def test_missing_libbpf(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(libbpf, "LIBBPF_SONAME", "libbpf-syscribe-missing.so.9")
        libbpf.lib.cache_clear()
        try:
            with pytest.raises(RecorderError) as info:
                libbpf.lib()
            assert "apt-get install libbpf1" in str(info.value)
        finally:
            monkeypatch.undo()
            libbpf.lib.cache_clear()


def test_both_core_programs_record_the_same(programs: dict[str, Path]) -> None:
    """The fallback program for kernels before 5.11 (probe reads) against the default one (BTF task)."""
    need("core")
    named = {}
    for program in PROGRAMS:
        tracer = CoreTracer(program=program)
        try:
            result = run_traced([BUSYBOX, "sh", "-c", f"{programs['family']} && {programs['int80']}"], tracer)
        finally:
            tracer.close()
        assert tracer.program == program
        assert result.exit_status == 0
        named[program] = name_recording(result.recording)
    best, fallback = (named[p] for p in PROGRAMS)
    assert dict(best.by_arch) == dict(fallback.by_arch)
    assert "getpid" in best.by_arch[archmod.I386] and "sync" in best.names


def test_default_core_program_loads_here() -> None:
    need("core")
    tracer = CoreTracer()
    try:
        tracer.attach(Target.of_pid(os.getpid()))
        assert tracer.program == PROGRAMS[0]
    finally:
        tracer.close()
    with pytest.raises(RecorderError, match="unknown eBPF program"):
        CoreTracer(program="nope")


def test_auto_picks_core_here() -> None:
    need("core")
    assert open_tracer("auto").name == "core"
