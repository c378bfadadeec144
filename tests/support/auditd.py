"""Private log daemons for the enricher's real tests, and the kernel settings they touch.

- `private_auditd(dir)`: `auditd -n -c DIR` with an auditd.conf whose log_file is DIR/audit.log; waits
  until the kernel has it registered, and on the way out stops it and puts back the audit state it
  found (auditd enables audit when it starts and leaves it enabled when it stops).
- `private_rsyslogd(dir)`: `rsyslogd -n -iNONE -f CONF` reading /dev/kmsg (imkmsg, which does not take
  records away from other readers as /proc/kmsg would) into DIR/kern.log.
- `printk_ratelimit(0)`: lifts printk's rate limit (10 lines per 5 s) for the duration, then restores.
- `no_audit_daemon()`: fails when an audit daemon is registered: the kernel then hands records to it
  instead of printk (so kmsg and syslog get none); the netlink multicast group still gets them.

Only one audit daemon can be registered with the kernel, so private_auditd takes a lock shared by
every test session on the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK = Path("/run/syscribe-test-auditd.lock")


class DaemonError(RuntimeError):
    pass


def audit_status() -> dict[str, int]:
    """`auditctl -s` as numbers (enabled, failure, pid, rate_limit, backlog_limit, lost, ...)."""
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True, timeout=30).stdout
    status: dict[str, int] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip().split()[0] if value.strip() else ""
        if value.lstrip("-").isdigit():
            status[key] = int(value)
    return status


def set_audit_enabled(value: int) -> None:
    if value in (0, 1):
        subprocess.run(["auditctl", "-e", str(value)], capture_output=True, check=False, timeout=30)


@contextlib.contextmanager
def _machine_lock(timeout: float = 300.0) -> Iterator[None]:
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DaemonError(f"another test session holds {LOCK} (a private auditd)") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


@dataclass
class Daemon:
    directory: Path
    log: Path
    process: subprocess.Popen[bytes]


AUDITD_CONF = """\
local_events = yes
write_logs = yes
log_file = {log}
log_group = root
log_format = {log_format}
flush = {flush}
freq = 20
max_log_file = {max_log_file}
num_logs = {num_logs}
max_log_file_action = {max_log_file_action}
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
plugin_dir = {plugins}
name_format = NONE
end_of_event_timeout = 2
"""


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def private_auditd(
    directory: Path,
    *,
    log_format: str = "ENRICHED",
    flush: str = "INCREMENTAL_ASYNC",
    max_log_file: int = 0,
    num_logs: int = 1,
    max_log_file_action: str = "IGNORE",
) -> Iterator[Daemon]:
    """An auditd writing to `directory`/audit.log, registered with the kernel until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    plugins = directory / "plugins.d"
    plugins.mkdir(exist_ok=True)
    log = directory / "audit.log"
    conf = directory / "auditd.conf"
    conf.write_text(AUDITD_CONF.format(
        log=log, log_format=log_format, flush=flush, max_log_file=max_log_file, num_logs=num_logs,
        max_log_file_action=max_log_file_action, plugins=plugins,
    ))
    conf.chmod(0o640)  # auditd refuses a config others can write
    with _machine_lock():
        before = audit_status()
        if before.get("pid", 0) != 0:
            raise DaemonError(f"an audit daemon (pid {before['pid']}) is already registered; stop it first")
        process = subprocess.Popen(
            ["auditd", "-n", "-c", str(directory)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while audit_status().get("pid", 0) != process.pid or not log.exists():
                if process.poll() is not None:
                    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    raise DaemonError(f"auditd exited with {process.returncode}: {err.strip()[:500]}")
                if time.monotonic() > deadline:
                    raise DaemonError("auditd did not register with the kernel within 20 s")
                time.sleep(0.05)
            yield Daemon(directory, log, process)
        finally:
            _stop(process)
            if process.stderr is not None:
                process.stderr.close()
            deadline = time.monotonic() + 10
            while audit_status().get("pid", 0) == process.pid and time.monotonic() < deadline:
                time.sleep(0.05)
            set_audit_enabled(before.get("enabled", 0))


RSYSLOG_CONF = """\
global(workDirectory="{directory}")
module(load="imkmsg")
kern.* action(type="omfile" file="{log}" template="RSYSLOG_TraditionalFileFormat")
"""
# What a node's rsyslogd also does: take local programs' messages from a socket (here a private one,
# not /dev/log) and write everything to syslog, as Debian's `*.*;auth,authpriv.none /var/log/syslog`.
RSYSLOG_LOCAL = """\
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}")
*.*;auth,authpriv.none action(type="omfile" file="{syslog}" template="RSYSLOG_TraditionalFileFormat")
"""


@contextlib.contextmanager
def private_rsyslogd(directory: Path, *, local: bool = False) -> Iterator[Daemon]:
    """rsyslogd copying the kernel's log (/dev/kmsg) to `directory`/kern.log, as a node's would.

    With `local`, it also reads local programs' messages from the socket `directory`/log (`logger -u`)
    and writes every message, the kernel's and theirs, to `directory`/syslog.
    """
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "kern.log"
    conf = directory / "rsyslog.conf"
    text = RSYSLOG_CONF.format(directory=directory, log=log)
    if local:
        text += RSYSLOG_LOCAL.format(socket=directory / "log", syslog=directory / "syslog")
    conf.write_text(text)
    process = subprocess.Popen(
        ["rsyslogd", "-n", "-iNONE", "-f", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not log.exists():
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise DaemonError(f"rsyslogd exited with {process.returncode}: {err.strip()[:500]}")
            if time.monotonic() > deadline:
                raise DaemonError("rsyslogd wrote nothing within 20 s")
            time.sleep(0.05)
        yield Daemon(directory, log, process)
    finally:
        _stop(process)
        if process.stderr is not None:
            process.stderr.close()


SYSCTL = Path("/proc/sys/kernel/printk_ratelimit")


@contextlib.contextmanager
def printk_ratelimit(value: int) -> Iterator[None]:
    before = SYSCTL.read_text().strip()
    SYSCTL.write_text(f"{value}\n")
    try:
        yield
    finally:
        SYSCTL.write_text(f"{before}\n")


def no_audit_daemon() -> None:
    """Raise unless the kernel prints audit records itself (no audit daemon registered)."""
    pid = audit_status().get("pid", 0)
    if pid:
        raise DaemonError(f"an audit daemon (pid {pid}) is registered: the kernel gives it the records")
