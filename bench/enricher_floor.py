"""What a SECCOMP event costs the enricher, part by part, against the time ausearch gives it:
`python -m bench.enricher_floor`.

bench/enricher.py times whole runs. This one answers why the storm's target (a third of ausearch's
time) is out of reach for this design in Python: it generates the denial storm's log (70% SECCOMP
records, as bench/enricher.py does), times ausearch on it, and divides a third of that time by the
number of SECCOMP events: the budget of one event, everything included. Then it times, in this process
and each on the same SECCOMP lines, the parts every such event goes through, each one already a
single C call (a regex, a syscall, orjson) with the least Python around it:

- the loop's look at a line (the `type=` token, its count) and the event from the record alone
  (EventAssembler.feed_many on SECCOMP lines only: the fast path, one anchored regex);
- the container lookup of a pid that is gone, the first time (kill(pid, 0)) and from the negative
  cache afterwards (ContainerResolver.lookup);
- the enriched line (enrichedline.build_record and orjson).

Their sum is a floor for the event in Python: the run also reads, splits, writes, counts and keeps
its checkpoints. Then whole runs over the storm's log: ausearch, `syscribe enrich`, and the least
loop (least_loop: only what a SECCOMP line needs, none of the enricher's order, joins, checkpoints or
container lookups), each against ausearch. CPU time (user + system), best of --repeat, so that a busy
neighbour counts least.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.enricher import PID_BASE, SYSCRIBE, generate
from syscribe.enricher import enrichedline
from syscribe.enricher.allocator import keep_freed_heap
from syscribe.enricher.auditparse import seccomp_action
from syscribe.enricher.containers import PID_MAX, ContainerResolver
from syscribe.enricher.events import _SECCOMP_LINE, AuditEvent, EventAssembler, syscall_identity
from syscribe.enricher.gonepids import GonePids
from syscribe.enricher.metrics import Metrics
from syscribe.syscalls import name_of

_PID = re.compile(rb" pid=(\d+) ").search


def best_cpu(run: Callable[[], object], repeat: int) -> float:
    """The least CPU time of `repeat` runs (seconds), with the collector set as `syscribe enrich` sets it."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def ausearch_cpu(log: Path) -> float:
    """ausearch's own CPU time (user + system, from its rusage) on the log."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        ["ausearch", "-i", "--input", str(log), "-m", "SECCOMP"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def least_loop(log: Path, out: Path) -> int:
    """The least Python that does a SECCOMP line's work, and nothing else: read in 1 MiB chunks, the
    anchored regex, the pid against the negative cache (kill(pid, 0) the first time), the syscall's
    name once per (arch, number), the line's dict and orjson, one write per chunk. No other record
    type, no order to keep, no checkpoint, no container to find. Returns the events written."""
    gone = GonePids(PID_MAX, time.time(), margin=4.0)
    now = time.time()
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    names: dict[tuple[str, str], tuple[str | None, int | None, str | None]] = {}
    written = 0
    with open(log, "rb") as source, open(out, "wb") as sink:
        while chunk := source.readlines(1 << 20):
            lines = []
            for line in chunk:
                if not line.startswith(b"type=SECCOMP "):
                    continue
                end = line.find(b"\x1d", 12)
                match = _SECCOMP_LINE(
                    (line[12:end] if end >= 0 else line[12:]).decode("utf-8", "backslashreplace")
                )
                if match is None:
                    continue
                audit_id, stamp, auid, uid, _, _, _, pid, comm, _, exe, _, _, arch, nr, _, _, code = (
                    match.groups()
                )
                number, at = int(pid), float(stamp)
                if not gone.gone(number, at):
                    try:
                        os.kill(number, 0)
                    except ProcessLookupError:
                        gone.add(number, now)
                named = names.get((arch, nr))
                if named is None:
                    arch_id, nr_id = syscall_identity(arch, nr)
                    name = name_of(arch_id, nr_id) if arch_id is not None and nr_id is not None else None
                    named = names[(arch, nr)] = (arch_id.name if arch_id else None, nr_id, name)
                action, errno = seccomp_action(code)
                record = {
                    "timestamp": enrichedline.rfc3339(at),
                    "type": "seccomp",
                    "node": "node",
                    "namespace": None,
                    "pod": None,
                    "container": None,
                    "executable": exe,
                    "pid": number,
                    "syscallID": named[1],
                    "syscallName": named[2],
                    "arch": named[0],
                    "action": action,
                    "errno": errno,
                    "comm": comm,
                    "uid": int(uid),
                    "auid": int(auid),
                    "containerID": None,
                    "podUID": None,
                    "runtime": None,
                    "auditID": audit_id,
                    "recordType": "SECCOMP",
                    "labels": {},
                }
                lines.append(dumps(record, option=option))
            sink.write(b"".join(lines))
            written += len(lines)
    return written


def enrich_cpu(log: Path, out: Path) -> float:
    """`syscribe enrich --no-follow`'s CPU time on the log, with /proc lookups (as bench/enricher.py)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            SYSCRIBE,
            "enrich",
            "--no-follow",
            "--input",
            str(log),
            "--output",
            str(out),
            "--quiet",
            "--max-output-bytes",
            "0",
        ],
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.unlink()
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000, help="SECCOMP lines the parts are timed on")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="syscribe-floor-") as work:
        log = Path(work) / "storm.log"
        counts = generate(log, args.lines, seccomp_share=0.7)
        cpu = min(ausearch_cpu(log) for _ in range(args.repeat))
        enrich = min(enrich_cpu(log, Path(work) / "enriched.json") for _ in range(args.repeat))
        keep_freed_heap()  # as the enricher does
        least = best_cpu(lambda: least_loop(log, Path(work) / "least.json"), args.repeat)
        lines: list[bytes] = []
        others: list[bytes] = []
        all_pids: set[bytes] = set()
        with open(log, "rb") as fh:
            for record in fh:
                if not record.startswith(b"type=SECCOMP "):
                    if len(others) < args.sample:
                        others.append(record)
                else:
                    if len(lines) < args.sample:
                        lines.append(record)
                    found = _PID(record)
                    if found is not None:
                        all_pids.add(found[1])
    events_per_line = counts["SECCOMP"] / counts["lines"]
    budget = cpu / 3 / counts["SECCOMP"]
    n = len(lines)

    def assemble(keep: list[AuditEvent] | None = None) -> None:
        assembler = EventAssembler(seccomp_alone=True)
        for at in range(0, n, 4096):
            for _, events in assembler.feed_many(lines[at : at + 4096], at, 0.0):
                if keep is not None:
                    keep.extend(events)

    gc.set_threshold(50_000, 20, 100)  # as enricher/cli.py sets it
    parse = best_cpu(assemble, args.repeat) / n
    parsed: list[AuditEvent] = []
    assemble(parsed)
    gc.freeze()  # the sample's events are input from here on, not garbage to look through
    pids = [event.pid or PID_BASE for event in parsed]
    stamps = [event.timestamp for event in parsed]

    def first_lookups() -> None:
        resolver = ContainerResolver()  # a new one each round: every pid is new to it
        for pid, stamp in zip(pids, stamps, strict=True):
            resolver.lookup(pid, stamp)

    first = best_cpu(first_lookups, args.repeat) / n
    resolver = ContainerResolver()
    for pid, stamp in zip(pids, stamps, strict=True):
        resolver.lookup(pid, stamp)

    def cached_lookups() -> None:
        for pid, stamp in zip(pids, stamps, strict=True):
            resolver.lookup(pid, stamp)

    def lines_out() -> None:
        build, encode = enrichedline.build_record, enrichedline.encode
        for event in parsed:
            encode(build(event, None, "node"))

    texts = [
        line[line.find(b" ", 5) :].split(b"\x1d", 1)[0].decode("utf-8", "backslashreplace") for line in lines
    ]
    records = [enrichedline.build_record(event, None, "node") for event in parsed]
    gc.freeze()

    def regex_alone() -> None:
        for text in texts:
            _SECCOMP_LINE(text)

    def orjson_alone() -> None:
        dumps = orjson.dumps
        for record in records:
            dumps(record)

    regex = best_cpu(regex_alone, args.repeat) / n
    encode = best_cpu(orjson_alone, args.repeat) / n
    cached = best_cpu(cached_lookups, args.repeat) / n

    def bare_cache(gone: GonePids) -> None:
        # The least loop's lookup: the negative cache and kill(pid, 0), no history, no lock.
        now = time.time()
        for pid, stamp in zip(pids, stamps, strict=True):
            if not gone.gone(pid, stamp):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    gone.add(pid, now)

    def other_lines() -> None:
        assembler = EventAssembler(seccomp_alone=True)
        for at in range(0, len(others), 4096):
            assembler.feed_many(others[at : at + 4096], at, 0.0)

    def event_counter() -> None:
        metrics = Metrics()
        for record in records:
            metrics.event(record)

    bare_first = best_cpu(lambda: bare_cache(GonePids(PID_MAX, time.time(), margin=4.0)), args.repeat) / n
    warm = GonePids(PID_MAX, time.time(), margin=4.0)
    bare_cache(warm)
    bare_cached = best_cpu(lambda: bare_cache(warm), args.repeat) / n
    other = best_cpu(other_lines, args.repeat) / max(1, len(others))
    counter = best_cpu(event_counter, args.repeat) / n
    line = best_cpu(lines_out, args.repeat) / n
    # In the whole storm, this share of the events is a pid's first (the rest find it in the cache).
    share_first = len(all_pids) / counts["SECCOMP"]
    lookup = share_first * first + (1 - share_first) * cached
    bare = share_first * bare_first + (1 - share_first) * bare_cached
    floor = parse + lookup + line
    us = 1e6
    print(
        f"denial storm: {counts['lines']} lines, {counts['SECCOMP']} SECCOMP events "
        f"({events_per_line:.0%}); ausearch {cpu:.2f} s CPU (best of {args.repeat})"
    )
    print(f"budget per SECCOMP event (a third of ausearch's time): {budget * us:.2f} µs")
    print(f"parts, each timed alone on {n} SECCOMP lines (CPU, best of {args.repeat}), pid {os.getpid()}:")
    rows = [
        ("line look + event from the record alone", parse),
        ("  of which the anchored regex alone", regex),
        (
            f"lookup of a gone pid: first time {first * us:.2f} µs, cached {cached * us:.2f} µs, "
            f"{share_first:.0%} first",
            lookup,
        ),
        ("enriched line (dict + orjson)", line),
        ("  of which orjson alone", encode),
        ("sum: a floor for one event", floor),
    ]
    for name, seconds in rows:
        if name.startswith("  "):
            print(f"  {name:<70} ({seconds * us:5.2f} µs)")
            continue
        print(f"  {name:<70} {seconds * us:6.2f} µs")
    print(f"floor / budget: {floor / budget:.2f}")
    other_per_event = other * (counts["lines"] - counts["SECCOMP"]) / counts["SECCOMP"]
    added = other_per_event + max(0.0, lookup - bare) + counter
    least_enricher = least + added * counts["SECCOMP"]
    print("what the enricher must do beyond the least loop, at the least (per SECCOMP event):")
    print(
        f"  the other {counts['lines'] - counts['SECCOMP']} lines through the assembler's loop"
        f" ({other * us:.2f} µs a line)".ljust(72)
        + f" {other_per_event * us:6.2f} µs"
    )
    print(
        f"  the resolver's lookup over the bare negative cache ({bare * us:.2f} µs)".ljust(72)
        + f" {max(0.0, lookup - bare) * us:6.2f} µs"
    )
    print("  the event counter (metrics.event)".ljust(72) + f" {counter * us:6.2f} µs")
    print("whole runs on the storm's log (CPU, best of each):")
    print(f"  ausearch -i -m SECCOMP {cpu:8.2f} s  1.00x")
    print(f"  syscribe enrich        {enrich:8.2f} s  {enrich / cpu:.2f}x")
    print(f"  the least loop         {least:8.2f} s  {least / cpu:.2f}x  (target: 0.33x)")
    print(f"  + what it must add     {least_enricher:8.2f} s  {least_enricher / cpu:.2f}x  (estimated)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
