"""The enricher's sources: following files across rotation, checkpoints, kmsg and netlink framing."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syscribe.enricher import checkpoint as cpmod
from syscribe.enricher.checkpoint import Checkpoint, CheckpointError, FileMark, KmsgMark, OutputMark
from syscribe.enricher.follow import FileFollower, FollowError
from syscribe.enricher.sources import SourceError, choose, parse_kmsg, parse_netlink_messages


class Reports:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, code: str, message: str) -> None:
        self.items.append((code, message))

    def codes(self) -> list[str]:
        return [c for c, _ in self.items]


def drain(f: FileFollower, rounds: int = 50, timeout: float = 0.01) -> list[bytes]:
    """Everything the follower gives within `rounds` idle reads."""
    out: list[bytes] = []
    idle = 0
    while idle < rounds:
        chunk = f.read(timeout)
        if chunk is None:
            if f.eof:
                break
            idle += 1
            continue
        idle = 0
        out.extend(chunk.lines)
    return out


def read_all(f: FileFollower) -> list[bytes]:
    """Read until nothing more comes (following: a few quiet reads)."""
    return drain(f, rounds=5)


def append(path: Path, *lines: str | bytes) -> None:
    with open(path, "ab") as fh:
        for line in lines:
            fh.write(line.encode() if isinstance(line, str) else line)


def numbered(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix} {i}\n" for i in range(start, stop)]


# --- reading and partial lines -------------------------------------------------------------------------


def test_reads_complete_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "one\n", "two\n", "thr")
    f = FileFollower(log, follow=True, start="beginning", rotate_grace=0.05)
    try:
        assert read_all(f) == [b"one", b"two"]
        # The cut line is not consumed: the end mark stays before it.
        mark = f.end_mark()
        assert mark is not None and mark.offset == 8
        append(log, "ee\n")
        assert read_all(f) == [b"three"]
    finally:
        f.close()


def test_no_follow_stops_at_end_and_keeps_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "a\n", "b")
    f = FileFollower(log, follow=False, start="beginning")
    try:
        assert drain(f) == [b"a"]
        assert f.eof
        assert f.end_mark() is not None and f.end_mark().offset == 2  # type: ignore[union-attr]
    finally:
        f.close()


def test_start_end_skips_what_is_there(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "old 1\n", "old 2\n", "half of a li")
    f = FileFollower(log, follow=True, start="end", rotate_grace=0.05)
    try:
        assert read_all(f) == []
        append(log, "ne being written\n", "new\n")
        # The line being written when we started is new: it is read whole.
        assert read_all(f) == [b"half of a line being written", b"new"]
    finally:
        f.close()


def test_missing_file_without_follow_is_an_error(tmp_path: Path) -> None:
    f = FileFollower(tmp_path / "nope.log", follow=False, start="beginning")
    with pytest.raises(FollowError, match="does not exist"):
        f.read(0.01)


def test_directory_and_symlink_inputs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.log").mkdir()
    real = tmp_path / "real.log"
    append(real, "x\n")
    (tmp_path / "link.log").symlink_to(real)
    with pytest.raises(FollowError, match="is a directory"):
        FileFollower(tmp_path / "dir.log", follow=False, start="beginning").read(0.01)
    with pytest.raises(FollowError, match="symlink"):
        FileFollower(tmp_path / "link.log", follow=False, start="beginning").read(0.01)


def test_fifo_input_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    with pytest.raises(FollowError, match="not a regular file"):
        FileFollower(fifo, follow=False, start="beginning").read(0.01)


def test_waits_for_a_missing_file_when_following(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    reports = Reports()
    f = FileFollower(log, follow=True, start="beginning", report=reports, poll_interval=0.02)
    try:
        assert read_all(f) == []
        assert "missing" in reports.codes()
        append(log, "hello\n")
        assert read_all(f) == [b"hello"]
    finally:
        f.close()


# --- hostile content ------------------------------------------------------------------------------------


def test_binary_garbage_and_invalid_utf8_pass_through_as_bytes(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    garbage = bytes(range(256)).replace(b"\n", b"")
    append(log, garbage + b"\n", b"\xff\xfe\xc3(\n", b"\x00\x00\n")
    f = FileFollower(log, follow=False, start="beginning")
    try:
        assert drain(f) == [garbage, b"\xff\xfe\xc3(", b"\x00\x00"]
    finally:
        f.close()


@pytest.mark.parametrize("size", [10 * 1024 * 1024, 3 * 1024 * 1024 + 17])
def test_huge_line_is_skipped_and_reported(tmp_path: Path, size: int) -> None:
    log = tmp_path / "audit.log"
    append(log, "before\n", b"x" * size + b"\n", "after\n")
    reports = Reports()
    f = FileFollower(log, follow=False, start="beginning", report=reports, max_line=1 << 20,
                     chunk_size=1 << 20)
    try:
        assert drain(f) == [b"before", b"after"]
        assert reports.codes().count("oversized_line") == 1
        assert f.lines_skipped_oversize == 1
        mark = f.end_mark()
        assert mark is not None and mark.offset == log.stat().st_size
    finally:
        f.close()


def test_huge_line_still_being_written_is_skipped_when_it_ends(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "before\n", b"y" * (2 << 20))
    f = FileFollower(log, follow=True, start="beginning", max_line=1 << 20, rotate_grace=0.05)
    try:
        assert read_all(f) == [b"before"]
        append(log, b"y" * 100 + b"\nafter\n")
        assert read_all(f) == [b"after"]
    finally:
        f.close()


# --- rotation -------------------------------------------------------------------------------------------


def test_rename_and_create_finishes_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, *numbered("a", 0, 100))
    f = FileFollower(log, follow=True, start="beginning", rotate_grace=0.2, poll_interval=0.02)
    try:
        got = read_all(f)
        os.rename(log, tmp_path / "audit.log.1")
        # A writer that has not reopened yet still appends to the old inode.
        append(tmp_path / "audit.log.1", *numbered("a", 100, 110))
        append(log, *numbered("b", 0, 50))
        got += read_all(f)
        assert got == [line.rstrip("\n").encode() for line in numbered("a", 0, 110) + numbered("b", 0, 50)]
    finally:
        f.close()


def test_two_rotations_between_reads_lose_nothing(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, *numbered("a", 0, 10))
    f = FileFollower(log, follow=True, start="beginning", rotate_grace=0.05, poll_interval=0.02)
    try:
        got = read_all(f)
        os.rename(log, tmp_path / "audit.log.1")
        append(log, *numbered("b", 0, 10))
        os.rename(tmp_path / "audit.log.1", tmp_path / "audit.log.2")
        os.rename(log, tmp_path / "audit.log.1")
        append(log, *numbered("c", 0, 10))
        got += read_all(f)
        want = numbered("a", 0, 10) + numbered("b", 0, 10) + numbered("c", 0, 10)
        assert got == [w.rstrip("\n").encode() for w in want]
    finally:
        f.close()


def test_copytruncate_reads_the_unread_rest_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, *numbered("a", 0, 10))
    reports = Reports()
    f = FileFollower(log, follow=True, start="beginning", report=reports, rotate_grace=0.05,
                     poll_interval=0.02)
    try:
        got = read_all(f)
        append(log, *numbered("a", 10, 20))  # written, not yet read
        shutil.copyfile(log, tmp_path / "audit.log.1")
        os.truncate(log, 0)
        append(log, *numbered("b", 0, 5))
        got += read_all(f)
        want = numbered("a", 0, 20) + numbered("b", 0, 5)
        assert got == [w.rstrip("\n").encode() for w in want]
        assert "truncated" in reports.codes()
    finally:
        f.close()


def test_truncated_and_regrown_past_the_offset_is_noticed(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "first line\n")
    f = FileFollower(log, follow=True, start="beginning", rotate_grace=0.05, poll_interval=0.02)
    try:
        assert read_all(f) == [b"first line"]
        with open(log, "wb") as fh:  # truncate and write more than before, no copy kept
            fh.write(b"brand new content\nand more\n")
        assert read_all(f) == [b"brand new content", b"and more"]
    finally:
        f.close()


def test_deleted_file_that_comes_back(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "a\n")
    reports = Reports()
    f = FileFollower(log, follow=True, start="beginning", report=reports, rotate_grace=0.05,
                     poll_interval=0.02)
    try:
        assert read_all(f) == [b"a"]
        log.unlink()
        assert read_all(f) == []
        assert "missing" in reports.codes()
        append(log, "b\n")
        assert read_all(f) == [b"b"]
    finally:
        f.close()


def test_path_replaced_by_directory_then_symlink_then_a_file(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "a\n")
    reports = Reports()
    f = FileFollower(log, follow=True, start="beginning", report=reports, rotate_grace=0.05,
                     poll_interval=0.02)
    try:
        assert read_all(f) == [b"a"]
        os.rename(log, tmp_path / "audit.log.1")
        log.mkdir()
        assert read_all(f) == []
        assert "not_regular" in reports.codes()
        log.rmdir()
        target = tmp_path / "elsewhere"
        append(target, "secret\n")
        log.symlink_to(target)
        assert read_all(f) == []
        assert "symlink" in reports.codes()
        log.unlink()
        append(log, "b\n")
        assert read_all(f) == [b"b"]
    finally:
        f.close()


# --- checkpoints ----------------------------------------------------------------------------------------


def _mark_after(f: FileFollower) -> FileMark:
    mark = f.end_mark()
    assert mark is not None
    return mark


def test_resume_from_a_mark_in_the_middle_of_a_chunk(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, *numbered("a", 0, 10))
    f = FileFollower(log, follow=False, start="beginning")
    chunk = f.read(0.01)
    assert chunk is not None
    mark = chunk.mark_at(4)
    f.close()
    g = FileFollower(log, follow=False, start="checkpoint", mark=mark)
    try:
        assert drain(g) == [f"a {i}".encode() for i in range(4, 10)]
    finally:
        g.close()


def test_resume_after_rotations_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, *numbered("a", 0, 10))
    f = FileFollower(log, follow=False, start="beginning")
    drain(f)
    mark = _mark_after(f)
    f.close()
    append(log, *numbered("a", 10, 12))
    os.rename(log, tmp_path / "audit.log.1")
    append(log, *numbered("b", 0, 3))
    os.rename(tmp_path / "audit.log.1", tmp_path / "audit.log.2")
    os.rename(log, tmp_path / "audit.log.1")
    append(log, *numbered("c", 0, 3))
    reports = Reports()
    g = FileFollower(log, follow=False, start="checkpoint", mark=mark, report=reports)
    try:
        want = numbered("a", 10, 12) + numbered("b", 0, 3) + numbered("c", 0, 3)
        assert drain(g) == [w.rstrip("\n").encode() for w in want]
        assert "resumed_rotated" in reports.codes()
    finally:
        g.close()


def test_resume_after_copytruncate_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, *numbered("a", 0, 10))
    f = FileFollower(log, follow=False, start="beginning")
    drain(f)
    mark = _mark_after(f)
    f.close()
    append(log, *numbered("a", 10, 15))
    shutil.copyfile(log, tmp_path / "audit.log.1")
    os.truncate(log, 0)
    append(log, *numbered("b", 0, 20))  # longer than before: the size alone would not tell
    g = FileFollower(log, follow=False, start="checkpoint", mark=mark)
    try:
        want = numbered("a", 10, 15) + numbered("b", 0, 20)
        assert drain(g) == [w.rstrip("\n").encode() for w in want]
    finally:
        g.close()


def test_resume_when_the_checkpointed_inode_was_copytruncated_then_renamed(tmp_path: Path) -> None:
    """The checkpoint's inode is still there but holds newer lines: the copy holds ours."""
    log = tmp_path / "audit.log"
    append(log, *numbered("a", 0, 10))
    f = FileFollower(log, follow=False, start="beginning")
    drain(f)
    mark = _mark_after(f)
    f.close()
    append(log, *numbered("a", 10, 12))
    shutil.copyfile(log, tmp_path / "audit.log.1")  # copytruncate: a.. in the copy
    os.truncate(log, 0)
    append(log, *numbered("b", 0, 30))  # same inode, other lines, longer than the offset
    os.rename(tmp_path / "audit.log.1", tmp_path / "audit.log.2")
    os.rename(log, tmp_path / "audit.log.1")  # then renamed away
    append(log, *numbered("c", 0, 3))
    g = FileFollower(log, follow=False, start="checkpoint", mark=mark)
    try:
        want = numbered("a", 10, 12) + numbered("b", 0, 30) + numbered("c", 0, 3)
        assert drain(g) == [w.rstrip("\n").encode() for w in want]
    finally:
        g.close()


