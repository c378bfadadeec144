"""auditparse: envelopes, headers, fields and values; build_event: what a record means."""

from __future__ import annotations

import pytest

from syscribe import arch as archmod
from syscribe.arch import Arch
from syscribe.enricher import auditparse
from syscribe.enricher.auditparse import envelope, parse_fields, parse_line, parse_netlink, seccomp_action
from syscribe.enricher.events import AuditEvent, EventAssembler, build_event

# A SECCOMP record as this machine's kernel writes it (read from the audit netlink group, 6.18).
BODY = (
    b'auid=4294967295 uid=0 gid=0 ses=4294967295 pid=6514 comm="runc:[2:INIT]" exe="/" sig=0'
    b" arch=c000003e syscall=3 compat=0 ip=0x40828e code=0x7ffc0000"
)
RAW = b"type=SECCOMP msg=audit(1795879354.464:2): " + BODY


class Namer:
    """Records what it was asked; answers from a small table (x86_64 3 is close)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, arch: Arch, number: int) -> str | None:
        self.calls.append((arch.name, number))
        return {("x86_64", 3): "close", ("i386", 132): "getpgid", ("x32", 0x40000027): "getpid"}.get(
            (arch.name, number)
        )


def one(line: bytes, namer: Namer | None = None) -> AuditEvent:
    assembler = EventAssembler(namer=namer or Namer())
    events = assembler.feed(line, 0, 0.0) + assembler.flush()
    assert len(events) == 1, (events, assembler.stats)
    return events[0]


# --- envelopes ------------------------------------------------------------------------------------

ENVELOPES = [
    # (line prefix before type=, node, host)
    (b"", None, None),
    (b"node=worker-1 ", "worker-1", None),
    (b"node=auditdtest.a1959.org ", "auditdtest.a1959.org", None),
    (b"audit: ", None, None),
    (b"5,347,501728022,-;audit: ", None, None),  # /dev/kmsg
    (b"5,347,501728022,-,caller=T123;audit: ", None, None),
    (b"[  270.853767] audit: ", None, None),  # dmesg
    (b"Jul  8 10:31:23 ubuntu2004 kernel: [  270.853767] audit: ", None, "ubuntu2004"),
    (b"Dec 21 15:35:05 n57 kernel: [26083697.716609][   T55] audit: ", None, "n57"),
    (b"Dec 21 15:35:05 n57 kernel: [    5.1][    C1] audit: ", None, "n57"),
    (b"<5>Jan 15 16:27:18 n37-031-068 kernel: [22734288.2] audit: ", None, "n37-031-068"),
    (b"Jan 11 09:11:34 syslogd-sf2dl kern.notice kernel: [ 1019.1] audit: ", None, "syslogd-sf2dl"),
    (b"Dec  7 13:18:59 rosa kernel: audit: ", None, "rosa"),
    (b"Jul 24 12:25:33 spriggan kernel: [42416.178567] ", None, "spriggan"),  # no `audit:`
    (b"2025-01-27T13:01:36.226987+05:30 sec-plucky-amd64 kernel: audit: ", None, "sec-plucky-amd64"),
    (b"2021-09-11T20:57:41.91645 kern.notice: [  469.180605] audit: ", None, None),  # socklog: a tag
    (b"<13>1 2024-05-01T10:00:00.000Z node-7 kernel - - - audit: ", None, "node-7"),  # RFC 5424
    (b"<13>1 2024-05-01T10:00:00Z - kernel - - - audit: ", None, None),  # RFC 5424, no host
    (b"Jan  1 00:00:00 host7 audisp-syslog: ", None, "host7"),
    (b"Jan  1 00:00:00 host7 audisp-syslog: node=n9 ", "n9", "host7"),
    (b"audit.log:", None, None),  # grep over several files
    (b"Jan  1 00:00:00 bad/host kernel: ", None, None),
]


@pytest.mark.parametrize(("prefix", "node", "host"), ENVELOPES)
def test_envelopes(prefix: bytes, node: str | None, host: str | None) -> None:
    assert envelope(prefix) == (node, host)
    record = parse_line(prefix + RAW.replace(b"type=SECCOMP msg=", b"type=1326 ", 1))
    assert record is not None
    assert (record.node, record.host) == (node, host)
    assert record.key == (node or host or "", "1795879354.464:2")
    assert record.fields["pid"] == "6514"


def test_event_node_prefers_node_prefix_then_syslog_host() -> None:
    assert one(b"node=a " + RAW).node == "a"
    assert one(b"Jan  1 00:00:00 h1 audisp-syslog: node=a " + RAW).node == "a"
    assert one(b"Jan  1 00:00:00 h1 audisp-syslog: " + RAW).node == "h1"
    assert one(RAW).node is None


def test_kmsg_record_and_its_continuation_line() -> None:
    # Real /dev/kmsg records read on this machine; a continuation line starts with a space.
    line = b"5,370,633690414,-;audit: type=1326 audit(1795879486.424:1979): auid=4294967295 uid=0 gid=0 " \
        b'ses=4294967295 pid=8539 comm="mkdir" exe="/bin/busybox" sig=0 arch=c000003e syscall=83 ' \
        b"compat=0 ip=0x47b567 code=0x7ffc0000\n"
    assembler = EventAssembler()
    events = assembler.feed(line, 1, 0.0)
    events += assembler.feed(b" SUBSYSTEM=acpi\n", 2, 0.0)
    events += assembler.feed(b"4,369,633690409,-;kauditd_printk_skb: 1919 callbacks suppressed\n", 3, 0.0)
    events += assembler.flush()
    assert [(e.pid, e.syscall_name, e.action, e.comm) for e in events] == [(8539, "mkdir", "log", "mkdir")]
    assert assembler.stats.non_audit == 2


# --- headers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "audit_id", "timestamp"),
    [
        (RAW, "1795879354.464:2", 1795879354.464),
        (b"type=1326 audit(1.5:0): pid=1", "1.5:0", 1.5),
        (b"type=SECCOMP msg=audit(1492037298.883:4294967295): pid=1", "1492037298.883:4294967295",
         1492037298.883),
        (b"type=SECCOMP  msg=audit(10.000:7):pid=1", "10.000:7", 10.0),
    ],
)
def test_headers(line: bytes, audit_id: str, timestamp: float) -> None:
    record = parse_line(line)
    assert record is not None
    assert record.audit_id == audit_id
    assert record.timestamp == timestamp
    assert record.fields["pid"] in ("1", "6514")


@pytest.mark.parametrize(
    "line",
    [
        b"type=1326 syscall=1",  # no header
        b"type=SECCOMP msg=audit(): pid=1",
        b"type=SECCOMP msg=audit(1.2): pid=1",  # no serial
        b"type=SECCOMP msg=audit(1.2:3) pid=1",  # no colon after the header
        b"type=SECCOMP msg=audit(1.2:3",  # cut inside the header
        b"type=SECCOMP msg=audit(-1.2:3): pid=1",
        b"type=SECCOMP msg=audit(1e9.2:3): pid=1",
        b"type=SECCOMP msg=audit(12799========================8288.415:39): pid=1",
        b"type=SECCOMP msg=audit(06/26/25 17:24:52.830:4911) : pid=1",  # ausearch -i: local time
        b"type=SECCOMP msg=audit(1.2:99999999999): pid=1",  # serial beyond u32 digits
        b"type=SECCOMP msg=audit(1234567890123.2:3): pid=1",
        b"type=SECCOMP" + b" " * 100 + b"msg=audit(1.2:3): pid=1",  # header too far
    ],
)
def test_broken_headers_are_malformed(line: bytes) -> None:
    assert parse_line(line) is None
    assembler = EventAssembler()
    assert assembler.feed(line, 0, 0.0) + assembler.flush() == []
    assert assembler.stats.malformed == 1


def test_unknown_type_spelling_is_understood() -> None:
    record = parse_line(RAW.replace(b"type=SECCOMP", b"type=UNKNOWN[1326]"))
    assert record is not None and record.rtype.name == "SECCOMP"
    assert parse_line(b"type=UNKNOWN[1334] msg=audit(1.2:3): prog-id=45 op=UNLOAD") is None
    assert parse_line(b"type=UNKNOWN[99999999] msg=audit(1.2:3): x=1") is None
    assert parse_line(b"type=UNKNOWN[] msg=audit(1.2:3): x=1") is None


# --- fields and values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('a=1 b="two words" c=three', {"a": "1", "b": "two words", "c": "three"}),
        # hex for the keys the kernel writes as untrusted strings, either case
        ("exe=2F62696E2F6C73 comm=6c73", {"exe": "/bin/ls", "comm": "ls"}),
        ("proctitle=6D6B646972002F746D702F78", {"proctitle": "mkdir /tmp/x"}),
        ("proctitle=626173680000", {"proctitle": "bash"}),
        ('proctitle="bash"', {"proctitle": "bash"}),
        ("a0=75736520 a1=2D65", {"a0": "use ", "a1": "-e"}),  # EXECVE arguments
        ("exe=ABC", {"exe": "ABC"}),  # odd length: not hex
        ("exe=2F62696E2F6C7G", {"exe": "2F62696E2F6C7G"}),  # not hex
        ("ino=612459 dev=fd00", {"ino": "612459", "dev": "fd00"}),  # not untrusted strings: kept
        ("exe=FF00FE", {"exe": "\\xff\x00\\xfe"}),  # invalid UTF-8 stays visible and serialisable
        # (null) and ? are absent values; (none) is a value
        ("key=(null) subj=? tty=(none) hostname=?", {"tty": "(none)"}),
        # AppArmor labels as subj, with a space and the mode
        ("subj==cri-containerd.apparmor.d (enforce) pid=1", {"subj": "=cri-containerd.apparmor.d (enforce)",
                                                            "pid": "1"}),
        ("subj=/{,usr/}sbin/dhclient key=(null)", {"subj": "/{,usr/}sbin/dhclient"}),
        # a USER record's nested msg='...' stays one opaque value
        ("pid=1 msg='op=PAM:x acct=\"root\" exe=\"/usr/bin/sudo\" res=success' res=ok",
         {"pid": "1", "msg": 'op=PAM:x acct="root" exe="/usr/bin/sudo" res=success', "res": "ok"}),
        # the first occurrence of a key wins
        ("uid=0 uid=5 euid=1", {"uid": "0", "euid": "1"}),
        # ENRICHED whose 0x1D was lost: the glued UPPERCASE field is not part of the value
        ('code=0x7ffc0000AUID="unset" UID="root" ARCH=x86_64', {"code": "0x7ffc0000"}),
        ("key=(null)ARCH=x86_64 SYSCALL=clock_adjtime", {}),
        ('exe="/bin/ls"AUID="unset" pid=3', {"exe": "/bin/ls", "pid": "3"}),
        # broken quoting: an unterminated quote runs to the end; a stray quote is left behind
        ('a="x b=2', {"a": "x b=2"}),
        ("a2=\"721df12151a7\"'", {"a2": "721df12151a7"}),
        ('name="/dev/shm/test(me" pid=888', {"name": "/dev/shm/test(me", "pid": "888"}),
        ("=1 ==2 a==3", {"a": "=3"}),
        ("", {}),
        ("no fields at all", {}),
        ("a= b=1", {"a": "", "b": "1"}),
    ],
)
def test_fields(body: str, expected: dict[str, str]) -> None:
    assert parse_fields(body) == expected


def test_field_order_is_record_order() -> None:
    assert list(parse_fields("z=1 a=2 m=3")) == ["z", "a", "m"]


def test_values_and_fields_are_bounded() -> None:
    long_value = "x" * (auditparse.MAX_VALUE * 3)
    assert parse_fields(f"name={long_value}")["name"] == "x" * auditparse.MAX_VALUE
    assert parse_fields(f'name="{long_value}"')["name"] == "x" * auditparse.MAX_VALUE
    many = " ".join(f"k{i}={i}" for i in range(auditparse.MAX_FIELDS * 3))
    assert len(parse_fields(many)) == auditparse.MAX_FIELDS


def test_enriched_part_after_0x1d_is_ignored() -> None:
    record = parse_line(RAW + b'\x1dAUID="unset" UID="root" ARCH=x86_64 SYSCALL=write pid=99')
    assert record is not None
    assert record.fields["pid"] == "6514"
    assert "AUID" not in record.fields


def test_rsyslog_escaped_separator() -> None:
    line = b"Jan  1 00:00:00 h audisp-syslog: " + RAW + b'#035AUID="unset" UID="root"'
    record = parse_line(line)
    assert record is not None
    assert record.fields["code"] == "0x7ffc0000" and "AUID" not in record.fields
    syscall = parse_line(b'Jan  1 00:00:00 h audisp-syslog: type=SYSCALL msg=audit(1.2:3): arch=c000003e '
                         b'syscall=1 exe="/a" key=(null)#035ARCH=x86_64 SYSCALL=write')
    assert syscall is not None
    assert syscall.fields["exe"] == "/a" and "key" not in syscall.fields
    # Only what came through syslog is unescaped: in audit.log, `#035` is just text.
    kept = parse_line(b'type=SYSCALL msg=audit(1.2:3): arch=c000003e syscall=1 exe="/a#035B" key="k"')
    assert kept is not None and kept.fields["exe"] == "/a#035B" and kept.fields["key"] == "k"


def test_avc_selinux_body() -> None:
    record = parse_line(
        b"type=AVC msg=audit(1.2:3): avc:  denied  { read write } for  pid=13010 comm=\"pickup\" "
        b"name=\"maildrop\" dev=hda7 ino=14911367 scontext=system_u:system_r:postfix_pickup_t:s0 "
        b"tcontext=system_u:object_r:postfix_spool_maildrop_t:s0 tclass=dir permissive=0"
    )
    assert record is not None
    assert record.fields == {
        "avc": "denied", "perm": "read write", "pid": "13010", "comm": "pickup", "name": "maildrop",
        "dev": "hda7", "ino": "14911367", "scontext": "system_u:system_r:postfix_pickup_t:s0",
        "tcontext": "system_u:object_r:postfix_spool_maildrop_t:s0", "tclass": "dir", "permissive": "0",
    }


@pytest.mark.parametrize(
    "body",
    [b"avc:", b"avc:  denied", b"avc:  denied  { read", b"avc:  denied  } for pid=1", b"avc: {}{}{ for"],
)
def test_avc_broken_bodies(body: bytes) -> None:
    record = parse_line(b"type=AVC msg=audit(1.2:3): " + body)
    assert record is not None
    event = build_event(record, namer=Namer())
    assert event.kind == "selinux"


def test_free_text_body_is_kept() -> None:
    record = parse_line(b"type=APPARMOR msg=audit(1.2:3): REJECTING r access to /bin/df (sh(7902))")
    assert record is not None
    assert record.fields == {"message": "REJECTING r access to /bin/df (sh(7902))"}


# --- what a record means --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "action", "errno"),
    [
        ("0x80000000", "kill_process", None),
        ("0x0", "kill_thread", None),
        ("0x00000000", "kill_thread", None),
        ("0x30000", "trap", None),
        ("0x30005", "trap", None),  # RET_DATA of a trap is not an errno
        ("0x50000", "errno", None),  # since 4.14 the kernel logs the action alone
        ("0x50001", "errno", 1),  # older kernels: the whole return value
        ("0x5000d", "errno", 13),
        ("0x7fc00000", "user_notif", None),
        ("0x7ff00000", "trace", None),
        ("0x7ff00abc", "trace", None),
        ("0x7ffc0000", "log", None),
        ("0x7fff0000", "allow", None),
        ("0x7FFC0000", "log", None),
        ("0x7ffc0000AUID=", "log", None),  # lost 0x1D
        ("0x0AUID=", "kill_thread", None),
        ("0x12340000", None, None),  # no such action
        ("0x", None, None),
        ("kill", None, None),  # ausearch -i's interpretation
        ("", None, None),
        (None, None, None),
        ("0x123456789", None, None),
    ],
)
def test_seccomp_actions(code: str | None, action: str | None, errno: int | None) -> None:
    assert seccomp_action(code) == (action, errno)


def test_seccomp_event_from_a_real_record() -> None:
    namer = Namer()
    event = one(RAW, namer)
    assert event == AuditEvent(
        kind="seccomp", record_type="SECCOMP", audit_id="1795879354.464:2", timestamp=1795879354.464,
        node=None, pid=6514, uid=0, auid=4294967295, comm="runc:[2:INIT]", exe="/", arch=archmod.X86_64,
        syscall=3, syscall_name="close", action="log", errno=None,
        details={"gid": "0", "ses": "4294967295", "sig": "0", "compat": "0", "ip": "0x40828e",
                 "code": "0x7ffc0000"},
    )
    assert namer.calls == [("x86_64", 3)]


def test_syscall_is_named_for_the_records_arch_never_the_hosts() -> None:
    namer = Namer()
    line = RAW.replace(b"arch=c000003e syscall=3", b"arch=40000003 syscall=132")
    event = one(line, namer)
    assert (event.arch, event.syscall, event.syscall_name) == (archmod.I386, 132, "getpgid")
    assert namer.calls == [("i386", 132)]


def test_x32_syscall_is_named_through_x32() -> None:
    namer = Namer()
    event = one(RAW.replace(b"syscall=3 ", b"syscall=1073741863 "), namer)
    assert (event.arch, event.syscall, event.syscall_name) == (archmod.X32, 0x40000027, "getpid")
    assert namer.calls == [("x32", 0x40000027)]


@pytest.mark.parametrize(
    ("arch", "syscall", "name"),
    [
        ("c00000b7", "55", "fchown"),  # aarch64
        ("40000028", "20", "getpid"),  # arm
        ("c0000015", "20", "getpid"),  # ppc64le
        ("80000016", "20", "getpid"),  # s390x
        ("40000003", "132", "getpgid"),  # i386
        ("c000003e", "132", "utime"),  # x86_64
    ],
)
def test_real_names_per_arch(arch: str, syscall: str, name: str) -> None:
    from tests.support.prereq import require

    require("libseccomp")
    line = RAW.replace(b"arch=c000003e syscall=3", f"arch={arch} syscall={syscall}".encode())
    assembler = EventAssembler()
    (event,) = assembler.feed(line, 0, 0.0) + assembler.flush()
    assert event.arch is not None and event.arch.token == int(arch, 16)
    assert event.syscall_name == name


@pytest.mark.parametrize(
    ("replace", "field", "value"),
    [
        (b"arch=c000003e", "arch", None),  # unknown arch below
        (b"syscall=3 ", "syscall", None),
        (b"pid=6514", "pid", None),
    ],
)
def test_bad_numbers_become_none(replace: bytes, field: str, value: None) -> None:
    bad = {b"arch=c000003e": b"arch=deadbeef", b"syscall=3 ": b"syscall=-1 ", b"pid=6514": b"pid=-5"}[replace]
    event = one(RAW.replace(replace, bad))
    assert getattr(event, field) is value
    assert event.syscall_name is None if field in ("arch", "syscall") else event.syscall_name == "close"


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [("0", 10, 0), ("10", 10, 10), ("11", 10, None), ("-1", 10, None), ("", 10, None), (None, 10, None),
     ("1" * 11, 2**63, None), ("²", 10, None), ("٣", 10, None), ("4294967295", 0xFFFFFFFF, 4294967295)],
)
def test_uint(value: str | None, limit: int, expected: int | None) -> None:
    assert auditparse.uint(value, limit) == expected


def test_apparmor_and_selinux_events() -> None:
    aa = one(b'type=AVC msg=audit(1.2:3): apparmor="DENIED" operation="open" profile="p" name="/etc/x" '
             b'pid=7 comm="cat" requested_mask="r" denied_mask="r" fsuid=0 ouid=0')
    assert (aa.kind, aa.record_type, aa.action, aa.pid, aa.comm) == ("apparmor", "AVC", "DENIED", 7, "cat")
    assert aa.details == {"apparmor": "DENIED", "operation": "open", "profile": "p", "name": "/etc/x",
                          "requested_mask": "r", "denied_mask": "r", "fsuid": "0", "ouid": "0"}
    legacy = one(b"type=1503 audit(1.2:3): operation=\"capable\" name=\"setuid\" pid=9 profile=\"/bin/ping\"")
    assert (legacy.kind, legacy.record_type, legacy.action) == ("apparmor", "APPARMOR_DENIED", "DENIED")
    se = one(b"type=AVC msg=audit(1.2:3): avc:  granted  { setsecparam } for  pid=11209 comm=\"tuned\" "
             b"scontext=a tcontext=b tclass=security")
    assert (se.kind, se.action, se.details["perm"], se.details["tclass"]) == ("selinux", "granted",
                                                                              "setsecparam", "security")
    assert "avc" not in se.details


def test_netlink_payload() -> None:
    record = parse_netlink(1326, BODY.join([b"audit(1795879354.464:2): ", b"\x00"]))
    assert record is not None
    assert record.fields["code"] == "0x7ffc0000" and record.node is None
    assert parse_netlink(1300, b"audit(1.2:3): arch=c000003e syscall=1") is not None
    assert parse_netlink(1107, b"audit(1.2:3): pid=1") is None  # USER_AVC: not handled
    assert parse_netlink(1326, b"garbage") is None
    assert parse_netlink(1326, b"") is None
    assembler = EventAssembler(namer=Namer())
    events = assembler.feed_netlink(1326, b"audit(1795879354.464:2): " + BODY, "nl", 0.0)
    events += assembler.feed_netlink(1320, b"audit(1795879354.464:2): ", "nl", 0.0)
    assert [(e.pid, e.syscall_name) for e in events] == [(6514, "close")]
    assert assembler.stats.by_type == {"SECCOMP": 1, "EOE": 1}
    assert assembler.feed_netlink(1326, b"junk", "nl", 0.0) == []
    assert assembler.stats.malformed == 1


def test_hex_exe_with_deleted_suffix() -> None:
    record = parse_line(
        b"type=SYSCALL msg=audit(1492037289.295:49): arch=c000003e syscall=42 success=no exit=-115 a0=6 "
        b"a1=7ffed2893080 a2=10 a3=fe items=0 ppid=1 pid=1172 auid=4294967295 uid=0 gid=0 euid=0 suid=0 "
        b"fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm=\"google_accounts\" "
        b"exe=2F7573722F62696E2F707974686F6E322E373B3538643163636662202864656C6574656429 "
        b"subj=system_u:system_r:unconfined_service_t:s0 key=(null)"
    )
    assert record is not None
    assert record.fields["exe"] == "/usr/bin/python2.7;58d1ccfb (deleted)"
    assert "key" not in record.fields
    assert record.fields["success"] == "no" and record.fields["exit"] == "-115"


@pytest.mark.parametrize(
    "body",
    [
        # the kernel's layout (fast path) and variations that take the generic way: the same fields
        'arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=10 pid=11 auid=1000 '
        'uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts1 ses=1 comm="whoami" '
        'exe="/usr/bin/whoami" key=(null)',
        'arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=10 pid=11 auid=1000 '
        'uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts1 ses=1 comm="whoami" '
        'exe="/usr/bin/whoami" new_field=1 key=(null)',
        'arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=10 pid=11 auid=1000 '
        'uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts1 ses=1 comm=77686F616D69 '
        'exe="/usr/bin/whoami" subj==unconfined (enforce) key=(null)',
    ],
)
def test_syscall_companion_fields(body: str) -> None:
    record = parse_line(b"type=SYSCALL msg=audit(1.2:3): " + body.encode())
    assert record is not None
    fields = record.fields
    assert (fields["arch"], fields["syscall"], fields["pid"], fields["ppid"], fields["uid"]) == (
        "c000003e", "59", "11", "10", "0")
    assert fields["comm"] in ("whoami", "whoami"[:4] + "mi") and fields["exe"] == "/usr/bin/whoami"
    assert fields["success"] == "yes" and "key" not in fields


@pytest.mark.parametrize(
    "body",
    [
        BODY.decode(),
        BODY.decode().replace("pid=6514", "subj=unconfined pid=6514"),
        BODY.decode().replace('comm="runc:[2:INIT]"', "comm=72756E633A5B323A494E49545D"),
        BODY.decode() + " new_field=1",  # a field we do not know: the generic way keeps it
        BODY.decode().replace("code=0x7ffc0000", "code=0x7FFC0000"),
        BODY.decode().replace("compat=0 ", ""),  # an older layout
    ],
)
def test_seccomp_fast_and_generic_paths_agree(body: str) -> None:
    record = parse_line(b"type=SECCOMP msg=audit(1.2:3): " + body.encode())
    assert record is not None
    generic = parse_fields(body)
    assert record.fields == generic
    assert seccomp_action(record.fields["code"])[0] == "log"
    assert record.fields["comm"] == "runc:[2:INIT]"
