"""The installed hook against hostile input: bad annotations, paths outside the roots or through
symlinks, garbage states, a tracer that cannot attach, a container that is already gone.

Each case runs the real `syscribe-hook` command with a state on stdin, as a runtime would, and checks
the exit status per the configured policy, one clear line on stderr and in the log, and that nothing
was written. The target process, where one is needed, is a real process in a mount namespace of its
own (`unshare --mount sleep`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syscribe.hooks.annotation import CONTAINER_NAME_KEY, CONTAINER_TYPE_KEY, KEY
from syscribe.hooks.state import MAX_STATE_BYTES
from tests.support.prereq import require
from tests.test_hook_real import HookEnv, new_env

pytestmark = pytest.mark.real


@pytest.fixture
def hookenv(tmp_path: Path) -> Iterator[HookEnv]:
    env = new_env(tmp_path)
    try:
        yield env
    finally:
        env.kill_tracers()


@pytest.fixture(scope="module")
def sleeper() -> Iterator[int]:
    """A process in a mount namespace of its own, standing in for a container's init."""
    require("root")
    proc = subprocess.Popen(["unshare", "--mount", "sleep", "3600"])
    try:
        # unshare execs sleep in the new namespace; wait until it has.
        own = os.stat("/proc/self/ns/mnt").st_ino
        while os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino == own or \
                Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":
            os.sched_yield()
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def state(pid: object, annotations: object = None, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ociVersion": "1.0.2", "id": "hostile-test", "status": "creating", "pid": pid,
        "bundle": "/nonexistent", "annotations": annotations or {},
    }
    doc.update(changes)
    return doc


def check_refused(
    env: HookEnv, result: subprocess.CompletedProcess[str], *needles: str, closed: bool
) -> None:
    assert result.returncode == (1 if closed else 0), result.stderr
    err = result.stderr.strip().splitlines()
    assert len(err) == 1, result.stderr
    for needle in needles:
        assert needle in err[0], err[0]
    assert "Traceback" not in result.stderr
    assert ("not started" if closed else "starts unrecorded") in err[0]
    logged = env.lines()
    assert len(logged) == 1 and logged[0] == err[0]
    assert env.written() == []


BAD_VALUES = [
    ("if:/in.json", "missing of:"),
    ("of:relative.json", "relative"),
    ("xx:/a.json", "unknown prefix"),
    ("of:/a.json;;if:/b.json", "semicolons"),
    ("of:/a.json;of:/b.json", "given twice"),
    ("of:", "empty path"),
    ("of:/a\x00.json", "control character"),
    ("of:/a.json\n", "control character"),
    ("of:/a\x9b31m.json", "control character"),
    ("of:/r/../../etc/passwd", "'..' component"),
    ("of:/" + "a" * 10_000, "longer than any valid"),
    ("of:/" + "/".join(["d" * 200] * 25), "PATH_MAX"),
    ("of:/r/" + "n" * 246 + ".json", "would be 256 bytes, over NAME_MAX"),  # a 251-byte name
    ("of:/r/" + "n" * 255, "would be 265 bytes, over NAME_MAX"),
]


@pytest.mark.parametrize(("value", "problem"), BAD_VALUES, ids=[p for _, p in BAD_VALUES])
@pytest.mark.parametrize("policy", ["fail", "start"])
def test_annotation_errors(hookenv: HookEnv, value: str, problem: str, policy: str) -> None:
    require("root")
    hookenv.configure(onFailure=policy)
    result = hookenv.run_hook(state(os.getpid(), {KEY: value}))
    check_refused(hookenv, result, problem, f"annotation '{KEY}'", closed=policy == "fail")


def test_output_outside_the_roots(hookenv: HookEnv, sleeper: int) -> None:
    for target in ("/etc/cron.d/evil.json", f"{hookenv.root}-sibling/x.json", str(hookenv.root)):
        hookenv.log.unlink(missing_ok=True)
        result = hookenv.run_hook(state(sleeper, {KEY: f"of:{target}"}))
        check_refused(hookenv, result, "not under an allowed directory", closed=True)
    assert not Path("/etc/cron.d/evil.json").exists()


