"""A dump (profile + metadata) a reader can always check, with several writers at once and writers
that died: real processes on a real file system (tmp_path).

The rule readers follow (docs/hook.md): a dump is complete when the metadata's `profileSHA256` is the
SHA-256 of the profile file beside it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syscribe.hooks.output import (
    DIGEST_KEY,
    LEGACY_TEMP_AGE,
    dump_complete,
    open_dir,
    profile_digest,
    remove_leftovers,
    write_outputs,
)
from syscribe.hooks.paths import place
from tests.support.tmpfs import small_tmpfs

# One writer process: writes `count` dumps of its own to the same of:, as containers recorded by the
# pod-wide key do.
WRITER = """
import os, sys
from syscribe.hooks.output import open_dir, write_outputs
from syscribe.hooks.paths import place
root, path, who, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = place(path, [root])
fd = open_dir(p, create=True)
for i in range(count):
    body = '{"writer": "%s", "i": %d, "pad": "%s"}\\n' % (who, i, who * (1000 * (i % 7)))
    write_outputs(fd, p, body, {"containerID": who, "i": i})
"""

# Holds a temporary the way a writer does while it writes (named and locked), until killed.
HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "profiles"
    r.mkdir()
    return r


def read_dump(directory: Path, name: str) -> tuple[bytes, dict[str, object]]:
    profile = (directory / name).read_bytes()
    meta = json.loads((directory / (name.removesuffix(".json") + ".meta.json")).read_text())
    return profile, meta


def test_metadata_names_the_profile_it_describes(root: Path) -> None:
    p = place(str(root / "web.json"), [str(root)])
    fd = open_dir(p, create=True)
    try:
        write_outputs(fd, p, '{"a": 1}\n', {"containerID": "one"})
        profile, meta = read_dump(root, "web.json")
        assert meta[DIGEST_KEY] == profile_digest(profile) and dump_complete(profile, meta)
        # A profile replaced without its metadata (a writer killed between the two) is told apart.
        (root / "web.json").write_text('{"b": 2}\n')
        assert not dump_complete(*read_dump(root, "web.json"))
    finally:
        os.close(fd)


def test_concurrent_writers_of_one_of_leave_a_matching_pair(root: Path) -> None:
    """Six processes write the same of: 15 times each; every pair on disk afterwards matches and
    comes from one writer, and no temporary is left."""
    path = str(root / "shop" / "web-pod.json")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), path, who, "15"])
        for who in "abcdef"
    ]
    for proc in writers:
        assert proc.wait(timeout=120) == 0
    profile, meta = read_dump(root / "shop", "web-pod.json")
    assert dump_complete(profile, meta)
    assert json.loads(profile)["writer"] == meta["containerID"]
    assert sorted(os.listdir(root / "shop")) == ["web-pod.json", "web-pod.meta.json"]


def test_a_locked_directory_delays_the_write_boundedly(root: Path) -> None:
    """Anyone who can open the directory can flock it: the writer waits at most lock_seconds."""
    p = place(str(root / "web.json"), [str(root)])
    fd = open_dir(p, create=True)
    squatter = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(squatter, fcntl.LOCK_EX)
        write_outputs(fd, p, "{}\n", {}, lock_seconds=0.05)
        assert dump_complete(*read_dump(root, "web.json"))
    finally:
        os.close(squatter)
        os.close(fd)


@pytest.fixture
def holder(root: Path) -> Iterator[subprocess.Popen[str]]:
    """A live writer's temporary in `root`: `.syscribe-0123456789ab.tmp`, locked by a process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root / ".syscribe-0123456789ab.tmp")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "holding\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_temporaries_of_dead_writers_are_removed_at_the_next_write(
    root: Path, holder: subprocess.Popen[str]
) -> None:
    live = root / ".syscribe-0123456789ab.tmp"
    dead = root / ".syscribe-ba9876543210.tmp"
    dead.write_text('{"half')
    old_legacy = root / ".web.json.0123456789ab.tmp"  # fsutil's name, from an earlier hook
    old_legacy.write_text("{")
    aged = time.time() - LEGACY_TEMP_AGE - 60
    os.utime(old_legacy, (aged, aged))
    fresh_legacy = root / ".other.json.abcdefabcdef.tmp"  # maybe a writer at work: kept
    fresh_legacy.write_text("{")
    (root / "notes.tmp").write_text("not ours")
    (root / ".syscribe-aaaaaaaaaaaa.tmp").symlink_to("/etc/passwd")
    (root / ".syscribe-bbbbbbbbbbbb.tmp").mkdir()
    before = Path("/etc/passwd").read_bytes()

    p = place(str(root / "web.json"), [str(root)])
    fd = open_dir(p, create=True)
    try:
        write_outputs(fd, p, "{}\n", {})
        assert live.exists()  # its writer holds the lock
        assert not dead.exists() and not old_legacy.exists()
        assert fresh_legacy.exists() and (root / "notes.tmp").exists()
        assert (root / ".syscribe-aaaaaaaaaaaa.tmp").is_symlink()
        assert (root / ".syscribe-bbbbbbbbbbbb.tmp").is_dir()
        assert Path("/etc/passwd").read_bytes() == before

        holder.kill()  # SIGKILL: the writer dies with its temporary named
        holder.wait()
        assert live.exists()
        assert remove_leftovers(fd) == [live.name]
    finally:
        os.close(fd)
    assert dump_complete(*read_dump(root, "web.json"))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a disk that fills up."""
    with small_tmpfs(tmp_path / "small", "256k") as mount:
        yield mount


def test_a_full_disk_leaves_a_pair_a_reader_can_tell_apart(small_fs: Path) -> None:
    """The new profile fits, its metadata does not: the old metadata now sits beside the new profile,
    and its digest says they do not belong together. Nothing temporary is left."""
    p = place(str(small_fs / "web.json"), [str(small_fs)])
    fd = open_dir(p, create=True)
    try:
        write_outputs(fd, p, '{"run": 1}\n', {"run": 1})
        assert dump_complete(*read_dump(small_fs, "web.json"))
        st = os.statvfs(small_fs)
        free = st.f_bavail * st.f_frsize
        (small_fs / "filler").write_bytes(b"x" * (free - 3 * st.f_frsize))  # room for ~3 pages
        with pytest.raises(OSError, match="No space left"):
            write_outputs(fd, p, '{"run": 2}\n', {"run": 2, "pad": "y" * (8 * st.f_frsize)})
    finally:
        os.close(fd)
    profile, meta = read_dump(small_fs, "web.json")
    assert json.loads(profile) == {"run": 2} and meta["run"] == 1
    assert not dump_complete(profile, meta)
    assert sorted(os.listdir(small_fs)) == ["filler", "web.json", "web.meta.json"]
