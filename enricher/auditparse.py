"""Audit records out of log lines: envelopes, headers and fields. Pure: no I/O.

A record is found by its `type=` token wherever the line carries it, so one parser serves every source:

- auditd's audit.log, RAW (`type=SECCOMP msg=audit(1613596317.899:6461): auid=...`) and ENRICHED (the
  same, then 0x1D and interpreted UPPERCASE fields, which are dropped: auditd 3.0.9 names the syscall
  for the wrong architecture). When a copy lost the 0x1D (`code=0x7ffc0000AUID="unset"`), the glued
  UPPERCASE field is cut off the value it sticks to; rsyslog's escaped `#035` counts as the 0x1D where
  the record's structure can put it (before an UPPERCASE field, outside quoted values: a process names
  itself what it likes);
- `node=NAME type=...` prefixes (auditd `name_format`, audisp forwarding);
- syslog and kern.log lines: RFC 3164 (`Jul  8 10:31:23 host kernel: [  270.85] audit: type=1326
  audit(...)`), RFC 3339 / 5424 envelopes, `<PRI>` prefixes, printk `[uptime]` and caller ids
  (`[T1234]`), `audisp-syslog: type=SECCOMP msg=audit(...)`, old kernels without `audit:`;
- /dev/kmsg records (`5,347,501728022,-;audit: type=1326 audit(...)`); their continuation lines start
  with a space and carry no `type=`, so they fall out as non-audit lines;
- the audit netlink payload (`audit(...): body`, the type given apart by the netlink header):
  `parse_netlink`.

Values: `"quoted"`, `'single quoted'` (a USER record's `msg='...'` stays one opaque value), unquoted,
hex-encoded (either case) for the keys the kernel writes as untrusted strings, `(null)` and `?` (dropped);
an unquoted value runs on over following words that hold no `=` (`subj==cri-containerd.apparmor.d
(enforce)`). The first occurrence of a key wins. One record per line: a line that a log shipper joined
from several records is read as its first record.

Bounds, so a hostile or huge line costs linear time and bounded memory: the record body parsed is at
most MAX_BODY bytes (the kernel's own records are under 9 KiB), a value keeps at most MAX_VALUE
characters, a record at most MAX_FIELDS fields. The field scanner is one regular expression that tries
a key only where a word starts and never backtracks across words, so its time is linear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

MAX_BODY = 64 * 1024
MAX_VALUE = 4096
MAX_FIELDS = 128
# The longest type token worth a look ("APPARMOR_ALLOWED", "UNKNOWN[1326]"); a longer one is garbage.
MAX_TYPE_TOKEN = 32
# How much of a line before its record is read as an envelope (syslog header, node= prefix).
MAX_PREFIX = 1024

# What a record does in an event.
MAIN = "main"  # becomes an event: SECCOMP, AVC, APPARMOR*
COMPANION = "companion"  # joined into its event: SYSCALL, PROCTITLE, EXECVE, CWD, PATH
END = "end"  # EOE: the event is complete


@dataclass(frozen=True, slots=True)
class RecordType:
    name: str  # as auditd names it: "SECCOMP", "AVC", "APPARMOR_DENIED"
    number: int  # the kernel's type number (uapi linux/audit.h; AppArmor's from libaudit.h)
    role: str  # MAIN, COMPANION or END


_HANDLED = (
    RecordType("SYSCALL", 1300, COMPANION),
    RecordType("PATH", 1302, COMPANION),
    RecordType("CWD", 1307, COMPANION),
    RecordType("EXECVE", 1309, COMPANION),
    RecordType("EOE", 1320, END),
    RecordType("SECCOMP", 1326, MAIN),
    RecordType("PROCTITLE", 1327, COMPANION),
    RecordType("AVC", 1400, MAIN),
    # Mainline kernels log AppArmor as AVC (1400); the 1500s come from older kernels and userspace.
    RecordType("APPARMOR", 1500, MAIN),
    RecordType("APPARMOR_AUDIT", 1501, MAIN),
    RecordType("APPARMOR_ALLOWED", 1502, MAIN),
    RecordType("APPARMOR_DENIED", 1503, MAIN),
    RecordType("APPARMOR_HINT", 1504, MAIN),
    RecordType("APPARMOR_STATUS", 1505, MAIN),
    RecordType("APPARMOR_ERROR", 1506, MAIN),
    RecordType("APPARMOR_KILL", 1507, MAIN),
)

BY_NUMBER: dict[int, RecordType] = {t.number: t for t in _HANDLED}
BY_NAME: dict[str, RecordType] = {t.name: t for t in _HANDLED}
# Both spellings a type token comes in: auditd's name, the kernel's number (printk, kmsg).
BY_TOKEN: dict[bytes, RecordType] = {t.name.encode(): t for t in _HANDLED} | {
    str(t.number).encode(): t for t in _HANDLED
}


class Record(NamedTuple):
    # A named tuple rather than a frozen dataclass: one is made for every record parsed, and a tuple is
    # built five times faster.
    rtype: RecordType
    audit_id: str  # "1613596317.899:6461", as written in audit(...)
    timestamp: float
    node: str | None  # from a node= prefix
    host: str | None  # from a syslog envelope
    fields: dict[str, str]  # decoded values in record order, first occurrence of a key
    truncated: bool  # the body was longer than MAX_BODY and was cut

    @property
    def key(self) -> tuple[str, str]:
        """What the records of one event share: their origin and audit(time:serial)."""
        return (self.node or self.host or "", self.audit_id)


def find_type(line: bytes) -> tuple[int, int]:
    """(index of `type=`, end of the type token), or (-1, -1) when the line holds no record.

    The cheap first look every line gets: two C-level scans, no decoding, no splitting.
    """
    at = line.find(b"type=")
    if at < 0:
        return -1, -1
    start = at + 5
    end = line.find(b" ", start, start + MAX_TYPE_TOKEN + 1)
    if end < 0:
        end = min(len(line), start + MAX_TYPE_TOKEN + 1)
    return at, end


def record_type(token: bytes) -> RecordType | None:
    """The handled type a `type=` token names, or None."""
    rtype = BY_TOKEN.get(token)
    if rtype is None and token.startswith(b"UNKNOWN[") and token.endswith(b"]"):
        # An auditd older than the kernel writes the number it has no name for.
        number = token[8:-1]
        if number.isdigit() and len(number) <= 5:
            rtype = BY_NUMBER.get(int(number))
    return rtype


# ` msg=audit(1613596317.899:6461): ` after the type token (` audit(...): ` in printk and netlink).
HEADER = re.compile(rb" {0,16}(?:msg=)?audit\(((\d{1,12}\.\d{1,9}):\d{1,10})\): ?")


def parse_header(buf: bytes, at: int) -> tuple[str, float, int] | None:
    """Read ` msg=audit(1613596317.899:6461): ` (or `audit(...): `) from `at`.

    Returns (audit id, timestamp, start of the body), or None when the header is missing or malformed
    (ausearch -i's local-time `audit(01/14/22 15:39:20.823:64) :` included: it cannot be placed in time).
    """
    match = HEADER.match(buf, at)
    if match is None:
        return None
    return match[1].decode("ascii"), float(match[2]), match.end()


def parse_record(line: bytes, type_at: int, token_end: int, rtype: RecordType) -> Record | None:
    """The record of a line whose type token find_type located; None when its header is malformed."""
    header = parse_header(line, token_end)
    if header is None:
        return None
    audit_id, timestamp, body_at = header
    node, host = envelope(line[max(0, type_at - MAX_PREFIX) : type_at]) if type_at else (None, None)
    return record_from(rtype, line, body_at, audit_id=audit_id, timestamp=timestamp, node=node, host=host)


def parse_line(line: bytes) -> Record | None:
    """The handled record a line holds (any role), or None: no record, an unhandled type, malformed."""
    type_at, token_end = find_type(line)
    if type_at < 0:
        return None
    rtype = record_type(line[type_at + 5 : token_end].rstrip(b"\r\n"))
    if rtype is None:
        return None
    return parse_record(line, type_at, token_end, rtype)


def parse_netlink(type_number: int, payload: bytes) -> Record | None:
    """A record from the audit netlink socket: the type from the message header, the payload
    `audit(1613596317.899:6461): auid=...`. None for an unhandled type or a malformed payload."""
    rtype = BY_NUMBER.get(type_number)
    if rtype is None:
        return None
    header = parse_header(payload, 0)
    if header is None:
        return None
    audit_id, timestamp, body_at = header
    return record_from(rtype, payload, body_at, audit_id=audit_id, timestamp=timestamp)


def record_from(
    rtype: RecordType, buf: bytes, body_at: int, *, audit_id: str, timestamp: float,
    node: str | None = None, host: str | None = None,
) -> Record:
    """The record whose body starts at `body_at` in `buf` (after parse_header)."""
    return record_at(rtype, buf, body_at, audit_id, timestamp, node, host)


def record_at(
    rtype: RecordType, buf: bytes, body_at: int, audit_id: str, timestamp: float, node: str | None,
    host: str | None,
) -> Record:
    """record_from() with positional arguments, for the assembler's hot path."""
    end = body_at + MAX_BODY
    separator = buf.find(b"\x1d", body_at, end)  # ENRICHED: what follows is auditd's interpretation
    if separator < 0 and host is not None:
        # rsyslog escapes control characters on receive: through syslog the 0x1D arrives as `#035`.
        separator = _escaped_separator(buf, body_at, end)
    truncated = False
    if separator >= 0:
        raw = buf[body_at:separator]
    else:
        raw = buf[body_at:end]
        # Beyond the cut there is more than a line end: the record was longer than we read.
        truncated = len(buf) > end and bool(buf[end : end + 2].strip(b"\r\n\x00"))
    if raw[-1:] in _TRAILERS:
        raw = raw.rstrip(b"\r\n\x00")
    body = raw.decode("utf-8", "backslashreplace")
    number = rtype.number
    if number == 1326:
        fields = _seccomp_fields(body)
    elif number == 1300:
        fields = _syscall_fields(body)
    elif number == 1400:
        fields = _avc_fields(body)
    else:
        fields = parse_fields(body)
    if not fields and body.strip():
        # Old AppArmor and other free-text bodies ("REJECTING r access to /bin/df ...").
        fields = {"message": body.strip()[:MAX_VALUE]}
    return Record(rtype, audit_id, timestamp, node, host, fields, truncated)


_TRAILERS = (b"\r", b"\n", b"\x00")
_QUOTE_OPEN = re.compile(rb"=[\"']")


def _escaped_separator(buf: bytes, start: int, end: int) -> int:
    """Where rsyslog's `#035` (auditd's 0x1D) ends the record's own fields, or -1.

    Only where the record's structure can put it: followed by an UPPERCASE field name and outside a
    quoted value. A process chooses its own name (prctl) and path, which the kernel writes quoted, so
    `comm="x#035Zhide"` is a value, not the end of the record. One pass: quotes are skipped once.
    """
    at = start
    while True:
        found = buf.find(b"#035", at, end)
        if found < 0:
            return -1
        quote = _QUOTE_OPEN.search(buf, at, found)
        if quote is not None:
            close = buf.find(buf[quote.end() - 1 : quote.end()], quote.end(), end)
            if close < 0:
                return -1  # an unterminated quote runs to the end of the record
            at = close + 1
            continue
        if buf[found + 4 : found + 5].isupper():
            return found
        at = found + 4


# key=value, where the key starts a word (or follows a closing quote, where a lost 0x1D glued the next
# field on) and a value is "quoted", 'quoted' (an unterminated quote runs to the end), or unquoted with
# the following words that hold no `=`. Linear: a key is tried only where a word starts and fails within
# its word; a value never backtracks (an empty continuation ends it). No possessive quantifiers: 3.11's
# mishandle one followed by a lookahead inside a repeated group.
_FIELD = re.compile(r"""(?<![^\s"'])([^\s="']+)=(?:"([^"]*)"?|'([^']*)'?|(\S*(?:\s+[^\s="']+(?=\s|$))*))""")
# An enriched UPPERCASE field glued to a value when the 0x1D was lost: `0x7ffc0000AUID=`, `(null)ARCH=`.
# Bounded repetition keeps the search linear on a long upper case value.
_GLUED = re.compile(r"[A-Z][A-Z0-9_]{0,15}=")
_HEX = re.compile(r"[0-9A-Fa-f]+")
# Keys whose values the kernel writes with audit_log_untrustedstring(): quoted, or hex when the string
# holds a space, a quote, a control or a non-ASCII byte.
_HEX_KEYS = frozenset({
    "comm", "exe", "name", "name2", "path", "cwd", "proctitle", "profile", "target", "peer",
    "peer_label", "label", "cmd", "key", "data", "ocomm", "root_dir", "srcname", "fs", "watch",
})


# What an event takes from its SYSCALL companion: scanning for these keys only halves the cost of the
# record that comes with nearly every event.
SYSCALL_KEYS = ("arch", "syscall", "success", "exit", "ppid", "pid", "auid", "uid", "tty", "ses",
                "comm", "exe", "subj", "key")
_SYSCALL_FIELD = re.compile(
    r"""(?<![^\s"'])(""" + "|".join(SYSCALL_KEYS)
    + r""")=(?:"([^"]*)"?|'([^']*)'?|(\S*(?:\s+[^\s="']+(?=\s|$))*))"""
)


def parse_fields(body: str, pattern: re.Pattern[str] = _FIELD) -> dict[str, str]:
    """The key=value fields of a record body, decoded, first occurrence of a key kept."""
    fields: dict[str, str] = {}
    for key, dquoted, squoted, bare in pattern.findall(body):
        if key in fields:
            continue
        if bare:
            # The common unquoted value (a number, a context) is kept as it is; the rest goes the
            # long way: glued fields, (null) and ?, hex, upper case keys.
            if (
                "=" in bare or bare[0] == "(" or bare == "?" or key.isupper()
                or ((key in _HEX_KEYS or key[0] == "a") and _HEX.fullmatch(bare) is not None)
            ):
                value = _bare_value(key, bare)
                if value is None:
                    continue
                fields[key] = value
            else:
                fields[key] = bare[:MAX_VALUE]
        elif not key.isupper():
            fields[key] = (dquoted or squoted)[:MAX_VALUE]
        if len(fields) >= MAX_FIELDS:
            break
    return fields


# The kernel's SECCOMP record (audit_seccomp(), kernel/auditsc.c since 4.14): one anchored match instead
# of a scan per field. Anything else (older kernels, a hostile line) takes the generic way.
_SECCOMP = re.compile(
    r"auid=(\d+) uid=(\d+) gid=(\d+) ses=(\d+)(?: subj=([^ ]*(?: [^ =]+)*))? pid=(\d+)"
    r' comm=(?:"([^"]*)"|([0-9A-F]+)|\(null\)) exe=(?:"([^"]*)"|([0-9A-F]+)|\(null\))'
    r" sig=(\d+) arch=([0-9a-f]{1,8}) syscall=(\d+) compat=(\d+) ip=(0x[0-9a-f]+) code=(0x[0-9a-f]{1,8})",
    re.ASCII,  # \d is 0-9 only
)


def _seccomp_fields(body: str) -> dict[str, str]:
    match = _SECCOMP.match(body)
    if match is None:
        return parse_fields(body)
    end = match.end()
    if end < len(body):
        rest = body[end:]
        if rest.strip() and _GLUED.match(rest) is None:
            return parse_fields(body)  # a field we do not know follows: keep it, the generic way
    (auid, uid, gid, ses, subj, pid, comm, comm_hex, exe, exe_hex, sig, arch, syscall, compat, ip,
     code) = match.groups()
    # In the record's order, as the generic parser would give them.
    fields = {"auid": auid, "uid": uid, "gid": gid, "ses": ses}
    if subj is not None and subj != "?":
        fields["subj"] = subj
    fields["pid"] = pid
    if comm is not None:
        fields["comm"] = comm
    elif comm_hex is not None:
        fields["comm"] = _unhex(comm_hex)
    if exe is not None:
        fields["exe"] = exe
    elif exe_hex is not None:
        fields["exe"] = _unhex(exe_hex)
    fields["sig"] = sig
    fields["arch"] = arch
    fields["syscall"] = syscall
    fields["compat"] = compat
    fields["ip"] = ip
    fields["code"] = code
    return fields


# The kernel's SYSCALL record (audit_log_exit()), for the fields an event takes from it.
_SYSCALL = re.compile(
    r"arch=([0-9a-f]{1,8}) syscall=(\d+)(?: success=(\w+) exit=(-?\d+))? a0=\w+ a1=\w+ a2=\w+ a3=\w+"
    r" items=\d+ ppid=(\d+) pid=(\d+) auid=(\d+) uid=(\d+) gid=\d+ euid=\d+ suid=\d+ fsuid=\d+"
    r" egid=\d+ sgid=\d+ fsgid=\d+ tty=(\S+) ses=(\d+)"
    r' comm=(?:"([^"]*)"|([0-9A-F]+)|\(null\)) exe=(?:"([^"]*)"|([0-9A-F]+)|\(null\))'
    r'(?: subj=([^ ]*(?: [^ =]+)*))? key=(?:"([^"]*)"|([0-9A-F]+)|\(null\))',
    re.ASCII,
)


def _syscall_fields(body: str) -> dict[str, str]:
    match = _SYSCALL.match(body)
    if match is None:
        return parse_fields(body, _SYSCALL_FIELD)
    (arch, syscall, success, exit_, ppid, pid, auid, uid, tty, ses,
     comm, comm_hex, exe, exe_hex, subj, key, key_hex) = match.groups()
    fields = {"arch": arch, "syscall": syscall}
    if success is not None:
        fields["success"] = success
        fields["exit"] = exit_
    fields.update(ppid=ppid, pid=pid, auid=auid, uid=uid, tty=tty, ses=ses)
    if comm is not None or comm_hex is not None:
        fields["comm"] = comm if comm is not None else _unhex(comm_hex)
    if exe is not None or exe_hex is not None:
        fields["exe"] = exe if exe is not None else _unhex(exe_hex)
    if subj is not None and subj != "?":
        fields["subj"] = subj
    if key is not None or key_hex is not None:
        fields["key"] = key if key is not None else _unhex(key_hex)
    return fields


def _unhex(value: str) -> str:
    if len(value) % 2:
        return value[:MAX_VALUE]
    return bytes.fromhex(value).decode("utf-8", "backslashreplace")[:MAX_VALUE]


unhex = _unhex  # a hex-encoded value (comm, exe...) decoded, as the parser decodes it


def _bare_value(key: str, raw: str) -> str | None:
    if key.isupper():
        return None  # auditd's interpreted copy (ENRICHED format whose 0x1D was lost)
    if "=" in raw:
        glued = _GLUED.search(raw, 1)
        if glued is not None:
            raw = raw[: glued.start()]
    if raw in ("(null)", "?"):
        return None
    if (key in _HEX_KEYS or is_argument(key)) and len(raw) % 2 == 0 and _HEX.fullmatch(raw):
        text = bytes.fromhex(raw).decode("utf-8", "backslashreplace")
        if key == "proctitle":
            # argv is NUL separated; the kernel keeps at most 128 bytes of it.
            text = text.replace("\x00", " ").rstrip(" ")
        return text[:MAX_VALUE]
    return raw[:MAX_VALUE]


def is_argument(key: str) -> bool:
    """EXECVE's a0, a1, ... (not the a1[0] chunks of a split argument, nor a1_len)."""
    return len(key) > 1 and key[0] == "a" and key[1:].isdigit()


def is_hex(value: str) -> bool:
    return _HEX.fullmatch(value) is not None


def _avc_fields(body: str) -> dict[str, str]:
    """An AVC body: SELinux's `avc:  denied  { read write } for  pid=...` or AppArmor's key=values."""
    text = body.lstrip()
    if not text.startswith("avc:"):
        return parse_fields(body)
    rest = text[4:].lstrip()
    verdict, _, rest = rest.partition(" ")
    fields: dict[str, str] = {"avc": verdict[:32]}
    open_at = rest.find("{")
    close = rest.find("}", open_at + 1) if open_at >= 0 else -1
    if open_at >= 0 and close > open_at:
        fields["perm"] = " ".join(rest[open_at + 1 : close].split())[:MAX_VALUE]
        rest = rest[close + 1 :]
    rest = rest.lstrip()
    if rest.startswith("for "):
        rest = rest[4:]
    for key, value in parse_fields(rest).items():
        fields.setdefault(key, value)
    return fields


_MONTHS = frozenset(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
)
_HOSTNAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,253}")


