"""`syscribe run`: its error paths (one line each, with the shell's exit codes) through click's runner
and the installed command. Enforcement itself is in test_seccomp.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syscribe import arch
from syscribe import ociprofile as prof
from syscribe.cli import main
from tests.support import unprivileged
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(result: Result | subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("syscribe: ") and fragment in lines[0], lines[0]


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "p.json"
    path.write_text(prof.dumps(prof.from_names(["read", "write", "execve", "exit_group"], arch.X86_64)))
    return path


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("run", "--", "true"), 125, "no profile given"),
        (("run", "--profile", "GOOD"), 125, "no command given"),
        (("run", "--profile", "missing.json", "--", "true"), 125, "missing.json: no such file"),
        (
            ("run", "--profile", "GOOD", "--", "no-such-command-xyz"),
            127,
            "no-such-command-xyz: command not found",
        ),
        (("run", "--profile", "GOOD", "--", "./nope/cmd"), 127, "./nope/cmd: command not found"),
        (("run", "--profile", "GOOD", "--", ""), 127, "'': command not found"),
        (("run", "--profile", "GOOD", "--", "/tmp"), 126, "/tmp: is a directory"),
        (("run", "--profile", "GOOD", "--", "GOOD"), 126, "permission denied (not executable)"),
    ],
)
def test_run_errors(good: Path, args: tuple[str, ...], code: int, fragment: str) -> None:
    require("libseccomp")
    mapped = [str(good) if a == "GOOD" else a for a in args]
    result = cli(*mapped)
    assert result.exit_code == code
    one_error_line(result, fragment.replace("GOOD", str(good)))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not a profile", "holds a string"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_128"]}',
            "unknown architecture",
        ),
        ('{"defaultAction": "SCMP_ACT_NOTIFY"}', "needs a seccomp agent"),
        (
            json.dumps(
                {
                    "defaultAction": "SCMP_ACT_ERRNO",
                    "syscalls": [
                        {
                            "names": ["read"],
                            "action": "SCMP_ACT_ALLOW",
                            "args": [{"index": 9, "op": "SCMP_CMP_EQ"}],
                        }
                    ],
                }
            ),
            "from 0 to 5",
        ),
    ],
)
def test_run_refuses_bad_profiles_before_running(tmp_path: Path, content: str, fragment: str) -> None:
    require("libseccomp")
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    marker = tmp_path / "ran"
    result = cli("run", "--profile", str(bad), "--", "touch", str(marker))
    assert result.exit_code == 125
    one_error_line(result, fragment)
    assert not marker.exists()


def test_unknown_names_are_a_warning_not_an_error(tmp_path: Path) -> None:
    require("root", "libseccomp", "busybox")
    p = tmp_path / "p.json"
    p.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["brand_new_call"], "action": "SCMP_ACT_ERRNO"}],
            }
        )
    )
    result = subprocess.run(
        [SYSCRIBE, "run", "-p", str(p), "--", "busybox", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stderr.startswith("syscribe: warning: libseccomp")
    assert "brand_new_call" in result.stderr


def test_installed_command_not_found(good: Path) -> None:
    require("libseccomp")
    result = subprocess.run(
        [SYSCRIBE, "run", "-p", str(good), "--", "no-such-command-xyz", "arg"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 127
    assert result.stderr == "syscribe: no-such-command-xyz: command not found\n"


# --- a command killed by its own profile is told so (issue 9 item 12) ------------------------------------


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_a_profile_without_exit_group_is_named(tmp_path: Path) -> None:
    require("libseccomp")
    profile = write_json(tmp_path / "p.json", {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["exit_group", "exit"], "action": "SCMP_ACT_ERRNO"}],
    })
    done = subprocess.run([SYSCRIBE, "run", "--profile", str(profile), "--", "true"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 128 + signal.SIGSEGV
    one_error_line(done, "true crashed (SIGSEGV) because its own profile does not allow exit_group")


def test_a_kill_names_the_syscall_from_the_audit_record(tmp_path: Path) -> None:
    require("root", "libseccomp")
    profile = write_json(tmp_path / "p.json", {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"}],
    })
    done = subprocess.run([SYSCRIBE, "run", "--profile", str(profile), "--", "sync"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 128 + signal.SIGSYS
    one_error_line(done, "sync was killed by its own profile (SIGSYS) at sync (x86_64, kill_process)")
    # Without CAP_AUDIT_READ the record cannot be read: the signal still tells it was the profile.
    copy = unprivileged.reachable()
    with tempfile.TemporaryDirectory() as reachable_dir:
        where = Path(reachable_dir) / "p.json"
        where.write_text(profile.read_text())
        os.chmod(reachable_dir, 0o755)
        where.chmod(0o644)
        done = subprocess.run([*unprivileged.NOBODY, str(copy.syscribe), "run", "--profile", str(where), "--",
                               "sync"], capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert done.returncode == 128 + signal.SIGSYS
    one_error_line(done, "sync was killed by SIGSYS, the signal of a seccomp kill")


def test_a_crash_of_its_own_is_not_blamed_on_the_profile(tmp_path: Path) -> None:
    require("libseccomp")
    profile = write_json(tmp_path / "p.json", {"defaultAction": "SCMP_ACT_ALLOW"})
    done = subprocess.run([SYSCRIBE, "run", "--profile", str(profile), "--", "sh", "-c", "kill -SEGV $$"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 128 + signal.SIGSEGV and done.stderr == ""
