"""The `syscribe` command. Each subcommand lives in its own module and is imported only when run, so
`syscribe enrich` does not pay for eBPF and `syscribe record` does not pay for the enricher."""

from __future__ import annotations

import importlib

import click

from syscribe import __version__

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "record": "syscribe.commands.record:record",
    "recorder": "syscribe.commands.recorder:recorder",
    "run": "syscribe.commands.run:run",
    "merge": "syscribe.commands.profiles:merge",
    "convert": "syscribe.commands.profiles:convert",
    "doctor": "syscribe.commands.doctor:doctor",
    "demo": "syscribe.commands.demo:demo",
    "install-hook": "syscribe.commands.install_hook:install_hook",
    "enrich": "syscribe.enricher.cli:enrich",
    "webhook": "syscribe.commands.controller:webhook",
    "agent": "syscribe.commands.controller:agent",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syscribe")
def main() -> None:
    """Record seccomp profiles with eBPF, enforce and merge them, and explain denials."""
