"""`syscribe enrich` as a user meets it: its options, its one-line errors, stdout, signals, metrics."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from syscribe.enricher import checkpoint as cpmod
from tests.support import unprivileged
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")

LINE = (
    "type=SECCOMP msg=audit(1700000000.123:{n}): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=1{n} "
    'comm="mkdir" exe="/bin/busybox" sig=0 arch=c000003e syscall=83 compat=0 ip=0x47b567 code=0x7ffc0000\n'
)


def enrich(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSCRIBE, "enrich", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, **kw)  # type: ignore[call-overload]


def log_with(path: Path, count: int) -> Path:
    path.write_text("".join(LINE.format(n=n) for n in range(count)))
    return path


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error a user sees: one line, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, done
    error = [line for line in lines if line.startswith("Error:")]
    assert len(error) == 1, done.stderr
    return error[0]


def test_help_lists_every_option() -> None:
    done = enrich("--help")
    assert done.returncode == 0
    for option in ("--source", "--input", "--output", "--follow / --no-follow", "--checkpoint", "--start",
                   "--namespace", "--type", "--action", "--metrics-port", "--metrics-textfile"):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "tape"], "'tape' is not one of"),
        (["--start", "middle"], "'middle' is not one of"),
        (["--start", "checkpoint", "--no-follow"], "--start checkpoint needs --checkpoint"),
        (["--hold-seconds", "-1"], "must be a finite number >= 0"),
        (["--hold-seconds", "nan"], "must be a finite number >= 0"),
        (["--backlog-seconds", "inf"], "must be a finite number >= 0"),
        (["--metrics-port", "0"], "0 is not in the range"),
        (["--metrics-port", "70000"], "70000 is not in the range"),
        (["--type", "smtp"], "'smtp' is not one of"),
        (["--max-output-bytes", "-5"], "-5 is not in the range"),
        (["--source", "netlink", "--checkpoint", "/tmp/x.json"], "no history, so no checkpoint"),
        (["--source", "netlink", "--input", "/tmp/x"], "--input makes no sense"),
        (["--input", "/tmp/same.log", "--output", "/tmp/same.log"], "must be different files"),
        (["--output", "/tmp/.."], "is not a file path"),
    ],
)
def test_bad_options_are_one_line_usage_errors(args: list[str], message: str) -> None:
    done = enrich(*args, "--no-follow")
    assert done.returncode in (1, 2), done
    assert message in one_line_error(done)


def test_missing_directory_symlink_and_fifo_inputs(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(log_with(tmp_path / "real.log", 1))
    os.mkfifo(tmp_path / "fifo")
    for name, message in (("nothing", "does not exist"), ("dir", "is a directory"), ("link", "symlink"),
                          ("fifo", "not a regular file")):
        done = enrich("--input", str(tmp_path / name), "--no-follow")
        assert done.returncode == 1, done
        assert message in one_line_error(done)


def test_dev_null_and_fifo_outputs_are_written_without_rotation(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 30)
    done = enrich("--input", str(log), "--no-follow", "--output", "/dev/null", "--max-output-bytes", "100",
                  "--checkpoint", str(tmp_path / "cp"))
    assert done.returncode == 0, done
    assert "30 written" in done.stderr
    assert not list(Path("/dev").glob("null.*"))  # never rotated
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        done = enrich("--input", str(log), "--no-follow", "--output", str(fifo), "--max-output-bytes", "100")
        out, _ = reader.communicate(timeout=30)
    finally:
        reader.kill()
        reader.wait()
    assert done.returncode == 0, done
    assert len(out.splitlines()) == 30
    assert [orjson.loads(line)["pid"] for line in out.splitlines()] == [int(f"1{n}") for n in range(30)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "cp", "fifo"]  # no fifo.1


def test_a_block_device_output_is_refused(tmp_path: Path) -> None:
    require("root")
    device = tmp_path / "loop"
    os.mknod(device, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    done = enrich("--input", str(log_with(tmp_path / "audit.log", 1)), "--no-follow", "--output", str(device))
    assert done.returncode == 1, done
    assert "is not a regular file, a FIFO or a character device" in one_line_error(done)


def test_bad_outputs(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 1)
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outlink").symlink_to(tmp_path / "elsewhere")
    for output, message in ((tmp_path / "no" / "such" / "out.json", "does not exist"),
                            (tmp_path / "outdir", "is a directory"),
                            (tmp_path / "outlink", "symlink")):
        done = enrich("--input", str(log), "--no-follow", "--output", str(output))
        assert done.returncode == 1, done
        assert message in one_line_error(done)


@pytest.mark.parametrize(
    "content",
    [b"not json at all", b"\x00\xff" * 50, b'{"version": 1}', b"[" * 100_000, b'{"version": 1, "mark": 5}'],
)
def test_broken_checkpoint_is_a_one_line_error(tmp_path: Path, content: bytes) -> None:
    log = log_with(tmp_path / "audit.log", 1)
    cp = tmp_path / "cp.json"
    cp.write_bytes(content)
    done = enrich("--input", str(log), "--no-follow", "--checkpoint", str(cp))
    assert done.returncode == 1
    assert "fix or delete it" in one_line_error(done)


def test_stdout_and_summary(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 5)
    done = enrich("--input", str(log), "--no-follow", "--output", "-")
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [r["syscallName"] for r in records] == ["mkdir"] * 5
    assert "5 lines" in done.stderr and "5 written" in done.stderr


def test_a_reader_that_goes_away_is_no_error(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 20_000)
    pipe = subprocess.run(f"{SYSCRIBE} enrich --input {log} --no-follow --quiet | head -1",
                          shell=True, capture_output=True, text=True, timeout=120, check=False)
    assert pipe.stdout.count("\n") == 1
    assert "Traceback" not in pipe.stderr and "Error" not in pipe.stderr


def test_other_sources_checkpoint_is_not_used(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 3)
    cp = tmp_path / "cp.json"
    cpmod.save(cp, cpmod.Checkpoint("kmsg", cpmod.KmsgMark("boot", 5)))
    done = enrich("--input", str(log), "--no-follow", "--checkpoint", str(cp), "--output", "-")
    assert done.returncode == 0
    assert "is for source kmsg" in done.stderr
    assert len(done.stdout.splitlines()) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_follow_metrics_and_a_clean_stop(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 3)
    out, cp, prom = tmp_path / "out.json", tmp_path / "cp.json", tmp_path / "metrics.prom"
    port = _free_port()
    process = subprocess.Popen(
        [SYSCRIBE, "enrich", "--input", str(log), "--output", str(out), "--checkpoint", str(cp),
         "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--metrics-textfile", str(prom),
         "--proc", str(tmp_path / "no-proc")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while (not out.exists() or out.read_bytes().count(b"\n") < 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(log, "a") as fh:
            fh.write(LINE.format(n=3))
        while out.read_bytes().count(b"\n") < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'syscribe_enricher_events_total{action="log"' in scraped
        assert 'syscall="mkdir"' in scraped and "syscribe_enricher_lines_total 4.0" in scraped
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert "4 written" in stderr
    saved = cpmod.load(cp)
    assert saved is not None and isinstance(saved.mark, cpmod.FileMark)
    assert saved.mark.offset == log.stat().st_size
    assert "syscribe_enricher_events_total" in prom.read_text()


@pytest.mark.real
def test_unreadable_input_and_sources_that_need_root(tmp_path: Path) -> None:
    """As an unprivileged user (the real permission checks; root bypasses them)."""
    require("root")
    if subprocess.run(["setpriv", "--version"], capture_output=True, check=False).returncode != 0:
        pytest.fail("setpriv (util-linux) is needed to run as an unprivileged user")
    log = log_with(tmp_path / "audit.log", 1)
    log.chmod(0o600)
    tmp_path.chmod(0o755)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    env = {**os.environ, "HOME": "/tmp"}

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        # A copy nobody can reach: the checkout itself may be closed to other users.
        return subprocess.run([*nobody, str(unprivileged.reachable().syscribe), "enrich", *args],
                              capture_output=True, text=True, timeout=60, check=False, env=env, cwd="/")

    done = as_nobody("--input", str(log), "--no-follow")
    assert done.returncode == 1 and "permission denied" in one_line_error(done).lower()
    done = as_nobody("--source", "netlink", "--no-follow")
    assert done.returncode == 1 and "CAP_AUDIT_READ" in one_line_error(done)


def test_only_a_resuming_run_cuts_the_output_back(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 3)
    out, cp = tmp_path / "out.json", tmp_path / "cp.json"
    first = enrich("--input", str(log), "--no-follow", "--output", str(out), "--checkpoint", str(cp))
    assert first.returncode == 0
    with open(out, "a") as fh:
        fh.write('{"written": "after the checkpoint, by someone"}\n')
    done = enrich("--input", str(log), "--no-follow", "--output", str(out), "--checkpoint", str(cp),
                  "--start", "end")
    assert done.returncode == 0, done.stderr
    assert out.read_text().count("\n") == 4  # untouched: this run does not write those lines again
    # and its own checkpoint now covers the whole output: resuming from it cuts nothing either
    done = enrich("--input", str(log), "--no-follow", "--output", str(out), "--checkpoint", str(cp))
    assert "after the last checkpoint" not in done.stderr and out.read_text().count("\n") == 4


def test_metrics_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    log = log_with(tmp_path / "audit.log", 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = enrich("--input", str(log), "--no-follow", "--metrics-port", str(port),
                      "--metrics-addr", "127.0.0.1")
    assert done.returncode == 1
    assert f"cannot serve metrics on port {port}" in one_line_error(done)
