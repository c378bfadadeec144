"""`syscribe doctor`: the real node (everything ok here, as root), the same node seen by an unprivileged
user (the recorder cannot run), the parsers with hostile input, and probes on a made-up /sys and /proc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syscribe import doctor
from syscribe.doctor import Check, Env, Result
from tests.support import unprivileged
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")


def test_this_node_is_ready() -> None:
    require("root", "ebpf", "bcc", "libseccomp", "runc")
    result = subprocess.run([SYSCRIBE, "doctor"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    names = [line.split()[1] for line in lines[:-1]]
    assert names == [c.name for c in doctor.CHECKS]
    for line in lines[:-1]:
        # lockdown may say ok without a lockdown file; every check must be ok on the project's nodes.
        assert line.startswith("ok "), line
    assert lines[-1] == "syscribe can record here with: core, bcc backends"


def test_an_unprivileged_user_is_told_what_is_missing() -> None:
    require("root", "setpriv")  # setpriv drops to an unprivileged user
    # A copy nobody can reach: the checkout itself may be closed to other users.
    result = subprocess.run(
        [*unprivileged.NOBODY, str(unprivileged.reachable().syscribe), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert result.returncode == 1
    assert "FAIL  root" in result.stdout and "run syscribe as root" in result.stdout
    assert "missing CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON" in result.stdout
    assert result.stderr == "syscribe cannot record here: fix the FAIL lines above\n"
    assert "Traceback" not in result.stdout + result.stderr


# --- parsers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "mask"),
    [
        ("Name:\tx\nCapEff:\t000001ffffffffff\n", 0x1FFFFFFFFFF),
        ("CapEff:\t0000000000000000", 0),
        ("CapEff: zz", None),
        ("CapEff:", None),
        ("CapEff:\t" + "f" * 100, None),
        ("CapEff:\t-1", None),
        ("", None),
        ("CapPrm:\tffff\n", None),
        ("\x00" * 1000, None),
    ],
)
def test_parse_cap_eff(status: str, mask: int | None) -> None:
    assert doctor.parse_cap_eff(status) == mask


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("[none] integrity confidentiality\n", "none"),
        ("none integrity [confidentiality]\n", "confidentiality"),
        ("none [integrity] confidentiality", "integrity"),
        ("none integrity confidentiality", None),
        ("[]", None),
        ("", None),
        ("[" * 10_000, None),
    ],
)
def test_parse_lockdown(text: str, mode: str | None) -> None:
    assert doctor.parse_lockdown(text) == mode


@given(st.text(max_size=200))
def test_parsers_take_any_text(text: str) -> None:
    doctor.parse_cap_eff(text)
    doctor.parse_lockdown(text)
    doctor.parse_actions(text)


def test_ready_backends() -> None:
    ok, bad = Result(True, ""), Result(False, "")

    def check(name: str, *backends: str) -> Check:
        return Check(name, frozenset(backends), "", lambda env: ok)

    both, core, bcc, info = check("a", "core", "bcc"), check("b", "core"), check("c", "bcc"), check("d")
    assert doctor.ready_backends([(both, ok), (core, ok), (bcc, ok), (info, bad)]) == ["core", "bcc"]
    assert doctor.ready_backends([(both, ok), (core, bad), (bcc, ok)]) == ["bcc"]
    assert doctor.ready_backends([(both, bad), (core, ok), (bcc, ok)]) == []


# --- probes on a made-up tree -------------------------------------------------------------------------


def probe(name: str, root: Path) -> Result:
    check = next(c for c in doctor.CHECKS if c.name == name)
    [(_, result)] = doctor.run_checks([check], Env(root))
    return result


def put(root: Path, path: str, text: str = "") -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_lockdown_probe(tmp_path: Path) -> None:
    assert probe("lockdown", tmp_path).ok  # no file: no lockdown LSM
    put(tmp_path, "/sys/kernel/security/lockdown", "none integrity [confidentiality]\n")
    result = probe("lockdown", tmp_path)
    assert not result.ok and "boot with lockdown=integrity or none" in result.detail
    put(tmp_path, "/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    assert probe("lockdown", tmp_path) == Result(True, "lockdown=integrity")
    put(tmp_path, "/sys/kernel/security/lockdown", "garbage" * 100_000)
    result = probe("lockdown", tmp_path)
    assert not result.ok and len(result.detail) < 120


def test_btf_tracefs_and_seccomp_probes(tmp_path: Path) -> None:
    assert "use --backend bcc" in probe("btf", tmp_path).detail
    assert "mount -t tracefs" in probe("tracefs", tmp_path).detail
    assert "CONFIG_SECCOMP_FILTER" in probe("seccomp", tmp_path).detail
    put(tmp_path, "/sys/kernel/btf/vmlinux")
    put(tmp_path, "/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id", "1")
    put(tmp_path, "/proc/sys/kernel/seccomp/actions_avail", "kill_process errno allow\n")
    assert probe("btf", tmp_path).ok
    assert probe("tracefs", tmp_path) == Result(True, "/sys/kernel/debug/tracing (raw_syscalls:sys_enter)")
    result = probe("seccomp", tmp_path)
    assert not result.ok and "lacks log" in result.detail


def test_capabilities_probe(tmp_path: Path) -> None:
    assert "cannot read CapEff" in probe("capabilities", tmp_path).detail
    put(tmp_path, "/proc/self/status", "CapEff:\t0000000000200000\n")  # CAP_SYS_ADMIN only
    assert probe("capabilities", tmp_path).detail.startswith("missing CAP_BPF, CAP_PERFMON")
    put(tmp_path, "/proc/self/status", "CapEff:\t000000c000200000\n")
    assert probe("capabilities", tmp_path).ok


def test_a_probe_that_breaks_is_a_finding() -> None:
    def broken(env: Env) -> Result:
        raise RuntimeError("boom")

    [(_, result)] = doctor.run_checks([Check("x", frozenset({"core"}), "", broken)])
    assert result == Result(False, "the check itself failed: boom")