def envelope(prefix: bytes) -> tuple[str | None, str | None]:
    """(node, host) from what precedes a record on its line: a `node=` prefix, a syslog header.

    A kmsg prefix, a dmesg `[uptime]`, a grep `file:` prefix name no host.
    """
    if not prefix:
        return None, None
    node = None
    at = prefix.rfind(b"node=")
    if at >= 0 and (at == 0 or prefix[at - 1 : at] in b" :"):
        name = prefix[at + 5 :].strip()
        if _HOSTNAME.fullmatch(name):
            node = name.decode("ascii")
        prefix = prefix[:at]
    return node, _syslog_host(prefix)


def _syslog_host(prefix: bytes) -> str | None:
    if prefix[:1] == b"<":
        close = prefix.find(b">", 1, 5)
        if close > 1 and prefix[1:close].isdigit():
            prefix = prefix[close + 1 :]
    words = prefix.split(None, 4)
    if len(words) < 2:
        return None
    first = words[0]
    if first == b"1" and len(words) >= 3:
        host = words[2]  # RFC 5424: VERSION TIMESTAMP HOSTNAME APP-NAME ...
    elif first in _MONTHS and len(words) >= 4:
        host = words[3]  # RFC 3164: Mmm dd hh:mm:ss HOSTNAME TAG
    elif len(first) >= 10 and first[4:5] == b"-" and first[:4].isdigit():
        host = words[1]  # RFC 3339 timestamp HOSTNAME TAG (rsyslog's high-precision format)
    else:
        return None
    if host.endswith(b":") or not _HOSTNAME.fullmatch(host):
        return None  # a tag (`kern.notice:`), not a host
    return host.decode("ascii")


