"""Where the enricher stopped: a small JSON file written atomically, read back on restart.

A checkpoint says three things:
- where to resume reading (a file's device, inode, offset and a hash of the line that ends there; or
  the /dev/kmsg sequence number of the next record and the boot it belongs to);
- which events were already written although some of their lines lie after that point (events are
  written in the order of their first record, so an event can be written while an earlier one is still
  held); each carries how many lines past the resume point it can be found at most, so that it is
  skipped when read again and forgotten once reading has passed that far;
- how long the output file was when the checkpoint was taken, so that lines written after it (by a
  run that was killed before its next checkpoint) are cut off and written again, once.

`encode`/`decode` are pure; `save`/`load` are the thin file shell.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from syscribe import fsutil

VERSION = 1
# The hash covers at most this many bytes of the line before the resume offset: enough to tell a
# rewritten file from the one we read, and a bounded read at restart whatever the line length.
TAIL_BYTES = 4096
# A checkpoint file bigger than this is not one of ours.
MAX_CHECKPOINT_BYTES = 16 * 1024 * 1024


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FileMark:
    path: str
    dev: int
    inode: int
    offset: int
    tail_hash: str  # tail_hash() of the line that ends at `offset`; "" at offset 0


@dataclass(frozen=True, slots=True)
class KmsgMark:
    boot_id: str
    next_seq: int  # resume at the first record whose sequence number is >= this


SourceMark = FileMark | KmsgMark


@dataclass(frozen=True, slots=True)
class OutputMark:
    path: str
    dev: int
    inode: int
    offset: int
    # tail_hash() of the output's line that ends at `offset` ("" at 0), so that a damaged offset is
    # caught before the output is cut to it; None in checkpoints written before it was kept.
    tail_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    source: str
    mark: SourceMark
    # (dedup key, lines past the resume point within which that event's records all lie)
    written: tuple[tuple[str, int], ...] = ()
    output: OutputMark | None = None


def tail_hash(line_tail: bytes) -> str:
    """The hash a FileMark carries for the line (without its newline) that ends at its offset."""
    if not line_tail:
        return ""
    return hashlib.blake2b(line_tail[-TAIL_BYTES:], digest_size=16).hexdigest()


def line_tail_before(window: bytes, at_file_start: bool) -> bytes | None:
    """The tail of the line ending just before the end of `window` (which must end with a newline).

    `window` is what lies before an offset in a file (at most TAIL_BYTES + 2 bytes, from the start of
    the file when `at_file_start`). None when the bytes there do not end a line.
    """
    if not window:
        return b"" if at_file_start else None
    if not window.endswith(b"\n"):
        return None
    body = window[:-1]
    cut = body.rfind(b"\n")
    if cut >= 0:
        return body[cut + 1 :][-TAIL_BYTES:]
    if at_file_start or len(body) > TAIL_BYTES:
        return body[-TAIL_BYTES:]
    return None


def _mark_to_json(mark: SourceMark) -> dict[str, Any]:
    if isinstance(mark, FileMark):
        return {
            "kind": "file",
            "path": mark.path,
            "dev": mark.dev,
            "inode": mark.inode,
            "offset": mark.offset,
            "tail_hash": mark.tail_hash,
        }
    return {"kind": "kmsg", "boot_id": mark.boot_id, "next_seq": mark.next_seq}


def encode(cp: Checkpoint) -> bytes:
    doc: dict[str, Any] = {
        "version": VERSION,
        "source": cp.source,
        "mark": _mark_to_json(cp.mark),
        "written": [[key, ahead] for key, ahead in cp.written],
    }
    if cp.output is not None:
        doc["output"] = {
            "path": cp.output.path,
            "dev": cp.output.dev,
            "inode": cp.output.inode,
            "offset": cp.output.offset,
        }
        if cp.output.tail_hash is not None:
            doc["output"]["tail_hash"] = cp.output.tail_hash
    return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)


def _int(doc: dict[str, Any], key: str, what: str) -> int:
    value = doc.get(key)
    # bool is an int in Python; a checkpoint never holds one where a number belongs.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**64:
        raise CheckpointError(f"{what}.{key} must be a non-negative integer, not {value!r}")
    return value


def _str(doc: dict[str, Any], key: str, what: str, limit: int = 4096) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise CheckpointError(f"{what}.{key} must be a string of at most {limit} characters")
    return value


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CheckpointError(f"{what} must be an object")
    return value


def decode(data: bytes) -> Checkpoint:
    """Parse a checkpoint file's bytes; CheckpointError says what is wrong with it."""
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint is {len(data)} bytes, more than any checkpoint this writes")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint is not JSON ({exc})") from None
    doc = _obj(raw, "checkpoint")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"checkpoint version {doc.get('version')!r} is not {VERSION}")
    source = _str(doc, "source", "checkpoint", 64)
    mdoc = _obj(doc.get("mark"), "checkpoint.mark")
    mark: SourceMark
    kind = mdoc.get("kind")
    if kind == "file":
        mark = FileMark(
            path=_str(mdoc, "path", "mark"),
            dev=_int(mdoc, "dev", "mark"),
            inode=_int(mdoc, "inode", "mark"),
            offset=_int(mdoc, "offset", "mark"),
            tail_hash=_str(mdoc, "tail_hash", "mark", 64),
        )
    elif kind == "kmsg":
        mark = KmsgMark(boot_id=_str(mdoc, "boot_id", "mark", 64), next_seq=_int(mdoc, "next_seq", "mark"))
    else:
        raise CheckpointError(f"checkpoint.mark.kind {kind!r} is neither 'file' nor 'kmsg'")
    written_raw = doc.get("written", [])
    if not isinstance(written_raw, list):
        raise CheckpointError("checkpoint.written must be a list")
    written: list[tuple[str, int]] = []
    for item in written_raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or len(item[0]) > 512
            or not isinstance(item[1], int)
            or isinstance(item[1], bool)
            or item[1] < 0
        ):
            raise CheckpointError(f"checkpoint.written holds {str(item)[:80]!r}, not [key, lines]")
        written.append((item[0], item[1]))
    output: OutputMark | None = None
    if doc.get("output") is not None:
        odoc = _obj(doc["output"], "checkpoint.output")
        output = OutputMark(
            path=_str(odoc, "path", "output"),
            dev=_int(odoc, "dev", "output"),
            inode=_int(odoc, "inode", "output"),
            offset=_int(odoc, "offset", "output"),
            tail_hash=_str(odoc, "tail_hash", "output", 64) if "tail_hash" in odoc else None,
        )
    return Checkpoint(source=source, mark=mark, written=tuple(written), output=output)


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at `path`, None when there is none yet. CheckpointError for a broken one."""
    try:
        data = fsutil.read_limited(path, MAX_CHECKPOINT_BYTES, follow_symlinks=False)
    except fsutil.FsError as exc:
        if exc.kind == fsutil.MISSING:
            return None
        if exc.kind in (fsutil.SYMLINK, fsutil.OPEN):
            raise CheckpointError(f"cannot open checkpoint {path}: {exc.reason}") from None
        if exc.kind == fsutil.NOT_REGULAR:
            raise CheckpointError(f"checkpoint {path} is not a regular file") from None
        if exc.kind in (fsutil.TOO_BIG, fsutil.GREW):
            raise CheckpointError(
                f"checkpoint {path}: checkpoint is {exc.size} bytes, more than any checkpoint this writes"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.reason}") from None
    try:
        return decode(data)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None


def save(path: Path, cp: Checkpoint, *, durable: bool = True) -> None:
    """Replace the checkpoint at `path` atomically (temp file + rename in the same directory).

    With `durable`, the data and the rename reach the disk before this returns, so that a power loss
    leaves the old or the new checkpoint, never a torn one. FsError (an OSError) says what failed.
    """
    fsutil.write_atomic(path, encode(cp), 0o600, sync=durable)
