"""`syscribe enrich`: the command line of the audit-log enricher (the shell around pipeline.py)."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from syscribe.enricher.checkpoint import Checkpoint
    from syscribe.enricher.containers import ContainerResolver
    from syscribe.enricher.enrichedline import Filter
    from syscribe.enricher.events import EventAssembler
    from syscribe.enricher.kube import KubePodSource
    from syscribe.enricher.metrics import Metrics
    from syscribe.enricher.output import OutputWriter
    from syscribe.enricher.pipeline import Pipeline, Stats
    from syscribe.enricher.proctrack import ProcessTracker
    from syscribe.enricher.reporter import Reporter
    from syscribe.enricher.sources import Source

SOURCES = ("auto", "auditd", "syslog", "kmsg", "netlink")
STARTS = ("end", "beginning", "checkpoint")
# How long a start waits for the first list of pods, so that the first lines have labels; an API
# server that does not answer by then is waited for in the background (lines go out without labels).
KUBE_FIRST_SYNC = 5.0


def _positive_float(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter(f"must be a finite number >= 0, not {value}")
    return value


@click.command("enrich")
@click.option("--source", type=click.Choice(SOURCES), default="auto", show_default=True,
              help="Where audit records come from (auto: the first that works of auditd's log, netlink, "
                   "kmsg; syslog only when asked for: its lines are marked unverified).")
@click.option("--input", "input_path", type=click.Path(path_type=Path, dir_okay=True, exists=False),
              help="The log file to read (auditd: /var/log/audit/audit.log; syslog: kern.log).")
@click.option("--output", "output", default="-", show_default=True,
              help="Where enriched JSON lines go; - for stdout.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep reading as the log grows (--no-follow: read what is there and exit).")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(path_type=Path, dir_okay=False),
              help="File that records where reading stopped, so that a restart resumes there.")
@click.option("--start", type=click.Choice(STARTS), default=None,
              help="Where to begin [default: checkpoint with --checkpoint (the beginning while there is "
                   "none yet), else end when following, else beginning].")
@click.option("--namespace", "namespaces", multiple=True, help="Only events from pods in this namespace.")
@click.option("--type", "types", multiple=True, type=click.Choice(("seccomp", "selinux", "apparmor")),
              help="Only events of this type.")
@click.option("--action", "actions", multiple=True,
              help="Only events with this action (kill_process, errno, log, denied, DENIED...).")
@click.option("--node", default=None,
              help="Node name for records without one [default: $NODE_NAME or hostname].")
@click.option("--max-output-bytes", type=click.IntRange(min=0), default=100 * 1024 * 1024, show_default=True,
              help="Rotate the output file when it reaches this size (0: never).")
@click.option("--output-backups", type=click.IntRange(min=0, max=1000), default=5, show_default=True,
              help="Rotated output files kept (output.1 ... output.N).")
@click.option("--metrics-port", type=click.IntRange(min=1, max=65535), default=None,
              help="Serve Prometheus metrics on this port.")
@click.option("--metrics-addr", default="0.0.0.0", show_default=True, help="Address for --metrics-port.")
@click.option("--metrics-textfile", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write Prometheus metrics to this file (node-exporter textfile collector).")
@click.option("--hold-seconds", type=float, default=0.25, show_default=True, callback=_positive_float,
              help="How long a record waits for its companions (SYSCALL, PROCTITLE...).")
@click.option("--backlog-seconds", type=float, default=2.0, show_default=True, callback=_positive_float,
              help="How long an event waits for a container still being set up.")
@click.option("--checkpoint-interval", type=float, default=1.0, show_default=True, callback=_positive_float,
              help="Seconds between checkpoints.")
@click.option("--proc", "proc", type=click.Path(path_type=Path, file_okay=False), default=Path("/proc"),
              show_default=True, help="The host's /proc (a DaemonSet mounts it elsewhere).")
@click.option("--state-dir", "state_dirs", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Runtime state directory to find containers in (repeat; default: the usual ones).")
@click.option("--kube/--no-kube", default=False, show_default=True,
              help="Add pod labels from the Kubernetes API (pods on --node; in-cluster or --kubeconfig).")
@click.option("--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Kubeconfig for --kube outside a cluster.")
@click.option("--track-processes/--no-track-processes", default=None,
              help="Read each new process's container as it starts (the kernel's process events), so that "
                   "a record read after its process is gone still names the pod [default: on when "
                   "following and the kernel accepts the subscription].")
@click.option("--quiet", is_flag=True, help="Do not print problems and the summary to stderr.")
def enrich(
    source: str,
    input_path: Path | None,
    output: str,
    follow: bool,
    checkpoint_path: Path | None,
    start: str | None,
    namespaces: tuple[str, ...],
    types: tuple[str, ...],
    actions: tuple[str, ...],
    node: str | None,
    max_output_bytes: int,
    output_backups: int,
    metrics_port: int | None,
    metrics_addr: str,
    metrics_textfile: Path | None,
    hold_seconds: float,
    backlog_seconds: float,
    checkpoint_interval: float,
    proc: Path,
    state_dirs: tuple[Path, ...],
    kube: bool,
    kubeconfig: Path | None,
    track_processes: bool | None,
    quiet: bool,
) -> None:
    """Enrich SECCOMP, AVC and AppArmor audit records with the pod they came from, as JSON lines."""
    options = _Options(**locals())  # first, so that locals() holds the parameters only
    with contextlib.ExitStack() as cleanup:
        built = _build(options, cleanup)
        if not _run(built):
            return
    if not options.quiet:
        _summary(built)


@dataclass(frozen=True, slots=True)
class _Options:
    """`syscribe enrich`'s parameters, as click parsed them."""

    source: str
    input_path: Path | None
    output: str
    follow: bool
    checkpoint_path: Path | None
    start: str | None
    namespaces: tuple[str, ...]
    types: tuple[str, ...]
    actions: tuple[str, ...]
    node: str | None
    max_output_bytes: int
    output_backups: int
    metrics_port: int | None
    metrics_addr: str
    metrics_textfile: Path | None
    hold_seconds: float
    backlog_seconds: float
    checkpoint_interval: float
    proc: Path
    state_dirs: tuple[Path, ...]
    kube: bool
    kubeconfig: Path | None
    track_processes: bool | None
    quiet: bool


