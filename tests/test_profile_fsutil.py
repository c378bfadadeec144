"""Writing profile files atomically and reading them with bounds (syscribe.fsutil)."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from syscribe import fsutil
from syscribe.fsutil import FsError
from tests.support.tmpfs import small_tmpfs


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_creates_the_whole_file_with_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "p.json"
    fsutil.write_atomic(target, '{"a": 1}\n')
    assert target.read_text() == '{"a": 1}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    fsutil.write_atomic(target, b"x" * 3_000_000, mode=0o600)
    assert target.stat().st_size == 3_000_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_replace_is_a_rename_not_a_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "p.json"
    target.write_text("old")
    reader = target.open()  # a reader of the old file keeps seeing all of it
    before = target.stat().st_ino
    fsutil.write_atomic(target, "new")
    assert target.stat().st_ino != before
    assert reader.read() == "old"
    reader.close()
    assert target.read_text() == "new"


def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "p.json"
    with pytest.raises(FsError, match=r"directory .*nope does not exist; create it first"):
        fsutil.write_atomic(target, "x")
    with pytest.raises(FsError, match="does not exist"):
        fsutil.check_writable_dir(target)
    assert not (tmp_path / "nope").exists()


def test_a_file_as_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(FsError, match="is not a directory"):
        fsutil.write_atomic(tmp_path / "f" / "p.json", "x")
    with pytest.raises(FsError, match="is not a directory"):
        fsutil.check_writable_dir(tmp_path / "f" / "p.json")


def test_symlinks_are_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "p.json"
    link.symlink_to(victim)
    with pytest.raises(FsError, match="is a symlink"):
        fsutil.write_atomic(link, "x")
    with pytest.raises(FsError, match="is a symlink"):
        fsutil.check_writable_dir(link)
    dangling = tmp_path / "d.json"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(FsError, match="is a symlink"):
        fsutil.write_atomic(dangling, "x")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "missing").exists()
    assert leftovers(tmp_path) == []


def test_a_directory_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(FsError, match="is a directory"):
        fsutil.write_atomic(tmp_path / "out", "x")
    with pytest.raises(FsError, match="is a directory"):
        fsutil.check_writable_dir(tmp_path / "out")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_write_at_wants_a_plain_name(tmp_path: Path, name: str) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FsError, match="not a file name"):
            fsutil.write_atomic_at(fd, name, "x")
    finally:
        os.close(fd)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, so that a write runs out of space for real."""
    with small_tmpfs(tmp_path / "tiny", "64k") as mount:
        yield mount


def test_a_full_disk_leaves_the_old_file_and_no_temp_file(tiny_fs: Path) -> None:
    target = tiny_fs / "p.json"
    fsutil.write_atomic(target, "old")
    with pytest.raises(FsError, match="No space left on device"):
        fsutil.write_atomic(target, b"y" * 1_000_000)
    assert target.read_text() == "old"
    assert leftovers(tiny_fs) == []


def test_a_read_only_filesystem_is_reported(tiny_fs: Path) -> None:
    fsutil.write_atomic(tiny_fs / "p.json", "old")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(FsError, match="Read-only file system"):
        fsutil.write_atomic(tiny_fs / "p.json", "new")
    with pytest.raises(FsError, match="not writable"):
        fsutil.check_writable_dir(tiny_fs / "p.json")
    assert (tiny_fs / "p.json").read_text() == "old"


def test_concurrent_writers_never_mix(tmp_path: Path) -> None:
    target = tmp_path / "p.json"
    payloads = [bytes([65 + i]) * 200_000 for i in range(4)]

    def write(data: bytes) -> None:
        for _ in range(20):
            fsutil.write_atomic(target, data)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        if target.exists():
            seen.add(target.read_bytes())
    for t in threads:
        t.join()
    seen.add(target.read_bytes())
    assert seen <= set(payloads)
    assert leftovers(tmp_path) == []


def test_read_limited(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_bytes(b"x" * 100)
    assert fsutil.read_limited(f) == b"x" * 100
    assert fsutil.read_limited(f, limit=100) == b"x" * 100
    with pytest.raises(FsError, match="100 bytes; files over 99 bytes are refused"):
        fsutil.read_limited(f, limit=99)
    with pytest.raises(FsError, match="no such file"):
        fsutil.read_limited(tmp_path / "missing")
    with pytest.raises(FsError, match="not a regular file"):
        fsutil.read_limited(tmp_path)


def test_read_limited_refuses_fifos_and_devices_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FsError, match="not a regular file"):
        fsutil.read_limited(fifo)
    with pytest.raises(FsError, match="not a regular file"):
        fsutil.read_limited("/dev/zero")


def test_no_follow_refuses_a_symlink_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"ok")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert fsutil.read_limited(tmp_path / "link") == b"ok"
    with pytest.raises(FsError, match="is a symlink; it is not followed") as caught:
        fsutil.read_limited(tmp_path / "link", follow_symlinks=False)
    assert caught.value.kind == fsutil.SYMLINK
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FsError) as caught:
        fsutil.read_limited(tmp_path / "dangling", follow_symlinks=False)
    assert caught.value.kind == fsutil.SYMLINK


