"""`syscribe run --profile P -- CMD`: run CMD under profile P, loaded by libseccomp in the child right
before exec, the way runc and crun do it. The quick check of a profile without a container."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from syscribe import killedby, seccomp
from syscribe.commands.profiles import fail, load_or_fail, warn
from syscribe.usercommand import (
    CommandError,
    CommandNotExecutableError,
    CommandNotFoundError,
    resolve_command,
    shell_status,
)

# Like podman and env: 125 when syscribe itself fails, 126 when CMD cannot run, 127 when it is missing.
EXIT_OWN = 125
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
# Python ignores these; ignored dispositions survive exec, so the command gets the defaults back.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT)
_FORWARDED = (signal.SIGTERM, signal.SIGHUP)


def resolve(argv: Sequence[str]) -> str:
    """The file execve will run, found as a shell finds it; exits 127/126/125 with one line otherwise."""
    try:
        return resolve_command(argv, os.environ)
    except CommandNotFoundError as exc:
        fail(f"{exc.command}: command not found", EXIT_NOT_FOUND)
    except CommandNotExecutableError as exc:
        fail(f"{exc.command}: {exc.reason}", EXIT_CANNOT_RUN)
    except CommandError as exc:
        fail(str(exc), EXIT_OWN)


def _child(filt: seccomp.Filter, path: str, argv: Sequence[str], report_w: int) -> NoReturn:
    """Runs in the forked child: load the filter, exec. From the load on, every syscall is filtered."""
    stage = "load"
    try:
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        filt.load()
        stage = "exec"
        os.execve(path, list(argv), os.environ)
    except BaseException as exc:  # nothing may escape the child into the parent's code
        if isinstance(exc, OSError) and exc.errno:
            text = f"{stage}:{exc.errno}:{exc.strerror}"
        else:
            text = f"{stage}:0:{exc}"
        try:
            os.write(report_w, text.encode(errors="replace")[:4096])
        finally:
            os._exit(EXIT_CANNOT_RUN if stage == "exec" else EXIT_OWN)
    os._exit(EXIT_OWN)  # not reached: execve does not return


def run_under(filt: seccomp.Filter, path: str, argv: Sequence[str]) -> tuple[int, str | None, int]:
    """Fork, load `filt` in the child, exec; the shell-style status, the child's own error, if any, and
    its pid."""
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        _child(filt, path, argv, report_w)
    os.close(report_w)
    previous = {sig: signal.signal(sig, lambda s, _f: os.kill(pid, s)) for sig in _FORWARDED}
    # A terminal's ^C reaches the whole process group; the command decides what it means.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with os.fdopen(report_r, "rb") as pipe:
            report = pipe.read(4097)  # EOF at the exec (close-on-exec) or at the child's exit
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return shell_status(status), (report.decode(errors="replace") if report else None), pid


@click.command(context_settings={"help_option_names": ["-h", "--help"], "allow_interspersed_args": False})
@click.option("-p", "--profile", "profile_path", metavar="P", help="OCI seccomp JSON or SeccompProfile YAML.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS...]")
def run(profile_path: str | None, command: Sequence[str]) -> None:
    """Run CMD with profile P enforced, loaded just before exec as a runtime would; exit with CMD's status."""
    if profile_path is None:
        fail("no profile given; usage: syscribe run --profile P -- CMD [ARGS...]", EXIT_OWN)
    if not command:
        fail("no command given; usage: syscribe run --profile P -- CMD [ARGS...]", EXIT_OWN)
    loaded = load_or_fail(profile_path, EXIT_OWN)
    try:
        filt = seccomp.build(loaded.profile)
    except seccomp.SeccompError as exc:
        fail(f"{profile_path}: {exc}", EXIT_OWN)
    # Opened before the command starts, so that the record of a kill is not missed (root only).
    tap = killedby.AuditTap()
    try:
        for message in filt.warnings:
            warn(message)
        path = resolve(command)
        status, report, pid = run_under(filt, path, command)
        if report is None and status > 128:
            signum = status - 128
            record = tap.record_for(pid) if signum == signal.SIGSYS else None
            verdict = killedby.explain(command[0], signum, loaded.profile, record)
            if verdict is not None:
                click.echo(f"syscribe: {verdict}", err=True)
    finally:
        tap.close()
        filt.release()
    if report is not None:
        stage, _, rest = report.partition(":")
        err, _, text = rest.partition(":")
        if stage == "exec":
            hint = " (does the profile allow execve?)" if err == str(errno.EPERM) else ""
            fail(f"cannot run {command[0]}: {text}{hint}", status)
        fail(f"{profile_path}: {text}", status)
    sys.exit(status)