def test_symlink_at_the_root(hookenv: HookEnv, sleeper: int, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    linked = tmp_path / "linked-root"
    linked.symlink_to(real)
    hookenv.configure(outputRoots=[str(linked)])
    result = hookenv.run_hook(state(sleeper, {KEY: f"of:{linked}/p.json"}))
    check_refused(hookenv, result, "is a symlink", closed=True)
    assert list(real.iterdir()) == []


@pytest.mark.parametrize("depth", ["first", "middle"])
def test_symlink_below_the_root(hookenv: HookEnv, sleeper: int, tmp_path: Path, depth: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if depth == "first":
        (hookenv.root / "ns").symlink_to(elsewhere)
    else:
        (hookenv.root / "ns").mkdir()
        (hookenv.root / "ns" / "pod").symlink_to(elsewhere)
    result = hookenv.run_hook(state(sleeper, {KEY: f"of:{hookenv.root}/ns/pod/p.json"}))
    assert result.returncode == 1
    assert "is a symlink or not a directory" in result.stderr
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("name", ["p.json", "p.meta.json"])
def test_symlink_at_the_file_to_etc_passwd(hookenv: HookEnv, sleeper: int, name: str) -> None:
    before = Path("/etc/passwd").read_bytes()
    (hookenv.root / name).symlink_to("/etc/passwd")
    result = hookenv.run_hook(state(sleeper, {KEY: f"of:{hookenv.root}/p.json"}))
    assert result.returncode == 1 and "is a symlink" in result.stderr
    assert Path("/etc/passwd").read_bytes() == before
    assert (hookenv.root / name).is_symlink()


def test_input_profile_problems(hookenv: HookEnv, sleeper: int, tmp_path: Path) -> None:
    cases = {
        "missing": (tmp_path / "absent.json", "No such file"),
        "garbage": (tmp_path / "garbage.json", "not valid JSON"),
        "fifo": (tmp_path / "fifo.json", "not a regular file"),
        "symlink": (tmp_path / "link.json", "is a symlink"),
    }
    cases["garbage"][0].write_text("{not json")
    os.mkfifo(cases["fifo"][0])
    cases["symlink"][0].symlink_to("/etc/passwd")
    for path, message in cases.values():
        hookenv.log.unlink(missing_ok=True)
        result = hookenv.run_hook(state(sleeper, {KEY: f"if:{path};of:{hookenv.root}/p.json"}))
        check_refused(hookenv, result, message, closed=True)
    hookenv.configure(inputRoots=["/usr/share/containers"])
    hookenv.log.unlink(missing_ok=True)
    result = hookenv.run_hook(state(sleeper, {KEY: f"if:/etc/shadow;of:{hookenv.root}/p.json"}))
    check_refused(hookenv, result, "inputRoots", closed=True)


GARBAGE_STATES = [
    (b"", "no container state"),
    (b"garbage", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b"{" * 200_000, "not valid JSON|nested too deeply"),
    (json.dumps(state("1")).encode(), "pid is a string"),
    (json.dumps(state(1, [KEY])).encode(), "annotations are an array"),
    (json.dumps(state(1, status="running")).encode(), "runs at prestart"),
    (b" " * (MAX_STATE_BYTES + 1), "more than 1048576"),
    (b"x" * (8 * MAX_STATE_BYTES), "more than 1048576"),
]


@pytest.mark.parametrize(("data", "problem"), GARBAGE_STATES, ids=[p for _, p in GARBAGE_STATES])
def test_garbage_states(hookenv: HookEnv, data: bytes, problem: str) -> None:
    require("root")
    result = hookenv.run_hook(data)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert any(p in result.stderr for p in problem.split("|")), result.stderr
    assert hookenv.written() == []


def test_no_annotation_costs_no_config_read(hookenv: HookEnv) -> None:
    require("root")
    # An explicitly named config that does not exist would be an error, if it were read.
    missing = ["--config", str(hookenv.tmp / "absent.json")]
    for labels in ({}, {"other": "x"}, {f"{KEY}/web": "of:/x.json", CONTAINER_NAME_KEY: "db"}):
        result = hookenv.run_hook(state(os.getpid(), labels), *missing)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # The pod-wide key on a CRI-O sandbox container: not recorded, not even looked at.
    sandbox = {KEY: "garbage", CONTAINER_TYPE_KEY: "sandbox", CONTAINER_NAME_KEY: "POD"}
    assert hookenv.run_hook(state(os.getpid(), sandbox), *missing).returncode == 0
    assert hookenv.lines() == []


def test_broken_config_fails_closed(hookenv: HookEnv) -> None:
    require("root")
    hookenv.config_path.write_text('{"outputRoot": ["/tmp"]}')
    result = hookenv.run_hook(state(os.getpid(), {KEY: "of:/tmp/x.json"}))
    assert result.returncode == 1
    assert "unknown key 'outputRoot'" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("policy", ["fail", "start"])
def test_tracer_that_cannot_attach(hookenv: HookEnv, sleeper: int, policy: str) -> None:
    require("root", "ebpf")
    hookenv.configure(backend="bogus", onFailure=policy)
    result = hookenv.run_hook(state(sleeper, {KEY: f"of:{hookenv.root}/p.json"}))
    check_refused(hookenv, result, "cannot attach the tracer", "unknown recorder backend 'bogus'",
                  closed=policy == "fail")


def test_timeout_stops_the_tracer(hookenv: HookEnv, sleeper: int) -> None:
    require("root", "ebpf")
    hookenv.configure(timeoutSeconds=0.001)
    result = hookenv.run_hook(state(sleeper, {KEY: f"of:{hookenv.root}/p.json"}))
    # Stopped, or (the checks before it took the whole 1 ms) never started.
    check_refused(hookenv, result, "did not attach within 0.001 s", closed=True)


def valid_profile(names: int) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": [f"n{i}" for i in range(names)], "action": "SCMP_ACT_ERRNO"}]}


def test_a_big_input_profile_is_refused_before_the_start(hookenv: HookEnv, sleeper: int) -> None:
    """`if:` is read and parsed before the container starts; a 55 MB one once held a start 11 s at
    664 MB. Over 1 MiB is refused (with the size and the limit), before any tracer starts."""
    big = hookenv.tmp / "big.json"
    big.write_text(json.dumps(valid_profile(200_000)))
    assert 1 << 20 < big.stat().st_size < 64 << 20
    result = hookenv.run_hook(state(sleeper, {KEY: f"if:{big};of:{hookenv.root}/p.json"}))
    check_refused(hookenv, result, f"is {big.stat().st_size} bytes; at most 1048576", closed=True)
    assert "tracer" not in result.stderr
    sparse = hookenv.tmp / "sparse.json"
    with sparse.open("wb") as f:
        f.truncate(55 * 1000 * 1000)
    hookenv.log.unlink()
    result = hookenv.run_hook(state(sleeper, {KEY: f"if:{sparse};of:{hookenv.root}/p.json"}))
    check_refused(hookenv, result, "is 55000000 bytes; at most 1048576", closed=True)


def test_the_timeout_counts_from_the_hooks_start(hookenv: HookEnv, sleeper: int) -> None:
    """Everything before the container starts stays within timeoutSeconds: when the checks (here the
    `if:` read and parse) have used it up, no tracer is started at all."""
    base = hookenv.tmp / "base.json"
    base.write_text(json.dumps(valid_profile(30_000)))  # under the limit, well over 1 ms to parse
    hookenv.configure(timeoutSeconds=0.001)
    result = hookenv.run_hook(state(sleeper, {KEY: f"if:{base};of:{hookenv.root}/p.json"}))
    check_refused(hookenv, result, "did not attach within 0.001 s", "before it", "not started", closed=True)
    assert "tracer pid" not in result.stderr and "(pid " not in result.stderr


def test_container_process_already_gone(hookenv: HookEnv) -> None:
    require("root")
    proc = subprocess.Popen(["true"])
    proc.wait()  # exited and reaped: the pid names nothing (or, rarely, something else)
    result = hookenv.run_hook(state(proc.pid, {KEY: f"of:{hookenv.root}/p.json"}))
    assert result.returncode == 1 and hookenv.written() == []
    assert any(w in result.stderr for w in ("is gone", "exited before", "host's mount namespace"))


def test_container_process_exited_but_not_reaped(hookenv: HookEnv) -> None:
    require("root")
    proc = subprocess.Popen(["unshare", "--mount", "true"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie: the pid is still its own
    try:
        result = hookenv.run_hook(state(proc.pid, {KEY: f"of:{hookenv.root}/p.json"}))
    finally:
        proc.wait()
    assert result.returncode == 1 and hookenv.written() == []
    assert any(w in result.stderr for w in ("exited before it could be traced", "cannot read the namespaces"))


def test_host_mount_namespace_is_refused(hookenv: HookEnv) -> None:
    require("root")
    result = hookenv.run_hook(state(os.getpid(), {KEY: f"of:{hookenv.root}/p.json"}))
    check_refused(hookenv, result, "shares the host's mount namespace", closed=True)


def test_usage_errors(hookenv: HookEnv) -> None:
    for args, message in ((["--bogus"], "unknown argument"), (["--config"], "needs a path"),
                          (["--config", "relative.json"], "absolute path")):
        result = subprocess.run([sys.executable, "-m", "syscribe.hooks", *args], input=b"{}",
                                capture_output=True, check=False)
        assert result.returncode == 2 and message in result.stderr.decode()
    shown = subprocess.run([sys.executable, "-m", "syscribe.hooks", "--help"], capture_output=True,
                           check=False, text=True)
    assert shown.returncode == 0 and "usage: syscribe-hook" in shown.stdout


def test_stdin_that_never_ends(hookenv: HookEnv) -> None:
    """A caller that never closes stdin: the hook gives up after its bound instead of hanging."""
    require("root")
    errors = hookenv.tmp / "stderr"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syscribe.hooks", "--config", str(hookenv.config_path)],
            stdin=subprocess.PIPE, stderr=err,
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write(b'{"ociVersion": "1.0"')
            proc.stdin.flush()
            proc.wait(timeout=60)  # stdin is still open: only the hook's own bound ends this
        finally:
            proc.kill()
            proc.wait()
            assert proc.stdin is not None
            proc.stdin.close()
    assert proc.returncode == 1
    assert "no end of the container state on stdin within 5 s" in errors.read_text()
