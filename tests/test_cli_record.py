"""`syscribe record`: end to end with the real recorder and enforcement, and every error path (one
line, the right exit code, nothing run when the options are wrong, no partial file)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from syscribe import bundle, profilemerge
from syscribe import ociprofile as prof
from syscribe.cli import main
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")


def syscribe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSCRIBE, *args], capture_output=True, text=True, timeout=120, check=False)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(result: Result | subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("syscribe: ") and fragment in lines[0], lines[0]


def allowed(path: Path) -> set[str]:
    data = json.loads(path.read_text())
    return {n for rule in data["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}


# --- end to end ---------------------------------------------------------------------------------------


def test_record_then_enforce(tmp_path: Path) -> None:
    require("root", "ebpf", "libseccomp", "busybox")
    profile = tmp_path / "p.json"
    recorded = syscribe("record", "-o", str(profile), "--", "busybox", "mkdir", str(tmp_path / "d"))
    assert recorded.returncode == 0, recorded.stderr
    assert (tmp_path / "d").is_dir()
    assert re.search(r"recorded \d+ syscalls \(x86_64: \d+\) from busybox in [\d.]+ s", recorded.stderr)
    assert f"syscribe: wrote {profile}" in recorded.stderr
    assert recorded.stdout == ""
    names = allowed(profile)
    assert names & {"mkdir", "mkdirat"}
    assert not names & {"symlink", "symlinkat"}
    data = json.loads(profile.read_text())
    assert data["defaultAction"] == "SCMP_ACT_ERRNO" and data["defaultErrnoRet"] == 1
    assert data["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert "archMap" not in data

    same = syscribe("run", "--profile", str(profile), "--", "busybox", "mkdir", str(tmp_path / "d2"))
    assert same.returncode == 0, same.stderr
    assert (tmp_path / "d2").is_dir()
    other = syscribe("run", "--profile", str(profile), "--", "busybox", "ln", "-s", "a", str(tmp_path / "l"))
    assert other.returncode != 0
    assert not (tmp_path / "l").is_symlink()
    # The recording has no write(), so ln cannot say why; with write allowed it says EPERM.
    with_write = tmp_path / "w.json"
    with_write.write_text(prof.dumps(profilemerge.add_allowed(prof.loads(profile.read_text()), ["write"])))
    other = syscribe(
        "run", "--profile", str(with_write), "--", "busybox", "ln", "-s", "a", str(tmp_path / "l")
    )
    assert other.returncode == 1
    assert "Operation not permitted" in other.stderr


def test_a_recorded_profile_in_a_runc_container(tmp_path: Path, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "runc", "busybox")
    profile = tmp_path / "p.json"
    recorded = syscribe("record", "-o", str(profile), "--", "busybox", "mkdir", str(tmp_path / "d"))
    assert recorded.returncode == 0, recorded.stderr
    enforced = prof.to_dict(profilemerge.for_runtime(prof.loads(profile.read_text()), "runc"))
    made, link = f"/tmp/made-{uuid.uuid4().hex[:8]}", f"/tmp/link-{uuid.uuid4().hex[:8]}"
    try:
        for args, status in (
            (["/bin/busybox", "mkdir", made], 0),
            (["/bin/busybox", "ln", "-s", "a", link], 1),
        ):
            name = f"syscribe-test-{uuid.uuid4().hex[:12]}"
            b = bundle.make_bundle(tmp_path / name, busybox_rootfs, args, seccomp=enforced)
            try:
                result = bundle.run_container(b, name)
            finally:
                subprocess.run(["runc", "delete", "--force", name], capture_output=True, check=False)
            assert result.returncode == status, result.stderr
        assert (busybox_rootfs / made.lstrip("/")).is_dir()
        assert not (busybox_rootfs / link.lstrip("/")).is_symlink()
    finally:
        for path in (made, link):
            subprocess.run(["rm", "-rf", str(busybox_rootfs / path.lstrip("/"))], check=False)


def test_record_to_stdout_as_a_seccompprofile(tmp_path: Path) -> None:
    require("root", "ebpf", "busybox")
    result = syscribe("record", "--format", "seccompprofile", "--", "busybox", "true")
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["kind"] == "SeccompProfile"
    assert data["metadata"] == {"name": "busybox"}
    assert "execve" in data["spec"]["syscalls"][0]["names"]
    named = syscribe("record", "--format", "seccompprofile", "--name", "web-1", "--", "busybox", "true")
    assert yaml.safe_load(named.stdout)["metadata"]["name"] == "web-1"


def test_record_exits_with_the_commands_status_and_still_writes(tmp_path: Path) -> None:
    require("root", "ebpf", "busybox")
    profile = tmp_path / "p.json"
    result = syscribe("record", "-o", str(profile), "--", "busybox", "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert "exited with status 3" in result.stderr
    assert "exit_group" in allowed(profile)


@pytest.mark.parametrize("backend", ["core", "bcc"])
def test_record_with_each_backend(tmp_path: Path, backend: str) -> None:
    require("root", "ebpf", "busybox", *(["bcc"] if backend == "bcc" else []))
    profile = tmp_path / "p.json"
    result = syscribe(
        "record", "--backend", backend, "-o", str(profile), "--", "busybox", "mkdir", str(tmp_path / "d")
    )
    assert result.returncode == 0, result.stderr
    assert f"with the {backend} backend" in result.stderr
    assert allowed(profile) & {"mkdir", "mkdirat"}


# --- errors --------------------------------------------------------------------------------------------


def test_missing_command_exits_127_and_writes_nothing(tmp_path: Path) -> None:
    require("root", "ebpf")
    profile = tmp_path / "p.json"
    result = syscribe("record", "-o", str(profile), "--", "no-such-command-xyz", "--flag")
    assert result.returncode == 127
    assert result.stderr == "syscribe: no-such-command-xyz: command not found\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("-o", "{tmp}/missing/p.json"), "directory {tmp}/missing does not exist; create it first"),
        (("-o", "{tmp}/file/p.json"), "is not a directory"),
        (("-o", "{tmp}/link.json"), "is a symlink"),
        (("-o", "{tmp}"), "is a directory"),
        (("--name", "x"), "--name is the SeccompProfile's metadata.name"),
        (
            ("--format", "seccompprofile", "--name", "Not Valid"),
            "--name: resource name 'Not Valid' is not valid",
        ),
    ],
)
def test_bad_options_fail_before_the_command_runs(
    tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "link.json").symlink_to(tmp_path / "elsewhere.json")
    marker = tmp_path / "ran"
    mapped = [a.format(tmp=tmp_path) for a in args]
    result = cli("record", *mapped, "--", "touch", str(marker))
    assert result.exit_code == 125
    one_error_line(result, fragment.format(tmp=tmp_path))
    assert not marker.exists()
    assert not (tmp_path / "elsewhere.json").exists()


def test_usage_errors_are_one_line() -> None:
    result = cli("record")
    assert result.exit_code == 125
    one_error_line(result, "no command given")
    result = cli("record", "--backend", "nope", "--", "true")
    assert result.exit_code == 2  # click's own usage error for a bad choice


def test_installed_command_bad_output_directory(tmp_path: Path) -> None:
    result = syscribe("record", "-o", str(tmp_path / "no" / "p.json"), "--", "touch", str(tmp_path / "ran"))
    assert result.returncode == 125
    one_error_line(result, "does not exist")
    assert list(tmp_path.iterdir()) == []
