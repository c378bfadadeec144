"""`syscribe record -- CMD`: record CMD's syscalls with eBPF and write them as a seccomp profile."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from syscribe import ociprofile as prof
from syscribe import profilemerge, runtimes, syscalls
from syscribe import seccompprofile as spo
from syscribe.commands.profiles import check_name, check_output, emit, fail, render, warn
from syscribe.commands.run import EXIT_CANNOT_RUN, EXIT_NOT_FOUND, EXIT_OWN
from syscribe.ociprofile import ProfileError
from syscribe.recorder.base import RecorderError
from syscribe.recorder.names import NamedSyscalls, name_recording
from syscribe.recorder.workload import record_command
from syscribe.usercommand import CommandError, CommandNotExecutableError, CommandNotFoundError

BACKENDS = ("auto", "core", "bcc")


def summary(named: NamedSyscalls, seconds: float, backend: str, command: str, status: int) -> str:
    """The one-line report on stderr: how many syscalls, per architecture, how long, how CMD ended."""
    per_arch = ", ".join(
        f"{arch}: {len(names)}" for arch, names in sorted(named.by_arch.items(), key=lambda kv: kv[0].name)
    )
    unknown = sum(len(nrs) for nrs in named.unknown.values())
    extra = f", {unknown} unnamed" if unknown else ""
    return (
        f"recorded {len(named.names)} syscalls ({per_arch or 'none'}{extra}) from {command} in "
        f"{seconds:.3f} s with the {backend} backend; it exited with status {status}"
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"], "allow_interspersed_args": False})
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Write the profile here (atomically); without it, to stdout after CMD's own output.",
)
@click.option("--format", "fmt", type=click.Choice(spo.FORMATS), default="oci", show_default=True)
@click.option("--name", help="metadata.name of the SeccompProfile (default: from the command's name).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option(
    "--for-runtime",
    type=click.Choice(sorted(runtimes.AFTER_FILTER)),
    help="Also allow what this runtime itself calls after loading the filter, so that the profile can "
    "be enforced in a container it starts (CMD was recorded outside any runtime).",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS...]")
def record(
    output: str | None,
    fmt: str,
    name: str | None,
    backend: str,
    for_runtime: str | None,
    command: Sequence[str],
) -> None:
    """Run CMD, record every syscall it and its children make, and write the profile; exit with CMD's
    status."""
    if not command:
        fail("no command given; usage: syscribe record [-o FILE] -- CMD [ARGS...]", EXIT_OWN)
    # Everything that can be wrong with the options is found before CMD runs: a recording is not free
    # to repeat (it may have side effects).
    check_name(name, fmt, EXIT_OWN)
    check_output(output, EXIT_OWN)
    try:
        native = syscalls.native()
    except ValueError as exc:
        fail(str(exc), EXIT_OWN)
    try:
        result = record_command(list(command), backend=backend)
    except CommandNotFoundError as exc:
        fail(f"{exc.command}: command not found", EXIT_NOT_FOUND)
    except CommandNotExecutableError as exc:
        fail(str(exc), EXIT_CANNOT_RUN)
    except CommandError as exc:
        fail(str(exc), EXIT_OWN)
    except RecorderError as exc:
        fail(str(exc), EXIT_OWN)
    named = name_recording(result.recording)
    click.echo(
        "syscribe: "
        + summary(named, result.seconds, result.recording.backend, command[0], result.exit_status),
        err=True,
    )
    for message in [*result.recording.warnings, *named.warnings()]:
        warn(message)
    try:
        profile = prof.from_names(named.names, native)
        if for_runtime is not None:
            profile = profilemerge.for_runtime(profile, for_runtime)
        text = render(profile, fmt, name or spo.name_for(command[0]))
    except ProfileError as exc:
        fail(f"{exc}; nothing written (the command exited with status {result.exit_status})", EXIT_OWN)
    emit(text, output, EXIT_OWN)
    if output is not None:
        click.echo(f"syscribe: wrote {output}", err=True)
    sys.exit(result.exit_status)
