"""OCI state parsing: what runc and crun really write, and garbage, huge and mistyped states."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syscribe.hooks.state import MAX_STATE_BYTES, StateError, parse_state

# Captured from this machine's runtimes at prestart (a hook that saved its stdin).
RUNC = (
    b'{"ociVersion":"1.0.2-dev","id":"hx-runc","status":"creating","pid":19511,"bundle":"/tmp/hx/b-runc",'
    b'"annotations":{"io.containers.trace-syscall":"of:/tmp/x.json"}}'
)
CRUN = (
    b'{"ociVersion":"1.0","id":"hx-crun","pid":19525,"root":"/tmp/hx/rootfs","bundle":"/tmp/hx/b-crun",'
    b'"status":"created","annotations":{"io.containers.trace-syscall":"of:/tmp/x.json"}}'
)


def doc(**changes: object) -> bytes:
    base = json.loads(RUNC)
    for key, value in changes.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return json.dumps(base).encode()


def test_runc_state() -> None:
    state = parse_state(RUNC)
    assert (state.id, state.status, state.pid, state.bundle, state.root) == (
        "hx-runc", "creating", 19511, "/tmp/hx/b-runc", None
    )
    assert dict(state.annotations) == {"io.containers.trace-syscall": "of:/tmp/x.json"}


def test_crun_state() -> None:
    state = parse_state(CRUN)
    assert (state.status, state.root, state.oci_version) == ("created", "/tmp/hx/rootfs", "1.0")


def test_annotations_are_optional_and_read_only() -> None:
    state = parse_state(doc(annotations=...))
    assert dict(state.annotations) == {}
    with pytest.raises(TypeError):
        state.annotations["x"] = "y"  # type: ignore[index]


def test_unknown_fields_are_ignored() -> None:
    assert parse_state(doc(future={"a": [1, 2]})).id == "hx-runc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no container state"),
        (b"   \n", "no container state"),
        (b"garbage", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "an array, expected a JSON object"),
        (b"null", "null, expected a JSON object"),
        (b'"x"', "a string, expected"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not valid JSON"),
        (b'{"id": "a", "id": "b"}', "appears twice"),
        (b'{"pid": NaN}', "not valid JSON|not a JSON number"),
        (b'{"pid": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_garbage(data: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        parse_state(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ...}, "no id"),
        ({"id": 5}, "id is a number, expected a string"),
        ({"id": ""}, "empty id"),
        ({"id": "a\nb"}, "control characters"),
        ({"id": "x" * 2000}, "at most 1024"),
        ({"pid": ...}, "no pid"),
        ({"pid": "19511"}, "pid is a string, expected an integer"),
        ({"pid": True}, "pid is a boolean"),
        ({"pid": 1.5}, "pid is a number, expected an integer"),
        ({"pid": 0}, "out of range"),
        ({"pid": -1}, "out of range"),
        ({"pid": 1 << 40}, "out of range"),
        ({"status": ...}, "no status"),
        ({"status": "running"}, "runs at prestart"),
        ({"status": "stopped"}, "runs at prestart"),
        ({"status": None}, "status is null"),
        ({"bundle": ["/x"]}, "bundle is an array"),
        ({"ociVersion": {}}, "ociVersion is an object"),
        ({"annotations": []}, "annotations are an array"),
        ({"annotations": "k=v"}, "annotations are a string"),
        ({"annotations": {"k": 1}}, "annotation 'k' is a number"),
        ({"annotations": {"k": None}}, "annotation 'k' is null"),
        ({"annotations": {"k": {"nested": "x"}}}, "annotation 'k' is an object"),
        ({"root": 7}, "root is a number"),
    ],
)
def test_wrong_types(changes: dict[str, object], message: str) -> None:
    with pytest.raises(StateError, match=message):
        parse_state(doc(**changes))


def test_huge_state_is_refused_before_parsing() -> None:
    big = doc(annotations={"k": "v" * MAX_STATE_BYTES})
    with pytest.raises(StateError, match="more than 1048576 are refused"):
        parse_state(big)


def test_many_annotations() -> None:
    with pytest.raises(StateError, match="annotations; more than"):
        parse_state(doc(annotations={f"k{i}": "" for i in range(20_000)}))


def test_messages_are_one_short_line() -> None:
    for data in (doc(annotations={"k" * 5000: 1}), doc(pid="p" * 5000), b"x" * 5000):
        with pytest.raises(StateError) as info:
            parse_state(data)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300


@given(st.binary(max_size=300))
def test_binary_never_crashes(data: bytes) -> None:
    with contextlib.suppress(StateError):
        parse_state(data)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                    max_leaves=20))
def test_any_json_never_crashes(value: object) -> None:
    with contextlib.suppress(StateError):
        parse_state(json.dumps(value).encode())