def test_checkpoint_that_matches_nothing_reads_from_the_beginning(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, "x\n", "y\n")
    st = log.stat()
    mark = FileMark(str(log), st.st_dev, st.st_ino, 2, cpmod.tail_hash(b"not x"))
    reports = Reports()
    g = FileFollower(log, follow=False, start="checkpoint", mark=mark, report=reports)
    try:
        assert drain(g) == [b"x", b"y"]
        # The same file, which does not hold the line: what it holds is read again, and it says so.
        assert reports.codes() == ["checkpoint_mismatch"]
        assert "written again" in reports.items[0][1]
    finally:
        g.close()
    gone = FileMark(str(log), st.st_dev, st.st_ino + 12345, 2, cpmod.tail_hash(b"not x"))
    reports = Reports()
    h = FileFollower(log, follow=False, start="checkpoint", mark=gone, report=reports)
    try:
        assert drain(h) == [b"x", b"y"]
        assert reports.codes() == ["checkpoint_gone"]
    finally:
        h.close()


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    cp = Checkpoint(
        "auditd",
        FileMark("/var/log/audit/audit.log", 2049, 1234, 56789, cpmod.tail_hash(b"line")),
        (("|1.0:1|SECCOMP", 3), ("node|2.5:7|AVC", 0)),
        OutputMark("/out.json", 1, 2, 3),
    )
    path = tmp_path / "cp.json"
    cpmod.save(path, cp)
    assert cpmod.load(path) == cp
    assert cpmod.decode(cpmod.encode(Checkpoint("kmsg", KmsgMark("boot", 42)))) == Checkpoint(
        "kmsg", KmsgMark("boot", 42)
    )
    assert cpmod.load(tmp_path / "none.json") is None
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"[]", "must be an object"),
        (b'{"version": 2}', "version"),
        (b'{"version": 1, "source": "auditd", "mark": {"kind": "tape"}}', "kind"),
        (b'{"version": 1, "source": "auditd", "mark": {"kind": "file", "path": "/x", "dev": -1, '
         b'"inode": 1, "offset": 0, "tail_hash": ""}}', "non-negative"),
        (b'{"version": 1, "source": "auditd", "mark": {"kind": "file", "path": "/x", "dev": true, '
         b'"inode": 1, "offset": 0, "tail_hash": ""}}', "non-negative"),
        (b'{"version": 1, "source": "auditd", "mark": {"kind": "file", "path": "/x", "dev": 1, '
         b'"inode": 1, "offset": 1e300, "tail_hash": ""}}', "non-negative"),
        (b'{"version": 1, "source": "kmsg", "mark": {"kind": "kmsg", "boot_id": "b", "next_seq": 1}, '
         b'"written": {"a": 1}}', "list"),
        (b'{"version": 1, "source": "kmsg", "mark": {"kind": "kmsg", "boot_id": "b", "next_seq": 1}, '
         b'"written": [["k", -3]]}', "key, lines"),
        (b'{"version": 1, "source": "kmsg", "mark": {"kind": "kmsg", "boot_id": "' + b"b" * 100
         + b'", "next_seq": 1}}', "at most"),
        (b" " * (cpmod.MAX_CHECKPOINT_BYTES + 1), "more than any checkpoint"),
    ],
)
def test_broken_checkpoints_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        cpmod.decode(data)


