"""`syscribe recorder`: the node's resident recorder (one eBPF program for every recording), serving
the hook's socket until SIGTERM or SIGINT. The node agent can host the same service in a thread
(syscribe.recorder.service.RecorderService)."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from syscribe.recorder.resident import DEFAULT_PIN_DIR, DEFAULT_SLOTS, MAX_SLOTS
from syscribe.recorder.service import DEFAULT_STATE_DIR, MAX_PENDING, READ_SECONDS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default="/etc/syscribe/hook.json", show_default=True,
              help="the hook's config: roots, log file, recorderSocket")
@click.option("--socket", "socket_path", default=None,
              help="listen here instead of the config's recorderSocket")
@click.option("--pin-dir", default=DEFAULT_PIN_DIR, show_default=True, help="bpffs directory for the pins")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True,
              help="where each recording in flight is described, for a restart")
@click.option("--slots", type=click.IntRange(1, MAX_SLOTS), default=DEFAULT_SLOTS, show_default=True,
              help="concurrent recordings (24 KiB of kernel memory each); used when the program is loaded")
@click.option("--max-pending", type=click.IntRange(1, 4096), default=MAX_PENDING, show_default=True,
              help="requests that may wait; beyond, a request is refused at once")
@click.option("--read-seconds", type=click.FloatRange(0.01, 60), default=READ_SECONDS, show_default=True,
              help="how long a connection may take to send its request")
@click.option("--unload", is_flag=True,
              help="remove the pinned program and maps (recordings in flight are lost)")
def recorder(config_path: str, socket_path: str | None, pin_dir: str, state_dir: str, slots: int,
             max_pending: int, read_seconds: float, unload: bool) -> None:
    """Record every annotated container of this node with one eBPF program."""
    from syscribe.hooks.config import ConfigError, load_config
    from syscribe.recorder.base import RecorderError
    from syscribe.recorder.resident import ResidentProgram
    from syscribe.recorder.service import RecorderService

    try:
        if unload:
            program = ResidentProgram(pin_dir)
            program.unload()
            click.echo(f"syscribe recorder: removed the pins in {pin_dir}")
            return
        config = load_config(config_path, required=config_path != "/etc/syscribe/hook.json")
        service = RecorderService(config, socket_path=socket_path, pin_dir=pin_dir, state_dir=state_dir,
                                  slots=slots, max_pending=max_pending, read_seconds=read_seconds)
        service.open()
    except (ConfigError, RecorderError, OSError) as exc:
        click.echo(f"syscribe recorder: {exc}", err=True)
        sys.exit(1)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        service.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"syscribe recorder: listening at {service.socket_path} ({len(service.active)} recordings "
               "picked up)", err=True)
    try:
        service.serve()
    finally:
        service.close()
