"""100,000 records written while the log is rotated (rename and copytruncate, in turns) and the enricher
is killed with SIGKILL and restarted from its checkpoint, again and again: the output (rotated by the
enricher itself as it grows) holds each record exactly once.

The writer is this test: it appends records in chunks, rotates between chunks, and kills the running
`syscribe enrich` at chosen moments (a fixed seed: the run can be replayed). Copy and truncate are done
with no write between them, as a writer that holds off while logrotate works; what copytruncate loses
by design (writes between the copy and the truncation) is not what this test is about.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")
TOTAL = 100_000
CHUNK = 1_000
ROTATE_EVERY = 10  # chunks


def record_lines(serial: int) -> list[str]:
    """One record: mostly standalone SECCOMP lines; every 50th an AVC with companions and an EOE."""
    stamp = f"audit(1700000000.{serial % 1000:03d}:{serial})"
    if serial % 50 == 0:
        return [
            f'type=AVC msg={stamp}: avc:  denied  {{ read }} for  pid={1000 + serial % 300} comm="cat" '
            'name="x" scontext=system_u:system_r:container_t:s0 tcontext=system_u:object_r:etc_t:s0 '
            "tclass=file permissive=0\n",
            f"type=SYSCALL msg={stamp}: arch=c000003e syscall=257 success=no exit=-13 ppid=1 "
            f'pid={1000 + serial % 300} uid=0 comm="cat" exe="/bin/cat" key=(null)\n',
            f"type=PROCTITLE msg={stamp}: proctitle=636174\n",
            f"type=EOE msg={stamp}: \n",
        ]
    return [
        f"type=SECCOMP msg={stamp}: auid=4294967295 uid=0 gid=0 ses=4294967295 pid={1000 + serial % 300} "
        f'comm="w" exe="/bin/w" sig=0 arch=c000003e syscall={serial % 300} compat=0 ip=0x1 code=0x7ffc0000\n'
    ]


class Logs:
    """audit.log and its rotated copies audit.log.1 (newest) ... audit.log.N."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rotations = 0

    def append(self, lines: list[str]) -> None:
        with open(self.path, "a") as fh:
            fh.write("".join(lines))

    def _shift(self) -> None:
        olds = sorted(
            (p for p in self.path.parent.glob(self.path.name + ".*") if p.name.rsplit(".", 1)[1].isdigit()),
            key=lambda p: int(p.name.rsplit(".", 1)[1]),
            reverse=True,
        )
        for p in olds:
            n = int(p.name.rsplit(".", 1)[1])
            os.rename(p, self.path.with_name(f"{self.path.name}.{n + 1}"))

    def rotate(self) -> None:
        self._shift()
        if self.rotations % 2 == 0:
            os.rename(self.path, self.path.with_name(self.path.name + ".1"))
            self.path.touch()
        else:
            shutil.copyfile(self.path, self.path.with_name(self.path.name + ".1"))
            os.truncate(self.path, 0)
        self.rotations += 1


class Enricher:
    def __init__(self, tmp: Path, log: Path) -> None:
        self.tmp, self.log = tmp, log
        self.out = tmp / "out" / "enriched.json"
        self.out.parent.mkdir()
        self.cp = tmp / "cp.json"
        self.err = open(tmp / "enrich.err", "ab")  # noqa: SIM115 (kept open across restarts)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.mark_at_start: object = None

    def command(self, *extra: str) -> list[str]:
        return [
            SYSCRIBE, "enrich", "--source", "auditd", "--input", str(self.log), "--output", str(self.out),
            "--checkpoint", str(self.cp), "--hold-seconds", "0.05", "--checkpoint-interval", "0.1",
            "--max-output-bytes", str(2 * 1024 * 1024), "--output-backups", "1000",
            "--proc", str(self.tmp / "no-proc"), *extra,
        ]

    def _mark(self) -> object:
        try:
            return orjson.loads(self.cp.read_bytes())["mark"]
        except (OSError, ValueError, KeyError):
            return None

    def wait_progress(self, timeout: float = 60.0) -> None:
        """Until this run has checkpointed a resume point of its own."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark = self._mark()
            if mark is not None and mark != self.mark_at_start:
                return
            time.sleep(0.01)
        raise AssertionError(f"no progress in {timeout} s: {(self.tmp / 'enrich.err').read_text()[-2000:]}")

    def start(self) -> None:
        self.mark_at_start = self._mark()
        first = self.starts == 0
        self.starts += 1
        start = ["--start", "beginning"] if first else ["--start", "checkpoint"]
        self.process = subprocess.Popen(self.command(*start), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self.err)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.process = None

    def finish(self) -> None:
        """A last run that reads whatever is left and exits."""
        if self.process is not None:
            self.kill()
        done = subprocess.run(self.command("--start", "checkpoint", "--no-follow"), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=self.err, timeout=600, check=False)
        assert done.returncode == 0, (self.tmp / "enrich.err").read_text()[-3000:]
        self.err.close()

    def audit_ids(self) -> list[str]:
        ids = []
        for path in self.out.parent.iterdir():
            for line in path.read_bytes().splitlines():
                ids.append(orjson.loads(line)["auditID"])
        return ids


@pytest.mark.slow
def test_rotation_and_kill9_while_writing_100k_records(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    chunks = TOTAL // CHUNK
    kills = set(rng.sample(range(2, chunks), 8)) | {ROTATE_EVERY * 3, ROTATE_EVERY * 3 + 1, ROTATE_EVERY * 6}
    logs = Logs(tmp_path / "audit.log")
    logs.path.touch()
    enricher = Enricher(tmp_path, logs.path)
    enricher.start()
    # Its first checkpoint says it has the file open: from then on nothing written can pass it by.
    enricher.wait_progress()
    serial = 0
    try:
        for chunk in range(chunks):
            lines: list[str] = []
            for _ in range(CHUNK):
                serial += 1
                lines += record_lines(serial)
            logs.append(lines)
            if chunk % ROTATE_EVERY == ROTATE_EVERY - 1:
                logs.rotate()
            if chunk in kills:
                # Once this run has made progress (a checkpoint of its own), kill it at some moment.
                enricher.wait_progress()
                time.sleep(rng.uniform(0.0, 0.15))
                enricher.kill()
                enricher.start()
            time.sleep(0.005)
        enricher.finish()
    finally:
        if enricher.process is not None:
            enricher.kill()
    ids = enricher.audit_ids()
    counts = Counter(ids)
    twice = [i for i, n in counts.items() if n > 1]
    want = {f"1700000000.{s % 1000:03d}:{s}" for s in range(1, TOTAL + 1)}
    missing = want - set(counts)
    assert not twice, f"{len(twice)} written twice, e.g. {twice[:5]}"
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:5]}"
    assert set(counts) == want
    assert enricher.starts >= 9 and logs.rotations == chunks // ROTATE_EVERY
    assert len(list(enricher.out.parent.iterdir())) > 3  # its own output was rotated too