# seccomp(2): SECCOMP_RET_ACTION_FULL masks the action; SECCOMP_RET_DATA is the errno for RET_ERRNO.
SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_DATA = 0x0000FFFF
SECCOMP_ACTIONS: dict[int, str] = {
    0x80000000: "kill_process",
    0x00000000: "kill_thread",
    0x00030000: "trap",
    0x00050000: "errno",
    0x7FC00000: "user_notif",
    0x7FF00000: "trace",
    0x7FFC0000: "log",
    0x7FFF0000: "allow",
}
# The kernel prints code=0x%x: lower case, at most 8 digits. An enriched field glued on when the 0x1D was
# lost (`0x0AUID=`, `0x7ffc0000AUID=`) is not part of it: its name is upper case and ends with `=`.
_CODE = re.compile(r"0x([0-9a-fA-F]{1,8})(?![0-9a-fA-F]*[G-Z_=])|0x([0-9a-f]{1,8})")


@lru_cache(maxsize=256)
def seccomp_action(code: str | None) -> tuple[str | None, int | None]:
    """(action, errno) from a SECCOMP record's code=; (None, None) when it is missing or unknown.

    The errno is there only when the record carries it (kernels before 4.14), else None.
    """
    if not code:
        return None, None
    match = _CODE.match(code)
    if match is None:
        return None, None
    value = int(match[1] or match[2], 16)
    action = SECCOMP_ACTIONS.get(value & SECCOMP_RET_ACTION_FULL)
    if action == "errno" and value & SECCOMP_RET_DATA:
        # Kernels before 4.14 logged the filter's whole return value; since then code= is the action
        # alone (measured here on 6.18: ERRNO(13) logs code=0x50000), and the errno is unknown.
        return action, value & SECCOMP_RET_DATA
    return action, None


def uint(value: str | None, limit: int = 0xFFFFFFFF) -> int | None:
    """A decimal field as an int in 0..limit, else None (negative, huge, not a number)."""
    if not value or len(value) > 10 or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number <= limit else None