def test_checkpoint_file_that_is_a_directory_or_symlink(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="not a regular file"):
        cpmod.load(tmp_path / "dir")
    (tmp_path / "real").write_text("{}")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(CheckpointError, match="cannot open"):
        cpmod.load(tmp_path / "link")


# --- kmsg and netlink framing (pure) -----------------------------------------------------------------------


def test_parse_kmsg_records() -> None:
    rec = b'5,349,501728209,-;audit: type=1326 audit(1795879354.464:4): pid=6514 comm="a\\x5cb"\n'
    assert parse_kmsg(rec) == (0, 349, b'audit: type=1326 audit(1795879354.464:4): pid=6514 comm="a\\b"')
    # Continuation lines (dictionary) are not part of the message.
    assert parse_kmsg(b"6,1,2,-,caller=T1;msg\n SUBSYSTEM=x\n") == (0, 1, b"msg")
    # userspace-written: facility 1 (LOG_USER)
    assert parse_kmsg(b"13,50,60,-;audit: type=1326 fake\n") == (1, 50, b"audit: type=1326 fake")
    for bad in (b"", b"no semicolon", b"x,y,z,-;m", b"5,6;m", b"99999999,1,2,-;m", b";;;", b"\xff" * 100):
        assert parse_kmsg(bad) is None


