"""`syscribe webhook` and `syscribe agent`: the two long-running parts of recording by pod labels."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import click


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _api_client(kubeconfig: str | None) -> Any:
    from syscribe.kube import KubeConfigError, api_client_from_environment

    try:
        return api_client_from_environment(kubeconfig)
    except KubeConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _say(prefix: str) -> Any:
    def report(_kind: str, message: str) -> None:
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)

    return report


def _absolute(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not os.path.isabs(value):
        raise click.BadParameter(f"{value!r} is relative; give an absolute path", param=param)
    return value


@click.command()
@click.option(
    "--cert-file", required=True, type=click.Path(dir_okay=False), help="Serving certificate (PEM)."
)
@click.option("--key-file", required=True, type=click.Path(dir_okay=False), help="Its private key (PEM).")
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=9443, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--root",
    default="/var/lib/syscribe/profiles",
    show_default=True,
    callback=_absolute,
    help="The hook's output root on the nodes (an outputRoots entry of hook.json).",
)
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), help="Default: in-cluster, else ~/.kube/config."
)
def webhook(cert_file: str, key_file: str, bind: str, port: int, root: str, kubeconfig: str | None) -> None:
    """Mark pods that a ProfileRecording selects for recording (a mutating admission webhook)."""
    import ssl

    from syscribe.controller.webhook import serve

    api = _api_client(kubeconfig)
    stop = _stop_on_signals()
    report = _say("syscribe webhook")

    def ready(server: Any) -> None:
        host, bound = server.server_address[:2]
        report("listening", f"serving AdmissionReviews on https://{host}:{bound}/mutate")

    try:
        serve(
            api_client=api,
            cert_file=cert_file,
            key_file=key_file,
            bind=bind,
            port=port,
            root=root,
            report=report,
            ready=ready,
            stop=stop,
        )
    except (ssl.SSLError, OSError) as exc:
        what = getattr(exc, "strerror", None) or str(exc)
        raise click.ClickException(
            f"cannot serve on {bind}:{port} with {cert_file} and {key_file}: {what}"
        ) from None


@click.command()
@click.option(
    "--root",
    default="/var/lib/syscribe/profiles",
    show_default=True,
    callback=_absolute,
    help="The hook's output root (where dumps appear).",
)
@click.option(
    "--quarantine",
    default="/var/lib/syscribe/quarantine",
    show_default=True,
    callback=_absolute,
    help="Where dumps that cannot become profiles are kept, each with a .reason.json.",
)
@click.option("--node-name", envvar="NODE_NAME", required=True, help="This node's name (env NODE_NAME).")
@click.option(
    "--install-profiles/--no-install-profiles",
    default=True,
    show_default=True,
    help="Write enabled SeccompProfiles into the kubelet's seccomp directory (off where the "
    "Security Profiles Operator is installed).",
)
@click.option(
    "--seccomp-dir",
    default="/var/lib/kubelet/seccomp",
    show_default=True,
    callback=_absolute,
    help="The kubelet's seccomp directory; profiles go to its syscribe/ folder.",
)
@click.option(
    "--rescan",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.5, 3600),
    help="Seconds between full scans of the root (events are followed in between).",
)
@click.option(
    "--incomplete-grace",
    default=120.0,
    show_default=True,
    type=click.FloatRange(0.5, 86400),
    help="Seconds a dump may stay half-written before it goes to quarantine.",
)
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics on this port.")
@click.option(
    "--host-recorder",
    "recorder_config",
    type=click.Path(dir_okay=False),
    help="Also run the node's resident recorder (what `syscribe recorder` runs) in this process, with "
    "this hook config (its recorderSocket, roots and log).",
)
@click.option(
    "--recorder-pin-dir",
    default="/sys/fs/bpf/syscribe",
    show_default=True,
    help="bpffs directory for its pins.",
)
@click.option(
    "--recorder-state-dir",
    default="/run/syscribe/recordings",
    show_default=True,
    help="Where it describes each recording in flight, for a restart.",
)
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), help="Default: in-cluster, else ~/.kube/config."
)
def agent(
    root: str,
    quarantine: str,
    node_name: str,
    install_profiles: bool,
    seccomp_dir: str,
    rescan: float,
    incomplete_grace: float,
    metrics_port: int | None,
    recorder_config: str | None,
    recorder_pin_dir: str,
    recorder_state_dir: str,
    kubeconfig: str | None,
) -> None:
    """Turn the hook's recordings on this node into SeccompProfiles, and install profiles on it."""
    from syscribe.controller.agent import Agent
    from syscribe.controller.metrics import serve_agent_metrics

    if os.path.realpath(quarantine).startswith(os.path.realpath(root).rstrip("/") + "/"):
        raise click.BadParameter(
            "must not lie inside --root (it would be read as dumps)", param_hint="--quarantine"
        )
    api = _api_client(kubeconfig)
    stop = _stop_on_signals()
    report = _say("syscribe agent")
    the_agent = Agent(
        api,
        root=root,
        quarantine=quarantine,
        node_name=node_name,
        install_dir=seccomp_dir if install_profiles else None,
        rescan=rescan,
        incomplete_grace=incomplete_grace,
        report=report,
    )
    recorder = _recorder(recorder_config, recorder_pin_dir, recorder_state_dir) if recorder_config else None
    try:
        the_agent.start()
    except OSError as exc:
        if recorder is not None:
            recorder.stop()
        raise click.ClickException(f"cannot start: {exc}") from None
    server = None
    try:
        if metrics_port is not None:
            try:
                server = serve_agent_metrics(the_agent, metrics_port)
            except OSError as exc:
                raise click.ClickException(
                    f"cannot serve metrics on port {metrics_port}: {exc.strerror}"
                ) from None
        report("started", f"following {root} for node {node_name}")
        stop.wait()
    finally:
        # The recorder first: what it writes at its stop (partial recordings) is still turned into
        # profiles at the agent's next start, never lost.
        if recorder is not None:
            recorder.stop()
        the_agent.stop()
        if server is not None:
            server.shutdown()


def _recorder(config_path: str, pin_dir: str, state_dir: str) -> Any:
    """The resident recorder, serving in a thread of this process."""
    from syscribe.hooks.config import ConfigError, load_config
    from syscribe.recorder.base import RecorderError
    from syscribe.recorder.service import RecorderService

    try:
        service = RecorderService(
            load_config(config_path, required=True), pin_dir=pin_dir, state_dir=state_dir
        )
        service.start()
    except (ConfigError, RecorderError, OSError) as exc:
        raise click.ClickException(f"cannot start the resident recorder: {exc}") from None
    print(
        f"syscribe agent: resident recorder listening at {service.socket_path}", file=sys.stderr, flush=True
    )
    return service
