"""The hook's side of the resident recorder's socket (and the protocol both sides share).

One request per connection on a SOCK_SEQPACKET unix socket (message boundaries, and a pidfd passed
with SCM_RIGHTS): the hook sends a JSON object and the container's pidfd, the recorder answers one
JSON object. Stdlib only: this runs on every recorded container start.

  request:  {"v": 1, "op": "record", "state": {OCI state: id, pid, annotations (only those that
             matter), ...}, "runtime": "runc" | null, "started": <unix time>}   + SCM_RIGHTS [pidfd]
  answer:   {"ok": true, "slot": N} | {"ok": false, "error": "<one line>"}

`hand_over` says NOT_RUNNING when nothing listens at the path (no socket file, or a stale one): the
hook then starts its own tracer. Any answer, and a recorder that accepts but does not answer in time,
is final: the recording may have begun, so the hook must not start a second one.
"""

from __future__ import annotations

# The C module, not socket.py: importing that builds four IntEnums, about 6 ms of every recorded container
# start on this project's VM; the C socket has all the hand-over needs.
import _socket
import contextlib
import json
import sys
import time
from collections.abc import Mapping

from syscribe.hooks.annotation import CONTAINER_NAME_KEY, CONTAINER_TYPE_KEY, SANDBOX_ID_KEY
from syscribe.hooks.record import Record

VERSION = 1
MAX_MESSAGE = 128 * 1024
# The annotations the recorder needs beside the one that applies: names for the metadata, and the
# keys that decide whether the pod-wide key applies.
KEPT_ANNOTATIONS = (
    CONTAINER_NAME_KEY,
    CONTAINER_TYPE_KEY,
    SANDBOX_ID_KEY,
    "io.kubernetes.pod.name",
    "io.kubernetes.pod.namespace",
    "io.kubernetes.pod.uid",
)
NOT_RUNNING = "not-running"


class Answer(Record):  # not a dataclass: see syscribe.hooks.config.HookConfig
    ok: bool
    message: str  # the error, or "" when ok
    slot: int | None = None
    seconds: float = 0.0


def request_bytes(
    state: Mapping[str, object], annotations: Mapping[str, str], key: str, runtime: str | None, started: float
) -> bytes:
    """The request for a container whose annotation `key` applies; only the annotations that matter
    travel, so a pod with thousands of annotations still fits one message."""
    kept = {k: annotations[k] for k in (key, *KEPT_ANNOTATIONS) if k in annotations}
    doc = {
        "v": VERSION,
        "op": "record",
        "state": {**{k: v for k, v in state.items() if k != "annotations"}, "annotations": kept},
        "runtime": runtime,
        "started": started,
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"the request is {len(data)} bytes; at most {MAX_MESSAGE}")
    return data


def answer_bytes(ok: bool, message: str = "", slot: int | None = None) -> bytes:
    doc: dict[str, object] = {"ok": ok}
    if ok:
        doc["slot"] = slot
    else:
        doc["error"] = message[:2000]
    return json.dumps(doc, separators=(",", ":")).encode()


def parse_answer(data: bytes) -> Answer:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return Answer(False, "the resident recorder's answer is not JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        return Answer(False, "the resident recorder's answer has no ok")
    if doc["ok"]:
        slot = doc.get("slot")
        return Answer(True, "", slot if isinstance(slot, int) and not isinstance(slot, bool) else None)
    error = doc.get("error")
    return Answer(False, error if isinstance(error, str) and error else "refused without a reason")


def hand_over(path: str, request: bytes, fds: list[int], timeout: float) -> Answer | str:
    """Ask the recorder at `path`, passing `fds` (the pidfd); an Answer, or NOT_RUNNING when nothing
    listens there."""
    start = time.monotonic()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return NOT_RUNNING
        except TimeoutError:
            return Answer(False, f"the resident recorder at {path} did not accept within {timeout:g} s")
        except OSError as exc:
            return Answer(False, f"cannot reach the resident recorder at {path}: {exc.strerror}")
        try:
            # Refused at once (not root, busy): the send fails, the refusal waits to be read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _fd_array(fds))])
            remaining = max(0.001, timeout - (time.monotonic() - start))
            sock.settimeout(remaining)
            try:
                data = sock.recv(MAX_MESSAGE)
            except ConnectionResetError:
                # Refused before our request was read: the error is reported once, the refusal
                # still waits in the queue.
                data = sock.recv(MAX_MESSAGE)
        except TimeoutError:
            return Answer(
                False, f"the resident recorder at {path} did not answer within {timeout:g} s", None,
                time.monotonic() - start,
            )
        except OSError as exc:
            return Answer(False, f"the resident recorder at {path} failed: {exc.strerror}")
        if not data:
            return Answer(False, f"the resident recorder at {path} closed the connection without answering")
        answer = parse_answer(data)
        return Answer(answer.ok, answer.message, answer.slot, time.monotonic() - start)
    finally:
        sock.close()


def _fd_array(fds: list[int]) -> bytes:
    """SCM_RIGHTS data: the descriptors as C ints (what socket.send_fds packs with array("i"))."""
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