@dataclass(frozen=True, slots=True)
class _Built:
    """A pipeline ready to run, and what its summary reads afterwards."""

    pipeline: Pipeline
    assembler: EventAssembler
    stats: Stats
    tracker: ProcessTracker | None
    concrete: str
    path: Path | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the options mean together, checked before anything is opened."""

    start: str
    checkpoint_path: Path | None
    output_path: Path | None
    concrete: str  # the source `auto` stands for
    path: Path | None  # the file it reads
    filter: Filter
    node: str


def _build(options: _Options, cleanup: contextlib.ExitStack) -> _Built:
    """Check the options together, open the source, the output, the checkpoint and the helpers (each
    closed by `cleanup`), and make the pipeline; a ClickException or UsageError says what is wrong."""
    from syscribe.enricher.containers import ContainerResolver
    from syscribe.enricher.events import EventAssembler
    from syscribe.enricher.metrics import Metrics
    from syscribe.enricher.pipeline import Pipeline, Settings, Stats
    from syscribe.enricher.reporter import Reporter

    plan = _plan(options)
    # Every line makes a few short-lived objects and none of them cycles: collecting the youngest
    # generation every 700 allocations costs about 4% of the run for nothing.
    gc.set_threshold(50_000, 20, 100)
    stats = Stats()
    metrics = Metrics()
    report = Reporter(metrics, stats, quiet=options.quiet)
    pods = _pods(options, plan.node, report, cleanup)
    restored, writer, src = _open(options, plan, report, metrics, cleanup)
    resolver = ContainerResolver(proc=options.proc, state_dirs=list(options.state_dirs) or None, api=pods)
    tracker = _tracker(options, resolver, report, cleanup)
    # The enriched line of a SECCOMP event takes nothing from companions: it need not wait for them.
    assembler = EventAssembler(hold_seconds=options.hold_seconds, seccomp_alone=True)
    settings = Settings(
        node=plan.node,
        backlog_seconds=options.backlog_seconds,
        checkpoint_interval=options.checkpoint_interval,
    )
    pipeline = Pipeline(
        src, assembler, resolver, writer, settings,
        checkpoint_path=plan.checkpoint_path, restored=restored, filter=plan.filter, metrics=metrics,
        report=report, stats=stats, metrics_textfile=options.metrics_textfile,
    )
    return _Built(pipeline, assembler, stats, tracker, plan.concrete, plan.path)


def _plan(options: _Options) -> _Plan:
    """The options checked together (a UsageError or ClickException says what is wrong)."""
    from syscribe.enricher.enrichedline import Filter

    start, checkpoint_path = options.start, options.checkpoint_path  # both may change below
    if start is None:
        start = "checkpoint" if checkpoint_path is not None else ("end" if options.follow else "beginning")
    if start == "checkpoint" and checkpoint_path is None:
        raise click.UsageError("--start checkpoint needs --checkpoint PATH")
    output_path = None if options.output == "-" else Path(options.output)
    if output_path is not None and output_path.name in ("", ".", ".."):
        raise click.UsageError(f"--output {options.output!r} is not a file path")
    concrete, path, start, checkpoint_path = _choose_source(options, start, checkpoint_path)
    for (a, a_name), (b, b_name) in (
        ((output_path, "--output"), (path, "--input")),
        ((output_path, "--output"), (checkpoint_path, "--checkpoint")),
        ((checkpoint_path, "--checkpoint"), (path, "--input")),
    ):
        if a is not None and b is not None and os.path.abspath(a) == os.path.abspath(b):
            raise click.UsageError(f"{a_name} and {b_name} must be different files, both are {a}")
    try:
        filt = Filter.of(options.namespaces, options.types, options.actions)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    node_name = options.node or os.environ.get("NODE_NAME") or os.uname().nodename
    return _Plan(start, checkpoint_path, output_path, concrete, path, filt, node_name)


def _choose_source(
    options: _Options, start: str, checkpoint_path: Path | None
) -> tuple[str, Path | None, str, Path | None]:
    """The concrete source and its file, and `start` and the checkpoint as that source allows them."""
    from syscribe.enricher.sources import SourceError, choose

    quiet = options.quiet
    try:
        concrete, path = choose(options.source, options.input_path)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    if concrete == "netlink" and checkpoint_path is not None:
        if options.source == "netlink":
            raise click.UsageError("the netlink source has no history, so no checkpoint: drop --checkpoint")
        # auto on a node without auditd: the same DaemonSet arguments must work everywhere.
        if not quiet:
            click.echo("syscribe enrich: auto chose netlink, which has no history: no checkpoint", err=True)
        checkpoint_path = None
        if start == "checkpoint":
            start = "end"
    if concrete == "syslog" and not quiet:
        click.echo(
            f"syscribe enrich: any local user can write kernel-looking lines to {path}: its lines are "
            'marked "verified": false (auditd, netlink and kmsg carry only what the kernel wrote)',
            err=True,
        )
    return concrete, path, start, checkpoint_path


def _pods(
    options: _Options, node_name: str, report: Reporter, cleanup: contextlib.ExitStack
) -> KubePodSource | None:
    """With --kube, the pods of this node from the API server, listed and watched until `cleanup`."""
    if not options.kube:
        return None
    from syscribe.enricher.kube import KubeConfigError, KubePodSource, api_client_from_environment

    try:
        client = api_client_from_environment(str(options.kubeconfig) if options.kubeconfig else None)
        pods = KubePodSource(client, node_name, report=report)
    except (KubeConfigError, ValueError) as exc:
        raise click.ClickException(f"{exc} (or drop --kube)") from None
    pods.start()
    cleanup.callback(pods.stop)
    # Degraded rather than failed when the API server does not answer: the node alone names
    # pod, namespace and container, and a DaemonSet that exits on an API outage loses lines.
    if not pods.wait_synced(KUBE_FIRST_SYNC) and not options.quiet:
        click.echo(
            f"syscribe enrich: the Kubernetes API at {client.configuration.host} did not answer "
            f"within {KUBE_FIRST_SYNC:g} s: lines go out without pod labels until it does (the "
            "node itself still names pod, namespace and container)",
            err=True,
        )
    return pods


def _open(
    options: _Options, plan: _Plan, report: Reporter, metrics: Metrics, cleanup: contextlib.ExitStack
) -> tuple[Checkpoint | None, OutputWriter, Source]:
    """The checkpoint (the output cut back to it), the output, the source and the metrics server."""
    from syscribe.enricher.checkpoint import CheckpointError
    from syscribe.enricher.output import OutputError, OutputWriter
    from syscribe.enricher.pipeline import restore
    from syscribe.enricher.sources import SourceError, open_source

    try:
        # Only a run that resumes from the checkpoint may cut the output back to it: one that
        # starts elsewhere would not write those lines again.
        restored = None
        if plan.start == "checkpoint":
            restored = restore(plan.checkpoint_path, plan.concrete, report, plan.output_path)
    except CheckpointError as exc:
        raise click.ClickException(f"{exc}; fix or delete it (a new one starts at --start)") from None
    mark = restored.mark if restored is not None else None
    try:
        writer = OutputWriter(
            plan.output_path, max_bytes=options.max_output_bytes, backups=options.output_backups
        )
    except OutputError as exc:
        raise click.ClickException(str(exc)) from None
    cleanup.callback(writer.close)
    try:
        src = open_source(
            plan.concrete, plan.path, follow=options.follow, start=plan.start, mark=mark, report=report
        )
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    cleanup.callback(src.close)
    if options.metrics_port is not None:
        try:
            metrics.serve(options.metrics_port, options.metrics_addr)
        except OSError as exc:
            message = f"cannot serve metrics on port {options.metrics_port}: {exc.strerror}"
            raise click.ClickException(message) from None
    cleanup.callback(metrics.stop)
    return restored, writer, src


def _tracker(
    options: _Options, resolver: ContainerResolver, report: Reporter, cleanup: contextlib.ExitStack
) -> ProcessTracker | None:
    """The process tracker, started, when asked for (by default when following) and the kernel lets it."""
    if not (options.track_processes or (options.track_processes is None and options.follow)):
        return None
    from syscribe.enricher.proctrack import ProcessTracker, TrackerUnavailableError

    tracker = ProcessTracker(resolver, report=report)
    try:
        tracker.start()
        cleanup.callback(tracker.stop)
    except TrackerUnavailableError as exc:
        if not options.quiet:
            hint = " (--no-track-processes hides this)" if options.track_processes is None else ""
            click.echo(
                f"syscribe enrich: process tracking off: {exc}; a process gone before its record "
                f"is read gets no pod{hint}",
                err=True,
            )
        return None
    return tracker


def _run(built: _Built) -> bool:
    """Run until the source ends or a signal; False when the reader of stdout went away first."""
    from syscribe.enricher.output import OutputClosedError, OutputError
    from syscribe.enricher.pipeline import CheckpointSaveError
    from syscribe.enricher.sources import SourceError

    pipeline = built.pipeline
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        pipeline.run(stop)
    except OutputClosedError:
        # `syscribe enrich --output - | head`: the reader is done, so are we (quietly: point
        # stdout at /dev/null so that nothing complains about it at exit).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    except (SourceError, OutputError, CheckpointSaveError) as exc:
        raise click.ClickException(str(exc)) from None
    return True


def _summary(built: _Built) -> None:
    """The closing lines on stderr: what was read, written and tracked."""
    stats, assembler, tracker = built.stats, built.assembler, built.tracker
    where = built.concrete if built.path is None else f"{built.concrete} {built.path}"
    parse = assembler.stats
    click.echo(
        f"syscribe enrich: {where}: {stats.lines} lines, {parse.records} records "
        f"({parse.malformed} malformed, {parse.non_audit} not audit), {stats.events} events, "
        f"{stats.written} written, "
        f"{stats.filtered} filtered, {stats.duplicates} already written before a restart",
        err=True,
    )
    if tracker is not None:
        track = tracker.stats
        click.echo(
            f"syscribe enrich: process tracker: {track.forks} forks, {track.execs} execs, "
            f"{track.remembered} container processes remembered, {track.overruns} overruns, "
            f"{track.cpu_seconds:.2f} s CPU",
            err=True,
        )
