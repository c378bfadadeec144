"""The hook's handover to the resident recorder: the request it sends (bounded, only the annotations
that matter), the answers it accepts (hostile ones included), the config key naming the socket, and
what happens when nothing listens."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from syscribe.hooks import handover
from syscribe.hooks.annotation import KEY
from syscribe.hooks.config import DEFAULT_RECORDER_SOCKET, ConfigError, parse_config

STATE = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 42, "bundle": "/b"}


def test_request_keeps_only_what_the_recorder_needs() -> None:
    annotations = {
        KEY: "of:/p/a.json",
        f"{KEY}/other": "of:/p/b.json",
        "io.kubernetes.pod.name": "web",
        "io.kubernetes.container.name": "nginx",
        **{f"noise/{i}": "x" * 1000 for i in range(5000)},
    }
    doc = json.loads(handover.request_bytes(STATE, annotations, KEY, "runc", 1.5))
    assert doc["v"] == handover.VERSION and doc["op"] == "record"
    assert doc["state"]["annotations"] == {
        KEY: "of:/p/a.json", "io.kubernetes.pod.name": "web", "io.kubernetes.container.name": "nginx"
    }
    assert doc["state"]["pid"] == 42 and doc["runtime"] == "runc" and doc["started"] == 1.5


def test_request_too_large_is_refused_before_sending() -> None:
    huge = {"ociVersion": "1", "id": "c", "status": "creating", "pid": 1, "bundle": "/" + "b" * 200_000}
    with pytest.raises(ValueError, match="at most"):
        handover.request_bytes(huge, {KEY: "of:/p/a.json"}, KEY, None, 0.0)


@pytest.mark.parametrize(
    ("data", "ok", "message"),
    [
        (b'{"ok": true, "slot": 3}', True, ""),
        (b'{"ok": false, "error": "no"}', False, "no"),
        (b'{"ok": false}', False, "refused without a reason"),
        (b'{"ok": false, "error": 5}', False, "refused without a reason"),
        (b'{"ok": "yes"}', False, "has no ok"),
        (b"[1]", False, "has no ok"),
        (b"\xff\xfe", False, "not JSON"),
        (b"{" * 100_000, False, "not JSON"),
        (b"", False, "not JSON"),
    ],
)
def test_answers_hostile_and_broken(data: bytes, ok: bool, message: str) -> None:
    answer = handover.parse_answer(data)
    assert answer.ok is ok
    assert message in answer.message


def test_answer_slot_must_be_an_integer() -> None:
    assert handover.parse_answer(b'{"ok": true, "slot": true}').slot is None
    assert handover.parse_answer(b'{"ok": true, "slot": 7}').slot == 7


def test_answer_bytes_round_trip_and_cut() -> None:
    assert handover.parse_answer(handover.answer_bytes(True, slot=5)).slot == 5
    long = handover.parse_answer(handover.answer_bytes(False, "x" * 10_000))
    assert not long.ok and len(long.message) == 2000


def test_nothing_listening_means_not_running(tmp_path: Path) -> None:
    assert handover.hand_over(str(tmp_path / "none.sock"), b"{}", [], 1) == handover.NOT_RUNNING
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on (a recorder that died)
    assert handover.hand_over(str(stale), b"{}", [], 1) == handover.NOT_RUNNING
    assert handover.hand_over(str(tmp_path / "file" / "x.sock"), b"{}", [], 1) == handover.NOT_RUNNING


def test_a_recorder_that_closes_without_answering_is_a_failure_not_a_fallback(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(1)
    client_done: list[object] = []
    import threading

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(1000)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    client_done.append(handover.hand_over(path, b"{}", [], 30))
    t.join()
    server.close()
    answer = client_done[0]
    assert isinstance(answer, handover.Answer) and not answer.ok
    assert "without answering" in answer.message


def test_config_names_the_socket() -> None:
    assert parse_config(b"{}").recorder_socket == DEFAULT_RECORDER_SOCKET
    assert parse_config(b'{"recorderSocket": null}').recorder_socket is None
    assert parse_config(b'{"recorderSocket": "/run/x.sock"}').recorder_socket == "/run/x.sock"


@pytest.mark.parametrize(
    "value",
    ['"relative.sock"', '"/run/dir/"', "5", "true", '"/run/\\u0000x"', '"/' + "a" * 200 + '"', "[]"],
)
def test_config_refuses_bad_socket_paths(value: str) -> None:
    with pytest.raises(ConfigError, match="recorderSocket"):
        parse_config(f'{{"recorderSocket": {value}}}'.encode())