def _nlmsg(mtype: int, payload: bytes, port: int = 0) -> bytes:
    length = 16 + len(payload)
    msg = struct.pack("=IHHII", length, mtype, 0, 0, port) + payload
    return msg + b"\0" * (((length + 3) & ~3) - length)


def test_parse_netlink_messages() -> None:
    one = _nlmsg(1326, b"audit(1.5:2): pid=3")
    two = _nlmsg(1320, b"audit(1.5:2): \0")
    msgs, rest = parse_netlink_messages(one + two)
    assert msgs == [(1326, 0, b"audit(1.5:2): pid=3"), (1320, 0, b"audit(1.5:2): ")]
    assert rest == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 15,
        struct.pack("=IHHII", 0, 1326, 0, 0, 0) + b"x" * 40,  # zero length: must not loop forever
        struct.pack("=IHHII", 10, 1326, 0, 0, 0),  # shorter than its own header
        struct.pack("=IHHII", 0xFFFFFFFF, 1326, 0, 0, 0) + b"x",  # longer than the datagram
        os.urandom(4096),
    ],
)
def test_parse_netlink_messages_hostile(data: bytes) -> None:
    msgs, _rest = parse_netlink_messages(data)
    for mtype, _port, payload in msgs:
        assert isinstance(mtype, int) and len(payload) <= len(data)


