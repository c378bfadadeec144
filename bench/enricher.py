"""The enricher against ausearch, on the same generated audit.log: `python -m bench.enricher`.

1. Makes an audit.log of --lines lines (default one million) as auditd writes it (ENRICHED format, 0x1D
   and the interpreted fields), for each mix: SECCOMP records among the traffic a node's audit rules
   make (SYSCALL/PATH/CWD/PROCTITLE/EOE events, logins and services: USER_*, CRED_*, SERVICE_*, a few
   SELinux AVCs with their companions). The audit-rules mix has about one line in six a SECCOMP record;
   --seccomp-share S (repeatable) makes S of the lines SECCOMP records, the other kinds in the same
   proportions (a denial storm: 0.7). By default both the audit-rules mix and 0.7.
2. Times `syscribe enrich --no-follow --input FILE --output FILE` (with nothing to look up in /proc,
   and with a /proc lookup per event whose process is gone) and `ausearch -i --input FILE -m SECCOMP`
   on it, and the enricher on a file of a quarter of the lines (peak RSS should not grow with the
   input), each as a child process: wall and CPU time, lines per second, peak RSS (the child's
   rusage). The four runs go round --repeat times, interleaved, so that a noisy neighbour slows all
   alike.
3. Latency: a following enricher (default settings) and a writer appending one SECCOMP line at a time;
   the time from the append to the enriched line in the output, --samples times.

Numbers go to stdout as one table per mix, every tool side by side (the range of its times, and its
median against ausearch's, wall and CPU), and with --json as JSON. --check turns the targets into an
exit status: the enricher with lookups within --max-ratio of ausearch's time, peak RSS the same for a
quarter of the input, for every mix.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")
GS = "\x1d"
# pids that no process has here (pid_max is 4194304), as in a log read after the fact
PID_BASE = 4_000_000


def _stamp(rng: random.Random, serial: int, t0: float) -> str:
    return f"audit({t0 + serial / 1000:.3f}:{serial})"


# The audit-rules mix: the chance of each kind of chunk (SYSCALL group of 5 lines, a USER_* line, an
# AVC group of 4 lines; the rest SECCOMP lines), which makes about 15.5% of the lines SECCOMP records.
_GROUP, _USER, _AVC = 0.45, 0.10, 0.01
_OTHER_LINES = (_GROUP * 5 + _USER * 1 + _AVC * 4) / (_GROUP + _USER + _AVC)


def thresholds(seccomp_share: float | None) -> tuple[float, float, float]:
    """Where a roll in [0, 1) stops being a SYSCALL group, a USER_* line, an AVC group (the rest is a
    SECCOMP record), so that `seccomp_share` of the lines are SECCOMP records (None: the audit-rules
    mix). The other kinds keep their proportions to each other."""
    if seccomp_share is None:
        return _GROUP, _GROUP + _USER, _GROUP + _USER + _AVC
    if not 0 <= seccomp_share < 1:
        raise ValueError(f"a SECCOMP share is in [0, 1), not {seccomp_share}")
    # q chunks in a SECCOMP line, 1 - q in another kind of OTHER_LINES lines on average:
    # share = q / (q + (1 - q) * OTHER_LINES)
    q = seccomp_share * _OTHER_LINES / (1 - seccomp_share + seccomp_share * _OTHER_LINES)
    scale = (1 - q) / (_GROUP + _USER + _AVC)
    return _GROUP * scale, (_GROUP + _USER) * scale, (_GROUP + _USER + _AVC) * scale


def generate(path: Path, lines: int, seed: int = 1, seccomp_share: float | None = None) -> dict[str, int]:
    """Write `lines` lines of audit.log; return how many records of each kind."""
    rng = random.Random(seed)
    group_below, user_below, avc_below = thresholds(seccomp_share)
    t0 = 1_700_000_000.0
    serial = 1000
    counts = {"SECCOMP": 0, "AVC": 0, "other": 0}
    written = 0
    syscalls = [0, 1, 2, 3, 9, 21, 39, 59, 83, 87, 257, 262]
    with open(path, "w", buffering=1 << 20) as out:
        while written < lines:
            serial += 1
            stamp = _stamp(rng, serial, t0)
            pid = PID_BASE + rng.randrange(190_000)
            roll = rng.random()
            if roll < group_below:
                nr = rng.choice(syscalls)
                chunk = [
                    f"type=SYSCALL msg={stamp}: arch=c000003e syscall={nr} success=yes exit=3 a0=ffffff9c "
                    f"a1=7ffd5f1e a2=80000 a3=0 items=1 ppid=1 pid={pid} auid=1000 uid=0 gid=0 euid=0 suid=0 "
                    f'fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="cat" exe="/usr/bin/cat" '
                    f'subj=unconfined key="audit-wr"{GS}ARCH=x86_64 SYSCALL=openat AUID="user" UID="root"',
                    f'type=CWD msg={stamp}: cwd="/root"',
                    f'type=PATH msg={stamp}: item=0 name="/etc/passwd" inode=1234 dev=fe:00 mode=0100644 '
                    f"ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 "
                    f'cap_frootid=0{GS}OUID="root" OGID="root"',
                    f"type=PROCTITLE msg={stamp}: proctitle=636174002F6574632F706173737764",
                    f"type=EOE msg={stamp}: ",
                ]
                counts["other"] += len(chunk)
            elif roll < user_below:
                kind = rng.choice(["USER_START", "CRED_ACQ", "USER_END", "SERVICE_START", "LOGIN"])
                chunk = [
                    f"type={kind} msg={stamp}: pid={pid} uid=0 auid=1000 ses=3 subj=unconfined "
                    f"msg='op=PAM:session_open grantors=pam_unix acct=\"root\" exe=\"/usr/bin/sudo\" "
                    f"hostname=? addr=? terminal=/dev/pts/0 res=success'{GS}UID=\"root\" AUID=\"user\""
                ]
                counts["other"] += 1
            elif roll < avc_below:
                chunk = [
                    f"type=AVC msg={stamp}: avc:  denied  {{ read }} for  pid={pid} comm=\"cat\" "
                    'name="shadow" dev="vda" ino=99 scontext=system_u:system_r:container_t:s0:c1,c2 '
                    "tcontext=system_u:object_r:shadow_t:s0 tclass=file permissive=0",
                    f"type=SYSCALL msg={stamp}: arch=c000003e syscall=257 success=no exit=-13 ppid=1 "
                    f'pid={pid} auid=4294967295 uid=0 comm="cat" exe="/usr/bin/cat" key=(null)'
                    f'{GS}ARCH=x86_64 SYSCALL=openat AUID="unset" UID="root"',
                    f"type=PROCTITLE msg={stamp}: proctitle=636174",
                    f"type=EOE msg={stamp}: ",
                ]
                counts["AVC"] += 1
                counts["other"] += 3
            else:
                nr = rng.choice(syscalls)
                code = rng.choice(["0x7ffc0000", "0x7ffc0000", "0x50000", "0x80000000"])
                chunk = [
                    f"type=SECCOMP msg={stamp}: auid=4294967295 uid=0 gid=0 ses=4294967295 "
                    f"subj=system_u:system_r:container_t:s0:c83,c152 pid={pid} comm=\"sh\" exe=\"/bin/dash\" "
                    f"sig=0 arch=c000003e syscall={nr} compat=0 ip=0x7fe2ff5017be code={code}"
                    f'{GS}AUID="unset" UID="root" GID="root" ARCH=x86_64 SYSCALL=unknown-syscall(-1)'
                ]
                counts["SECCOMP"] += 1
            chunk = chunk[: lines - written]
            out.write("\n".join(chunk) + "\n")
            written += len(chunk)
    counts["lines"] = written
    return counts


@dataclass
class Timing:
    name: str
    seconds: float
    lines: int
    peak_rss_mib: float
    output_lines: int
    cpu_seconds: float = 0.0  # user + system, the child's own (wait4's rusage)

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def timed(name: str, cmd: list[str], lines: int, stdout: Path) -> Timing:
    """Run `cmd` as a child; its wall time and its own peak RSS (wait4's rusage)."""
    with open(stdout, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode not in (0, 1):  # ausearch says 1 when it finds nothing
        raise SystemExit(f"{name} failed ({process.returncode}): {err.strip()[-500:]}")
    with open(stdout, "rb") as fh:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return Timing(name, seconds, lines, usage.ru_maxrss / 1024, count, usage.ru_utime + usage.ru_stime)


def enrich_cmd(log: Path, out: Path, *extra: str) -> list[str]:
    return [SYSCRIBE, "enrich", "--no-follow", "--input", str(log), "--output", str(out), "--quiet",
            "--max-output-bytes", "0", *extra]


def latency(work: Path, samples: int, hold: str | None) -> list[float]:
    """Seconds from appending a SECCOMP line to its enriched line appearing, one line at a time."""
    tag = f"hold-{hold}"
    log = work / f"live-{tag}.log"
    out = work / f"live-{tag}.json"
    log.write_text("")
    extra = ["--hold-seconds", hold] if hold is not None else []
    process = subprocess.Popen(
        [SYSCRIBE, "enrich", "--input", str(log), "--output", str(out), "--start", "beginning", "--quiet",
         "--proc", str(work / "no-proc"), *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    results: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        seen = 0
        for i in range(samples):
            line = (
                f"type=SECCOMP msg=audit({time.time():.3f}:{10_000 + i}): auid=4294967295 uid=0 gid=0 "
                f'ses=4294967295 pid={PID_BASE + i} comm="sh" exe="/bin/sh" sig=0 arch=c000003e syscall=83 '
                "compat=0 ip=0x1 code=0x7ffc0000\n"
            )
            fd = os.open(log, os.O_WRONLY | os.O_APPEND)
            try:
                start = time.perf_counter()
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            while True:
                count = out.read_bytes().count(b"\n")
                if count > seen:
                    results.append(time.perf_counter() - start)
                    seen = count
                    break
                if time.perf_counter() - start > 10:
                    raise SystemExit("latency: no enriched line within 10 s")
                time.sleep(0.0005)
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.enricher", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the timed runs (each round runs every tool once, interleaved)")
    parser.add_argument("--samples", type=int, default=50, help="latency samples (0: skip)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless the enricher with /proc lookups takes at most --max-ratio of "
                             "ausearch's time (medians) and its peak RSS does not grow with the input")
    parser.add_argument("--max-ratio", type=float, default=0.75)
    parser.add_argument("--seccomp-share", type=float, action="append", metavar="SHARE",
                        help="make SHARE (0 to 1) of the lines SECCOMP records, the other kinds in their "
                             "proportions; repeatable, each mix is a table (default: the audit-rules mix, "
                             "about 0.155, and 0.7)")
    args = parser.parse_args(argv)
    if shutil.which("ausearch") is None:
        raise SystemExit("ausearch not found: apt-get install auditd")
    if args.repeat < 1 or args.lines < 1:
        raise SystemExit("--repeat and --lines must be at least 1")
    shares: list[float | None] = args.seccomp_share or [None, 0.7]
    for share in shares:
        if share is not None and not 0 <= share < 1:
            raise SystemExit(f"--seccomp-share must be in [0, 1), not {share}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-enricher-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        mixes: dict[str, dict[str, list[Timing]]] = {}
        inputs: dict[str, dict[str, int]] = {}
        for share in shares:
            label, counts, runs = run_mix(work, share, args.lines, args.repeat, keep=args.keep is not None)
            mixes[label] = runs
            inputs[label] = counts
        print_table(mixes)
        lat: dict[str, list[float]] = {}
        if args.samples > 0:
            for label, hold in (("default (--hold-seconds 0.25)", None), ("--hold-seconds 0", "0")):
                lat[label] = latency(work, args.samples, hold)
            print(f"\n{'latency, append to enriched line':36} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
            for label, values in lat.items():
                values.sort()
                p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
                print(f"{label:36} {statistics.median(values) * 1000:10.1f} {p95 * 1000:8.1f} "
                      f"{values[-1] * 1000:8.1f}")
        if args.json:
            import json

            print(json.dumps({
                "inputs": inputs,
                "runs": [asdict(r) | {"mix": label, "lines_per_second": r.lines_per_second}
                         for label, runs in mixes.items() for timings in runs.values() for r in timings],
                "latency_seconds": lat,
            }, indent=2))
        if args.check:
            sys.stdout.flush()
            problems = [f"{label}: {problem}" for label, runs in mixes.items()
                        for problem in check(runs, args.max_ratio)]
            for problem in problems:
                print(f"check failed: {problem}", file=sys.stderr)
            if problems:
                raise SystemExit(1)
            print(f"check passed: enrich with /proc lookups within {args.max_ratio:.2f} of ausearch's time, "
                  "peak RSS independent of the input size")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


ENRICH = "syscribe enrich"
AUSEARCH = "ausearch -i -m SECCOMP"
ENRICH_PROC = "syscribe enrich (/proc lookups)"
ENRICH_QUARTER = "syscribe enrich, 1/4 of the lines"


def run_mix(
    work: Path, share: float | None, lines: int, repeat: int, *, keep: bool = False
) -> tuple[str, dict[str, int], dict[str, list[Timing]]]:
    """Generate one mix's log (and a quarter of it) and time every tool on it, `repeat` rounds."""
    tag = "rules" if share is None else f"s{round(share * 100)}"
    log = work / f"audit-{tag}.log"
    t = time.perf_counter()
    counts = generate(log, lines, seccomp_share=share)
    size = log.stat().st_size
    label = f"{counts['SECCOMP'] / counts['lines']:.1%} SECCOMP" + (" (audit rules)" if share is None else "")
    print(f"{label}: generated {counts['lines']} lines ({size / 2**20:.0f} MiB: {counts['SECCOMP']} SECCOMP, "
          f"{counts['AVC']} AVC) in {time.perf_counter() - t:.1f} s", flush=True)
    quarter = work / f"quarter-{tag}.log"
    quarter_counts = generate(quarter, max(1, lines // 4), seed=2, seccomp_share=share)
    no_proc = ["--proc", str(work / "no-proc")]
    n = counts["lines"]
    out, out2, q = work / f"out-{tag}.json", work / f"out2-{tag}.json", work / f"q-{tag}.json"
    plan: list[tuple[str, Callable[[], list[str]], int, Path | None]] = [
        (ENRICH, lambda: enrich_cmd(log, out, *no_proc), n, out),
        (AUSEARCH, lambda: ["ausearch", "-i", "--input", str(log), "-m", "SECCOMP"], n, None),
        (ENRICH_PROC, lambda: enrich_cmd(log, out2), n, out2),
        (ENRICH_QUARTER, lambda: enrich_cmd(quarter, q, *no_proc), quarter_counts["lines"], q),
    ]
    runs: dict[str, list[Timing]] = {name: [] for name, *_ in plan}
    try:
        for _ in range(repeat):
            for name, cmd, count, path in plan:
                if path is not None:
                    path.unlink(missing_ok=True)
                timing = timed(name, cmd(), count, work / "stdout")
                if path is not None:
                    timing.output_lines = _count(path)
                runs[name].append(timing)
    finally:
        # A 70% mix's million lines are 300 MB, its output as much: the logs are kept with --keep only.
        for path in (out, out2, q, work / "stdout", *(() if keep else (log, quarter))):
            path.unlink(missing_ok=True)
    return label, counts, runs


def print_table(mixes: dict[str, dict[str, list[Timing]]]) -> None:
    """Every tool side by side, for each mix: the range of its wall times over the rounds, its best
    rate, its peak RSS, and its median time against ausearch's on the same log."""
    for label, runs in mixes.items():
        base = statistics.median(r.seconds for r in runs[AUSEARCH])
        rounds = len(runs[AUSEARCH])
        seconds = f"seconds ({rounds} runs)" if rounds > 1 else "seconds"
        cpu_base = statistics.median(r.cpu_seconds for r in runs[AUSEARCH])
        print(f"\n{label:36} {seconds:>16} {'CPU seconds':>12} {'lines/s':>10} {'peak RSS MiB':>13} "
              f"{'lines out':>10} {'vs ausearch':>12} {'CPU vs':>7}")
        for name, timings in runs.items():
            times = sorted(r.seconds for r in timings)
            cpu = sorted(r.cpu_seconds for r in timings)
            span = f"{times[0]:.2f}" if len(times) == 1 else f"{times[0]:.2f}-{times[-1]:.2f}"
            cpu_span = f"{cpu[0]:.2f}" if len(cpu) == 1 else f"{cpu[0]:.2f}-{cpu[-1]:.2f}"
            best = max(r.lines_per_second for r in timings)
            rss = max(r.peak_rss_mib for r in timings)
            quarter = name == ENRICH_QUARTER
            ratio = "-" if quarter else f"{statistics.median(times) / base:.2f}x"
            cpu_ratio = "-" if quarter else f"{statistics.median(cpu) / cpu_base:.2f}x"
            print(f"{name:36} {span:>16} {cpu_span:>12} {best:10.0f} {rss:13.1f} "
                  f"{timings[-1].output_lines:10} {ratio:>12} {cpu_ratio:>7}")


def check(runs: dict[str, list[Timing]], max_ratio: float) -> list[str]:
    problems = []
    ausearch = statistics.median(r.seconds for r in runs[AUSEARCH])
    enrich = statistics.median(r.seconds for r in runs[ENRICH_PROC])
    if enrich > ausearch * max_ratio:
        problems.append(f"enrich with /proc lookups took {enrich:.2f} s (median), ausearch {ausearch:.2f} s: "
                        f"more than {max_ratio:.2f} of it")
    full = max(r.peak_rss_mib for r in runs[ENRICH])
    small = max(r.peak_rss_mib for r in runs[ENRICH_QUARTER])
    if full > small * 1.25 + 4:
        problems.append(f"peak RSS grew with the input: {small:.1f} MiB for 1/4 of the lines, {full:.1f} MiB "
                        "for all")
    outputs = {r.output_lines for r in runs[ENRICH] + runs[ENRICH_PROC]}
    if len(outputs) != 1:
        problems.append(f"the enricher runs wrote different numbers of lines: {sorted(outputs)}")
    return problems


def _count(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


if __name__ == "__main__":
    main()