def test_each_failure_has_a_kind_for_callers_that_word_their_own(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as handle:
        handle.truncate(10**12)  # sparse: a terabyte that costs no disk
    cases = [
        (tmp_path / "missing", fsutil.MISSING),
        (tmp_path, fsutil.NOT_REGULAR),
        (Path("/dev/zero"), fsutil.NOT_REGULAR),
        (big, fsutil.TOO_BIG),
    ]
    for path, kind in cases:
        with pytest.raises(FsError) as caught:
            fsutil.read_limited(path, 1024, follow_symlinks=False)
        assert caught.value.kind == kind, path
    assert caught.value.size == 10**12
    with pytest.raises(FsError) as caught:
        fsutil.read_limited(tmp_path / "missing" / "x")
    assert caught.value.kind == fsutil.MISSING and caught.value.reason == "No such file or directory"


def test_a_file_that_says_size_zero_is_bounded_while_read() -> None:
    """/proc files report size 0; one longer than the limit is refused, not read whole."""
    whole = fsutil.read_limited("/proc/self/maps", 1 << 20)
    assert len(whole) > 100
    with pytest.raises(FsError, match="more than 100 bytes") as caught:
        fsutil.read_limited("/proc/self/maps", 100)
    assert caught.value.kind == fsutil.GREW


def test_read_relative_to_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"ok")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    os.mkfifo(tmp_path / "fifo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fsutil.read_limited("f", 10, follow_symlinks=False, dir_fd=fd) == b"ok"
        with pytest.raises(FsError, match="l: is a symlink"):
            fsutil.read_limited("l", 10, follow_symlinks=False, dir_fd=fd)
        with pytest.raises(FsError, match="fifo: not a regular file"):  # and the open did not hang
            fsutil.read_limited("fifo", 10, follow_symlinks=False, dir_fd=fd)
    finally:
        os.close(fd)


def test_read_beneath_follows_no_symlink_below_its_base(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"ok")
    assert fsutil.read_beneath(tmp_path, ["d", "f"], 10) == b"ok"
    (tmp_path / "dl").symlink_to(tmp_path / "d")
    with pytest.raises(FsError) as caught:
        fsutil.read_beneath(tmp_path, ["dl", "f"], 10)
    assert caught.value.kind == fsutil.SYMLINK
    (tmp_path / "d" / "fl").symlink_to("/etc/passwd")
    with pytest.raises(FsError) as caught:
        fsutil.read_beneath(tmp_path, ["d", "fl"], 1 << 20)
    assert caught.value.kind == fsutil.SYMLINK
    # The base is the caller's own choice (a DaemonSet mounts the host's /run somewhere): followed.
    (tmp_path / "base").symlink_to(tmp_path / "d")
    assert fsutil.read_beneath(tmp_path / "base", ["f"], 10) == b"ok"


@pytest.mark.parametrize(
    ("parts", "kind"),
    [
        ([], fsutil.NOT_REGULAR),
        (["missing", "x"], fsutil.MISSING),
        (["d"], fsutil.NOT_REGULAR),  # a folder is not a file
        (["d", "f", "x"], fsutil.OPEN),  # a file is not a folder
        (["..", "x"], fsutil.MISSING),  # a name walks where it says; nothing in the name is special
        (["d", "big"], fsutil.TOO_BIG),
    ],
)
def test_read_beneath_refusals(tmp_path: Path, parts: list[str], kind: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"ok")
    (tmp_path / "d" / "big").write_bytes(b"x" * 11)
    with pytest.raises(FsError) as caught:
        fsutil.read_beneath(tmp_path, parts, 10)
    assert caught.value.kind == kind


def test_open_dir_beneath(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.close(fsutil.open_dir_beneath(tmp_path, ["a", "b"]))
    os.close(fsutil.open_dir_beneath(tmp_path, []))
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(FsError, match="cannot open as a folder") as caught:
        fsutil.open_dir_beneath(tmp_path, ["link", "b"])
    assert caught.value.kind == fsutil.SYMLINK
    with pytest.raises(FsError, match="no such folder"):
        fsutil.open_dir_beneath(tmp_path / "missing", [])


@pytest.mark.parametrize("name", ["€" * 80 + ".json", "x" * 255, "é" * 127], ids=["euro", "ascii", "e-acute"])
def test_a_name_that_fits_name_max_is_written(tmp_path: Path, name: str) -> None:
    """The temporary beside it is short whatever the name is (it once grew with the name, past
    NAME_MAX for names of 241 bytes and more: "File name too long")."""
    fsutil.write_atomic(tmp_path / name, "{}")
    assert (tmp_path / name).read_text() == "{}"
    assert leftovers(tmp_path) == []
