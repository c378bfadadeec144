"""The netlink framing both readers share (enricher/nlmsg.py): well-formed, broken, hostile, huge."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syscribe.enricher import nlmsg
from syscribe.enricher.proctrack import parse
from syscribe.enricher.sources import parse_netlink_messages


def message(mtype: int, payload: bytes, port: int = 0, seq: int = 0) -> bytes:
    raw = nlmsg.header(len(payload), mtype, 0, seq, port) + payload
    return raw + b"\0" * (-len(raw) % 4)


def test_messages_back_to_back_with_padding() -> None:
    data = message(1326, b"audit(1.1:1): a=1", port=0, seq=7) + message(1300, b"x", port=5)
    messages, rest = nlmsg.walk(data)
    assert rest == 0
    assert [(m.type, m.port, m.seq, data[m.start : m.end]) for m in messages] == [
        (1326, 0, 7, b"audit(1.1:1): a=1"), (1300, 5, 0, b"x")]


def test_the_last_message_may_lack_its_padding() -> None:
    data = message(1326, b"abcde")
    messages, rest = nlmsg.walk(data[: 16 + 5])
    assert [data[m.start : m.end] for m in messages] == [b"abcde"] and rest == 0


def test_broken_headers_end_the_walk() -> None:
    good = message(1326, b"ok")
    for broken in (nlmsg.HEADER.pack(0, 1326, 0, 0, 0), nlmsg.HEADER.pack(15, 1326, 0, 0, 0),
                   nlmsg.HEADER.pack(1 << 31, 1326, 0, 0, 0)):
        messages, rest = nlmsg.walk(good + broken + good)
        assert len(messages) == 1 and rest == len(broken) + len(good)
    messages, rest = nlmsg.walk(good + b"\x01\x02\x03")  # a short tail
    assert len(messages) == 1 and rest == 3


def test_a_huge_datagram_of_tiny_messages() -> None:
    data = message(1320, b"") * 100_000
    messages, rest = nlmsg.walk(data)
    assert len(messages) == 100_000 and rest == 0 and all(m.start == m.end for m in messages[:10])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_framed_within_bounds(data: bytes) -> None:
    messages, rest = nlmsg.walk(data)
    assert 0 <= rest <= len(data)
    at = 0
    for m in messages:
        assert at <= m.start - nlmsg.HEADER.size and m.start <= m.end <= len(data)
        at = m.end
    # Both readers take the same frames.
    assert [(t, p) for t, p, _ in parse_netlink_messages(data)[0]] == [(m.type, m.port) for m in messages]
    parse(data)  # never raises
