"""`syscribe demo`: the built-in example `make run` shows."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from syscribe.demo import Demo, default_workdir


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=default_workdir,
              show_default="out/demo", help="Where the profiles, rootfs and bundles go.")
@click.option("--runtime", type=click.Choice(["runc", "crun"]), default="runc", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "core", "bcc"]), default="auto", show_default=True)
@click.option("--hook/--no-hook", default=None,
              help="Also record a podman container through the hook and enrich its denial "
                   "[default: when podman and crun are installed].")
def demo(workdir: Path, runtime: str, backend: str, hook: bool | None) -> None:
    """Record a busybox workload, enforce its profile, show it runs and that another command is denied;
    then record a podman container through the hook and show its denial as `syscribe enrich` writes it."""
    if os.geteuid() != 0:
        raise click.ClickException("the demo records with eBPF and runs containers: run it as root")
    if shutil.which(runtime) is None:
        raise click.ClickException(f"{runtime} is not installed: apt-get install {runtime} (or make setup)")
    missing = [p for p in ("podman", "crun") if shutil.which(p) is None]
    if hook and missing:
        raise click.ClickException(
            f"--hook needs {' and '.join(missing)}: apt-get install {' '.join(missing)}"
        )
    if hook is None and missing:
        click.echo(f"(not installed: {', '.join(missing)}; the demo skips the hook part)")
    ok = Demo(workdir, runtime, backend, click.echo, hook=hook if hook is not None else not missing).run()
    sys.exit(0 if ok else 1)
