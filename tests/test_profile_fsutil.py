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
from tests.support.prereq import require


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
    require("root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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


@pytest.mark.parametrize("name", ["€" * 80 + ".json", "x" * 255, "é" * 127], ids=["euro", "ascii", "e-acute"])
def test_a_name_that_fits_name_max_is_written(tmp_path: Path, name: str) -> None:
    """The temporary beside it is short whatever the name is (it once grew with the name, past
    NAME_MAX for names of 241 bytes and more: "File name too long")."""
    fsutil.write_atomic(tmp_path / name, "{}")
    assert (tmp_path / name).read_text() == "{}"
    assert leftovers(tmp_path) == []
