"""`syscribe doctor`: print what this node has and lacks for syscribe; exit 1 when the recorder cannot
run with any backend."""

from __future__ import annotations

import sys

import click

from syscribe import doctor as checks


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def doctor() -> None:
    """Check root, capabilities, BTF, tracefs, libbpf, bcc, libseccomp, lockdown, seccomp, audit and an
    OCI runtime; print each as ok or what to install or mount."""
    results = checks.run_checks()
    width = max(len(check.name) for check, _ in results)
    for check, result in results:
        label = "ok" if result.ok else "FAIL" if check.required else "warn"
        click.echo(f"{label:<5} {check.name:<{width}}  {result.detail}")
    ready = checks.ready_backends(results)
    if ready:
        click.echo(
            f"syscribe can record here with: {', '.join(ready)} backend{'s' if len(ready) > 1 else ''}"
        )
        return
    click.echo("syscribe cannot record here: fix the FAIL lines above", err=True)
    sys.exit(1)
