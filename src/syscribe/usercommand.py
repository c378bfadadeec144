"""The command a user asks syscribe to run (`record -- CMD`, `run -- CMD`): found as a shell finds it,
refused with the shell's reasons, and its end reported as a shell reports it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path


class CommandError(Exception):
    """The command line cannot be run at all (syscribe exits 125)."""


class CommandNotFoundError(CommandError):
    """The command does not exist (a shell exits 127)."""

    def __init__(self, command: str, detail: str = "") -> None:
        self.command = command
        super().__init__(f"command not found: {command}{detail}")


class CommandNotExecutableError(CommandError):
    """The command exists but cannot be run (a shell exits 126)."""

    def __init__(self, command: str, reason: str) -> None:
        self.command = command
        self.reason = reason
        super().__init__(f"cannot run {command}: {reason}")


def resolve_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The path execve will run, as a shell finds it; CommandNotFoundError / CommandNotExecutableError."""
    if not argv:
        raise CommandError("no command given: put one after --, e.g. syscribe record -- ls")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise CommandError(f"argument {i} is not a string: {arg!r}")
        if "\0" in arg:
            raise CommandError(f"argument {i} contains a NUL byte, which no command can receive")
    command = argv[0]
    if not command:
        raise CommandNotFoundError("''", " (the command is an empty string)")
    if "/" in command:
        path = Path(command)
        if not path.exists():
            raise CommandNotFoundError(command)
        if path.is_dir():
            raise CommandNotExecutableError(command, "is a directory")
        if not os.access(path, os.X_OK):
            raise CommandNotExecutableError(command, "permission denied (not executable)")
        return command
    found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is None:
        raise CommandNotFoundError(command)
    return found


def shell_status(wait_status: int) -> int:
    """A waitpid status as a shell reports it: the exit code, or 128 + the killing signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code
