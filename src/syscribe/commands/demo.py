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
def demo(workdir: Path, runtime: str, backend: str) -> None:
    """Record a busybox workload, enforce its profile, show it runs and that another command is denied."""
    if os.geteuid() != 0:
        raise click.ClickException("the demo records with eBPF and runs containers: run it as root")
    if shutil.which(runtime) is None:
        raise click.ClickException(f"{runtime} is not installed: apt-get install {runtime} (or make setup)")
    ok = Demo(workdir, runtime, backend, click.echo).run()
    sys.exit(0 if ok else 1)
