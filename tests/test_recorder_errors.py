"""Bad input to the recorder: commands, arguments and backend names, and what the errors say.

These fail before anything is forked or loaded, so they need no root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syscribe.recorder import open_tracer
from syscribe.recorder.base import RecorderError
from syscribe.recorder.workload import record_command, run_traced
from syscribe.usercommand import (
    CommandError,
    CommandNotExecutableError,
    CommandNotFoundError,
    resolve_command,
)
from tests.support import unprivileged
from tests.support.prereq import require


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text
    return text


class TestCommand:
    def test_missing_command_is_named(self) -> None:
        with pytest.raises(CommandNotFoundError) as info:
            record_command(["syscribe-no-such-command-xyz", "arg"])
        assert info.value.command == "syscribe-no-such-command-xyz"
        assert one_line(info.value) == "command not found: syscribe-no-such-command-xyz"

    def test_missing_path_is_named(self, tmp_path: Path) -> None:
        missing = str(tmp_path / "nope" / "cmd")
        with pytest.raises(CommandNotFoundError) as info:
            record_command([missing])
        assert info.value.command == missing

    def test_missing_command_is_found_before_any_backend_is_opened(self) -> None:
        # Even with a backend that cannot exist, the user hears about the command first (exit 127).
        with pytest.raises(CommandNotFoundError):
            record_command(["syscribe-no-such-command-xyz"], backend="nope")

    def test_empty_argv(self) -> None:
        with pytest.raises(CommandError) as info:
            record_command([])
        assert "no command" in one_line(info.value) and "--" in str(info.value)

    def test_empty_command_name(self) -> None:
        with pytest.raises(CommandNotFoundError) as info:
            record_command([""])
        assert "empty" in one_line(info.value)

    @pytest.mark.parametrize("argv", [["ls\0rm"], ["/bin/busybox", "echo", "a\0b"]])
    def test_nul_bytes(self, argv: list[str]) -> None:
        with pytest.raises(CommandError, match="NUL"):
            record_command(argv)

    def test_not_a_string(self) -> None:
        with pytest.raises(CommandError, match="not a string"):
            resolve_command(["/bin/busybox", b"x"], {})  # type: ignore[list-item]

    def test_directory(self, tmp_path: Path) -> None:
        with pytest.raises(CommandNotExecutableError) as info:
            record_command([str(tmp_path)])
        assert "directory" in one_line(info.value)

    def test_not_executable(self, tmp_path: Path) -> None:
        plain = tmp_path / "plain"
        plain.write_text("#!/bin/sh\n")
        plain.chmod(0o644)
        with pytest.raises(CommandNotExecutableError) as info:
            record_command([str(plain)])
        assert info.value.command == str(plain)
        assert "not executable" in one_line(info.value)

    def test_huge_command_name(self) -> None:
        with pytest.raises(CommandNotFoundError):
            record_command(["x" * 100_000])

    def test_hostile_path_in_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hostile = ["/nonexistent"] * 10_000 + ["", "relative/dir", "/" + "d" * 5000]
        monkeypatch.setenv("PATH", ":".join(hostile))
        with pytest.raises(CommandNotFoundError):
            record_command(["busybox"])

    def test_resolves_through_path(self) -> None:
        found = resolve_command(["busybox"], {"PATH": "/nonexistent:/bin"})
        assert Path(found).name == "busybox"


class TestBackend:
    @pytest.mark.parametrize("name", ["", "nope", "CORE", "core ", "core\0", "bcc;rm -rf /", "ébpf"])
    def test_unknown_backend(self, name: str) -> None:
        with pytest.raises(RecorderError) as info:
            open_tracer(name)
        text = one_line(info.value)
        assert "unknown recorder backend" in text and "auto, core, bcc" in text

    def test_huge_backend_name_is_cut_short(self) -> None:
        with pytest.raises(RecorderError) as info:
            open_tracer("x" * 1_000_000)
        assert len(one_line(info.value)) < 200

    def test_unknown_backend_via_record(self) -> None:
        with pytest.raises(RecorderError, match="unknown recorder backend"):
            record_command(["/bin/busybox", "true"], backend="ebpf")


def test_no_btf_and_no_bcc_names_both_remedies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A node without BTF and without bcc: made here by hiding both (a missing file, an unimportable
    module), since this machine has them."""
    from syscribe.recorder import libbpf

    monkeypatch.setattr(libbpf, "VMLINUX_BTF", tmp_path / "no-btf")
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(RecorderError) as info:
        open_tracer("auto")
    text = one_line(info.value)
    assert "no recorder backend can run here" in text
    assert "CONFIG_DEBUG_INFO_BTF" in text and "apt-get install python3-bpfcc" in text
    with pytest.raises(RecorderError, match="no BTF"):
        open_tracer("core")
    with pytest.raises(RecorderError, match="python3-bpfcc"):
        open_tracer("bcc")


NOT_ROOT_SCRIPT = """
from syscribe.recorder import open_tracer
from syscribe.recorder.base import RecorderError
from syscribe.usercommand import CommandError
from syscribe.recorder.workload import record_command
for call in (lambda: open_tracer("auto"), lambda: record_command(["/bin/busybox", "true"], "core"),
             lambda: record_command(["no-such-command-xyz"], "core")):
    try:
        call()
    except (RecorderError, CommandError) as exc:
        print(type(exc).__name__, "|", exc)
"""


def test_not_root() -> None:
    require("root")
    out = subprocess.run(
        # A copy nobody can reach: the checkout itself may be closed to other users.
        [str(unprivileged.reachable().python), "-c", NOT_ROOT_SCRIPT], user="nobody", check=True,
        capture_output=True, text=True, cwd="/",
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "RecorderError | recording syscalls with eBPF needs root; run as root (e.g. sudo)"
    assert lines[1] == lines[0]
    assert lines[2] == "CommandNotFoundError | command not found: no-such-command-xyz"


@pytest.mark.parametrize(
    "env", [{"": "x"}, {"A=B": "x"}, {"A\0": "x"}, {"A": "x\0y"}, {"A" * 10_000 + "=": ""}]
)
def test_hostile_environment(env: dict[str, str]) -> None:
    with pytest.raises(RecorderError, match="environment variable"):
        run_traced(["/bin/busybox", "true"], tracer=None, env=env)  # type: ignore[arg-type]
