"""The hook's log records: one line each, whatever the message holds, and a log that cannot be opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syscribe.hooks.log import MAX_LINE, HookLog, printable, record


def test_one_line_per_record() -> None:
    line = record("abc\n123", "bad value 'of:/a\nb\x1b[31m'", now=0, pid=7)
    expected = "1970-01-01T00:00:00Z syscribe-hook[7] container abc\\n123: "
    assert line == expected + "bad value 'of:/a\\nb\\x1b[31m'\n"
    assert line.count("\n") == 1


def test_huge_messages_are_cut() -> None:
    line = record("c" * 10_000, "m" * 100_000, now=0, pid=1)
    assert len(line) == MAX_LINE + 1 and line.endswith("\n")


def test_printable() -> None:
    assert printable("plain") == "plain"
    assert printable("a\tb\x00") == "a\\tb\\x00"


def test_writes_append_to_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hook.log"
    log = HookLog(str(path))
    log.write("c1", "first")
    log.write("c2", "second", stderr=False)
    log.close()
    lines = path.read_text().splitlines()
    assert [x.split(": ", 1)[1] for x in lines] == ["first", "second"]
    assert capsys.readouterr().err.count("\n") == 1
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_unopenable_log_falls_back_to_stderr_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "target").write_text("")
    os.symlink(tmp_path / "target", tmp_path / "link.log")
    for path in (tmp_path / "missing-dir" / "hook.log", tmp_path / "link.log"):
        log = HookLog(str(path))
        assert log.fd is None
        log.write("c", "the problem")
        err = capsys.readouterr().err.splitlines()
        assert "the problem" in err[0] and "cannot open the log file" in err[1]
    assert (tmp_path / "target").read_text() == ""
