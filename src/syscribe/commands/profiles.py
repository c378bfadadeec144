"""`syscribe merge` and `syscribe convert`, and the profile file handling the other commands share."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from syscribe import fsutil, profilemerge, runtimes
from syscribe import ociprofile as prof
from syscribe import seccompprofile as spo
from syscribe.ociprofile import Profile, ProfileError

# merge and convert: 1 means "A does not cover the others" for --check, so errors take 2 (like diff).
EXIT_ERROR = 2


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then exit: the way every expected failure ends."""
    click.echo(f"syscribe: {message}", err=True)
    sys.exit(code)


def warn(message: str) -> None:
    click.echo(f"syscribe: warning: {message}", err=True)


def read_profile(path: str) -> spo.Loaded:
    """Read an OCI JSON or SeccompProfile file (`-` for stdin). ProfileError / FsError name the file."""
    if path == "-":
        data = sys.stdin.buffer.read(fsutil.DEFAULT_READ_LIMIT + 1)
        if len(data) > fsutil.DEFAULT_READ_LIMIT:
            raise fsutil.FsError(f"stdin: more than {fsutil.DEFAULT_READ_LIMIT} bytes; refused")
        shown = "stdin"
    else:
        data = fsutil.read_limited(path)
        shown = path
    try:
        return spo.loads(data)
    except ProfileError as exc:
        raise ProfileError(f"{shown}: {exc}") from None


def load_or_fail(path: str, code: int) -> spo.Loaded:
    try:
        return read_profile(path)
    except (ProfileError, fsutil.FsError) as exc:
        fail(str(exc), code)


def render(profile: Profile, fmt: str, name: str | None) -> str:
    if fmt == "seccompprofile":
        return spo.dumps(profile, name or "syscribe-profile")
    return prof.dumps(profile)


def emit(text: str, output: str | None, code: int) -> None:
    """Write to `output` atomically, or to stdout when there is none."""
    if output is None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            pass  # the reader went away (`| head`); nothing left to tell it
        return
    try:
        fsutil.write_atomic(output, text)
    except fsutil.FsError as exc:
        fail(str(exc), code)


def check_output(output: str | None, code: int) -> None:
    if output is None:
        return
    try:
        fsutil.check_writable_dir(output)
    except fsutil.FsError as exc:
        fail(str(exc), code)


def check_name(name: str | None, fmt: str, code: int) -> None:
    if name is None:
        return
    if fmt != "seccompprofile":
        fail("--name is the SeccompProfile's metadata.name; use it with --format seccompprofile", code)
    try:
        spo.check_name(name)
    except ProfileError as exc:
        fail(f"--name: {exc}", code)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--output", metavar="FILE", help="Write here (atomically) instead of stdout.")
@click.option(
    "--check", is_flag=True, help="Exit 1 and list what the first profile lacks to cover the others."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(spo.FORMATS),
    help="Output format (default: the first profile's).",
)
@click.option("--name", help="metadata.name of a SeccompProfile output (default: the first profile's).")
@click.option(
    "--for-runtime",
    type=click.Choice(sorted(runtimes.AFTER_FILTER)),
    help="Also allow what this runtime itself calls after loading the filter (see docs/profile-format.md).",
)
@click.argument("profiles", nargs=-1, metavar="A [B...]")
def merge(
    output: str | None,
    check: bool,
    fmt: str | None,
    name: str | None,
    for_runtime: str | None,
    profiles: Sequence[str],
) -> None:
    """Union of profiles: allows what any of them allows. With --check, is A a superset of B...?

    Each profile is OCI seccomp JSON or a SeccompProfile resource (YAML or JSON).
    """
    if not profiles:
        fail("no profiles given; usage: syscribe merge [-o FILE] [--check] A [B...]", EXIT_ERROR)
    if check:
        if len(profiles) < 2:
            fail("--check compares the first profile with the others; give at least two", EXIT_ERROR)
        if output is not None or fmt is not None or name is not None or for_runtime is not None:
            fail("--check only reports; it takes no -o, --format, --name or --for-runtime", EXIT_ERROR)
    loaded = [load_or_fail(p, EXIT_ERROR) for p in profiles]
    if check:
        cover = profilemerge.coverage(loaded[0].profile, [x.profile for x in loaded[1:]])
        if cover.ok:
            click.echo(f"syscribe: {profiles[0]} covers {', '.join(profiles[1:])}", err=True)
            return
        click.echo(f"{profiles[0]} lacks what {', '.join(profiles[1:])} allow:")
        for line in cover.lines():
            click.echo(f"  {line}")
        sys.exit(1)
    fmt = fmt or loaded[0].format
    check_name(name, fmt, EXIT_ERROR)
    check_output(output, EXIT_ERROR)
    try:
        merged = profilemerge.union([x.profile for x in loaded])
        result = merged.profile
        if for_runtime is not None:
            result = profilemerge.for_runtime(result, for_runtime)
        text = render(result, fmt, name or loaded[0].name or spo.name_for(output or profiles[0]))
    except ProfileError as exc:
        fail(str(exc), EXIT_ERROR)
    for message in merged.warnings:
        warn(message)
    emit(text, output, EXIT_ERROR)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--to",
    "to",
    type=click.Choice(spo.FORMATS),
    help="Target format (default: the other one).",
)
@click.option("--name", help="metadata.name of a SeccompProfile (default: the input's, or its file name).")
@click.option("-o", "--output", metavar="OUT", help="Write here (atomically) instead of stdout.")
@click.argument("source", metavar="IN")
def convert(to: str | None, name: str | None, output: str | None, source: str) -> None:
    """Convert between OCI seccomp JSON and a SeccompProfile resource (IN may be - for stdin)."""
    loaded = load_or_fail(source, EXIT_ERROR)
    to = to or ("oci" if loaded.format == "seccompprofile" else "seccompprofile")
    check_name(name, to, EXIT_ERROR)
    check_output(output, EXIT_ERROR)
    default_name = loaded.name or spo.name_for(source if source != "-" else (output or "profile"))
    try:
        text = render(loaded.profile, to, name or default_name)
    except ProfileError as exc:
        fail(f"{source}: {exc}", EXIT_ERROR)
    emit(text, output, EXIT_ERROR)
