"""A following enricher against a storm of SECCOMP records: `python -m bench.following` (root).

A child loads a seccomp filter that logs getppid (SCMP_ACT_LOG) and calls it --records times as fast
as it can; every call is a SECCOMP record. A following `syscribe enrich` reads them

1. through the audit netlink multicast group (`--source netlink`, no audit daemon registered), and
2. through auditd's file (a private `auditd -n`, ENRICHED format, `--source auditd --start end`),

and the bench reports, for each: how fast the child made records, how many reached the enricher's
output and how fast (first to last line), what the kernel counted as lost (`auditctl -s`, `lost`), the
overruns the enricher saw (netlink), and for auditd what its file got. ausearch's own rate on the file
is given beside it (`ausearch -i -m SECCOMP -p PID` over auditd's log).

Needs root, auditd (auditctl, ausearch) and no audit daemon of the machine's own; takes the same lock
as the real tests' private auditd. Numbers go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.netlink import AUDIT_STORM as STORM
from tests.support.auditd import audit_status, no_audit_daemon, private_auditd

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")


@dataclass
class Run:
    source: str
    records: int
    made_seconds: float  # the child's loop
    lines: int  # of the child's pid, in the enricher's output
    read_seconds: float  # from the child's start to the last of its lines in the output
    lost: int  # the kernel's `lost` counter, after minus before
    file_records: int | None = None  # SECCOMP records of the child's pid in auditd's file
    ausearch_seconds: float | None = None

    @property
    def made_rate(self) -> float:
        return self.records / self.made_seconds if self.made_seconds else 0.0

    @property
    def read_rate(self) -> float:
        return self.lines / self.read_seconds if self.read_seconds else 0.0


def _count(path: Path, needle: bytes) -> int:
    try:
        return path.read_bytes().count(needle)
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def _enricher(args: list[str], out: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [SYSCRIBE, "enrich", "--output", str(out), "--quiet", "--no-track-processes", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # subscribed / at the end of the file
        yield process
    finally:
        process.terminate()
        process.wait(60)


def _storm(n: int, out: Path, log: Path | None, source: str) -> Run:
    lost_before = audit_status().get("lost", 0)
    child = subprocess.Popen([sys.executable, "-c", STORM, str(n)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    pid = int(child.stdout.readline())
    needle = f'"pid":{pid},'.encode()
    started = time.monotonic()
    child.stdin.write("go\n")
    child.stdin.close()
    child.wait(3600)
    made = time.monotonic() - started
    # Until the output has them all, or nothing came for 5 s.
    seen, last_change, last_seen_at = -1, time.monotonic(), started
    while True:
        count = _count(out, needle)
        now = time.monotonic()
        if count != seen:
            seen, last_change, last_seen_at = count, now, now
        if count >= n or now - last_change > 5:
            break
        time.sleep(0.05)
    lost = audit_status().get("lost", 0) - lost_before
    run = Run(source, n, made, seen, last_seen_at - started, lost)
    if log is not None:
        run.file_records = _count(log, f" pid={pid} ".encode())
        t = time.monotonic()
        subprocess.run(["ausearch", "-i", "--input", str(log), "-m", "SECCOMP", "-p", str(pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=3600)
        run.ausearch_seconds = time.monotonic() - t
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    no_audit_daemon()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-following-") as tmp:
        work = Path(tmp)
        with _enricher(["--source", "netlink"], work / "netlink.json"):
            runs.append(_storm(args.records, work / "netlink.json", None, "netlink"))
        with private_auditd(work / "auditd") as daemon, _enricher(
            ["--source", "auditd", "--input", str(daemon.log), "--start", "end"], work / "auditd.json"
        ):
            runs.append(_storm(args.records, work / "auditd.json", daemon.log, "auditd"))
    print(f"{'source':8} {'records':>8} {'made/s':>9} {'lines':>8} {'enriched/s':>11} {'lost':>6} "
          f"{'in file':>8} {'ausearch s':>10}")
    for r in runs:
        in_file = "-" if r.file_records is None else str(r.file_records)
        ausearch = "-" if r.ausearch_seconds is None else f"{r.ausearch_seconds:.2f}"
        print(f"{r.source:8} {r.records:>8} {r.made_rate:>9.0f} {r.lines:>8} {r.read_rate:>11.0f} "
              f"{r.lost:>6} {in_file:>8} {ausearch:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
