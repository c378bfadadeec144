"""Damaged checkpoints and a checkpoint that cannot be saved: `syscribe enrich` (the real command, real
files) does what its message says, and the message is true.

- The source position: an offset past the end of the log, inside a line, or another file's inode. The
  checkpoint still names the line it ends after (by its hash): the run resumes after that line, writes
  each record once, and says where it resumed.
- The output position: an offset of 0 (or inside a line) would cut lines that are never written again:
  nothing is cut, and the message says lines may appear twice.
- A checkpoint directory that cannot be written: the run fails with one line instead of exiting 0.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from syscribe.enricher import checkpoint as cpmod
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")

LINE = (
    "type=SECCOMP msg=audit(1700000000.123:{n}): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=1{n} "
    'comm="mkdir" exe="/bin/busybox" sig=0 arch=c000003e syscall=83 compat=0 ip=0x47b567 code=0x7ffc0000\n'
)


def append(log: Path, numbers: range) -> None:
    with open(log, "a") as fh:
        fh.write("".join(LINE.format(n=n) for n in numbers))


def enrich(log: Path, out: Path, cp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSCRIBE, "enrich", "--input", str(log), "--no-follow", "--output", str(out),
         "--checkpoint", str(cp)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def serials(out: Path) -> list[int]:
    return [int(orjson.loads(line)["auditID"].split(":")[1]) for line in out.read_bytes().splitlines()]


def first_run(tmp_path: Path) -> tuple[Path, Path, Path, cpmod.Checkpoint]:
    log, out, cp = tmp_path / "audit.log", tmp_path / "out.json", tmp_path / "cp.json"
    append(log, range(10))
    done = enrich(log, out, cp)
    assert done.returncode == 0, done.stderr
    saved = cpmod.load(cp)
    assert saved is not None and isinstance(saved.mark, cpmod.FileMark)
    assert saved.mark.offset == log.stat().st_size
    return log, out, cp, saved


@pytest.mark.parametrize("damage", ["past the end", "inside a line", "another file's inode"])
def test_a_damaged_source_position_resumes_after_the_line_it_names(tmp_path: Path, damage: str) -> None:
    log, out, cp, saved = first_run(tmp_path)
    mark = saved.mark
    assert isinstance(mark, cpmod.FileMark)
    other = tmp_path / "other.log"
    other.write_text("another file\n")
    damaged = {
        "past the end": replace(mark, offset=mark.offset + 100_000),
        "inside a line": replace(mark, offset=mark.offset - 40),
        "another file's inode": replace(mark, inode=other.stat().st_ino),
    }[damage]
    cpmod.save(cp, replace(saved, mark=damaged))
    append(log, range(10, 15))
    done = enrich(log, out, cp)
    assert done.returncode == 0, done.stderr
    assert serials(out) == list(range(15))  # each record once: none again, none missing
    assert f"that line is at byte {mark.offset}: resuming there" in done.stderr
    assert "may be missing" not in done.stderr


def test_a_position_matching_nothing_in_the_same_file_says_lines_come_again(tmp_path: Path) -> None:
    log, out, cp, saved = first_run(tmp_path)
    assert isinstance(saved.mark, cpmod.FileMark)
    cpmod.save(cp, replace(saved, mark=replace(saved.mark, tail_hash=cpmod.tail_hash(b"never written"))))
    done = enrich(log, out, cp)
    assert done.returncode == 0, done.stderr
    assert serials(out) == list(range(10)) * 2  # what the message says:
    assert "reading it from the beginning; lines read before that it still holds are written again" in (
        done.stderr
    )
    assert "may be missing" not in done.stderr


@pytest.mark.parametrize("offset", [0, 7])
def test_a_damaged_output_position_cuts_nothing(tmp_path: Path, offset: int) -> None:
    log, out, cp, saved = first_run(tmp_path)
    assert saved.output is not None and saved.output.tail_hash
    cpmod.save(cp, replace(saved, output=replace(saved.output, offset=offset)))
    with open(out, "a") as fh:  # grown after the checkpoint, as a run killed before its next one leaves it
        fh.write(LINE.replace("type=", "not json ").format(n=99))
    append(log, range(10, 12))
    done = enrich(log, out, cp)
    assert done.returncode == 0, done.stderr
    lines = out.read_bytes().splitlines()
    assert len(lines) == 13 and lines[10].startswith(b"not json")  # nothing cut, nothing lost
    assert [int(orjson.loads(line)["auditID"].split(":")[1]) for line in lines[11:]] == [10, 11]
    assert "not cutting it; lines written after the last checkpoint may appear twice" in done.stderr
    assert "they are written again" not in done.stderr


def test_an_intact_output_position_still_cuts_back(tmp_path: Path) -> None:
    log, out, cp, _saved = first_run(tmp_path)
    with open(out, "a") as fh:
        fh.write('{"written": "after the checkpoint"}\n')
    append(log, range(10, 12))
    done = enrich(log, out, cp)
    assert done.returncode == 0, done.stderr
    assert serials(out) == list(range(12))
    assert "they are written again" in done.stderr


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], check=True, timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


@pytest.mark.real
def test_a_checkpoint_that_cannot_be_saved_fails_the_run(tmp_path: Path) -> None:
    """Read-only for root too: a read-only mount (DAC does not stop root)."""
    require("root")
    log, out = tmp_path / "audit.log", tmp_path / "out.json"
    append(log, range(3))
    with tmpfs(tmp_path / "ro") as where:
        cp = where / "cp.json"
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, timeout=30)
        done = enrich(log, out, cp)
        assert done.returncode == 1, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in done.stderr
        assert f"cannot save the checkpoint {cp}" in errors[0] and "Read-only file system" in errors[0]
        assert not out.exists() or out.read_bytes() == b""  # stopped before writing what it cannot vouch for
        # A checkpoint saved before the directory became read-only: the last one fails, and says so.
        subprocess.run(["mount", "-o", "remount,rw", str(where)], check=True, timeout=30)
        assert enrich(log, out, cp).returncode == 0
        append(log, range(3, 5))
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, timeout=30)
        done = enrich(log, out, cp)
        assert done.returncode == 1 and f"cannot save the checkpoint {cp}" in done.stderr
        assert "resumes from the last checkpoint saved" in done.stderr
        subprocess.run(["mount", "-o", "remount,rw", str(where)], check=True, timeout=30)
        # which is true: the next run cuts back to it and writes the two records once
        done = enrich(log, out, cp)
        assert done.returncode == 0, done.stderr
        assert serials(out) == list(range(5))