def test_choose_explicit_sources(tmp_path: Path) -> None:
    assert choose("auditd", None)[1] == Path("/var/log/audit/audit.log")
    assert choose("auditd", tmp_path / "a.log") == ("auditd", tmp_path / "a.log")
    assert choose("auto", tmp_path / "kern.log") == ("syslog", tmp_path / "kern.log")
    assert choose("kmsg", None) == ("kmsg", None)
    with pytest.raises(SourceError, match="unknown source"):
        choose("tape", None)
    with pytest.raises(SourceError, match="netlink"):
        choose("netlink", tmp_path / "x")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=30),
    chunk=st.integers(min_value=1, max_value=64),
    max_line=st.integers(min_value=8, max_value=200),
)
def test_lines_read_are_the_complete_lines_written(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[bytes], chunk: int, max_line: int
) -> None:
    """Whatever the write sizes, read sizes and line lengths: every complete line up to max_line comes
    out once, in order; longer ones are skipped; the end mark is after the last complete line; and a
    follower started from any chunk's marks reads exactly the rest."""
    log = tmp_path_factory.mktemp("prop") / "audit.log"
    log.write_bytes(b"")
    f = FileFollower(log, follow=True, start="beginning", chunk_size=chunk, max_line=max_line,
                     rotate_grace=0.01, poll_interval=0.001)
    got: list[bytes] = []
    marks = []
    try:
        for piece in pieces:
            append(log, piece)
            while (c := f.read(0)) is not None:
                got.extend(c.lines)
                marks.extend((c.mark_at(i), len(got) - len(c.lines) + i) for i in range(len(c.lines) + 1))
        data = log.read_bytes()
        complete = data[: data.rfind(b"\n") + 1] if b"\n" in data else b""
        want = [line for line in complete.split(b"\n")[:-1] if len(line) <= max_line]
        assert got == want
        end = f.end_mark()
        assert end is not None and end.offset == len(complete)
    finally:
        f.close()
    for mark, index in marks[:: max(1, len(marks) // 5)]:
        g = FileFollower(log, follow=False, start="checkpoint", mark=mark, chunk_size=chunk,
                         max_line=max_line)
        try:
            assert drain(g, rounds=3, timeout=0) == got[index:]
        finally:
            g.close()
