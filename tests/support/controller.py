"""Running the controller's parts against the tests' real API server (tests/support/kubeapi.py).

- `Certificates`: a CA and a serving certificate for 127.0.0.1 made with openssl, for the webhook.
- `apply_manifests`: the shipped manifests (packaging/kubernetes/) created through the API, as
  `kubectl apply` would; the webhook's registration is pointed at a URL on 127.0.0.1 instead of its
  in-cluster Service (nothing routes Services here).
- `Webhook` and `AgentProcess`: `syscribe webhook` / `syscribe agent` as real processes, each with the
  token of its own service account, so the shipped RBAC is what they run with.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "packaging" / "kubernetes"
SYSCRIBE = [sys.executable, "-m", "syscribe"]
NAMESPACE = "syscribe"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """`check()`'s first truthy answer; AssertionError naming `what` after `timeout` (an upper bound on
    waiting for an event, never a timing claim)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing waited for may not exist yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s" + (f" (last error: {last})" if last else ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Certificates:
    """A CA and a certificate for 127.0.0.1 it signed, in `directory`. `renew()` makes a new pair from a
    new key, signed by the same CA (what a rotation looks like to the webhook)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca = directory / "ca.key", directory / "ca.crt"
        self.key, self.cert = directory / "tls.key", directory / "tls.crt"
        self._openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=syscribe-test-ca",
            "-keyout",
            str(self.ca_key),
            "-out",
            str(self.ca),
        )
        self.renew()

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def renew(self, serial: int = 1) -> None:
        csr, ext = self.dir / "tls.csr", self.dir / "ext.cnf"
        key, cert = self.dir / "new.key", self.dir / "new.crt"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        self._openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        )
        self._openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.ca),
            "-CAkey",
            str(self.ca_key),
            "-set_serial",
            str(serial),
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(cert),
        )
        os.replace(key, self.key)
        os.replace(cert, self.cert)

    def serial_served(self, port: int) -> int:
        context = ssl.create_default_context(cafile=str(self.ca))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        out = subprocess.run(
            ["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
            input=der,
            capture_output=True,
            check=True,
        )
        return int(out.stdout.decode().strip().split("=", 1)[1], 16)

    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca.read_bytes()).decode()


def manifest_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def apply(api_client: Any, doc: dict[str, Any]) -> None:
    """Create `doc`, or replace what has its name (as `kubectl apply` ends up doing for these objects)."""
    from kubernetes import dynamic
    from kubernetes.client.exceptions import ApiException

    client = dynamic.DynamicClient(api_client)
    resource = client.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    namespace = doc["metadata"].get("namespace")
    try:
        resource.create(body=doc, namespace=namespace)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = resource.get(name=doc["metadata"]["name"], namespace=namespace)
        doc = {**doc, "metadata": {**doc["metadata"], "resourceVersion": current.metadata.resourceVersion}}
        resource.replace(body=doc, namespace=namespace)


def wait_for_crds(api_client: Any, names: list[str]) -> None:
    from kubernetes import client

    api = client.ApiextensionsV1Api(api_client)

    def established() -> bool:
        for name in names:
            crd = api.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") != "True":
                return False
        return True

    wait_for("CRDs established", established, timeout=60)


def apply_manifests(api_client: Any, webhook_url: str | None = None, ca_bundle: str | None = None) -> None:
    """The shipped CRDs, namespace, RBAC, Deployments and DaemonSets (stored, never run: nothing runs pods
    here). The MutatingWebhookConfiguration only when `webhook_url` is given."""
    crds = [manifest_docs("crds/profilerecording.yaml")[0], manifest_docs("crds/seccompprofile.yaml")[0]]
    for crd in crds:
        apply(api_client, crd)
    wait_for_crds(api_client, [c["metadata"]["name"] for c in crds])
    for name in ("enricher.yaml", "webhook.yaml", "agent.yaml"):
        for doc in manifest_docs(name):
            if doc["kind"] == "MutatingWebhookConfiguration":
                if webhook_url is None:
                    continue
                for hook in doc["webhooks"]:
                    hook["clientConfig"] = {"url": webhook_url, "caBundle": ca_bundle}
            apply(api_client, doc)


def kubeconfig_for(kube: Any, service_account: str, path: Path) -> Path:
    return kube.kubeconfig_for_token(kube.token_for(NAMESPACE, service_account), path)  # type: ignore[no-any-return]


def _die_with_parent(argv: list[str]) -> list[str]:
    """`argv` under setpriv, which has the kernel kill it when the test process dies however it dies
    (a test run cut short must not leave a webhook or an agent behind)."""
    import shutil

    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *argv] if setpriv else argv


class _Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            _die_with_parent(args),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


class Webhook(_Process):
    def __init__(
        self, kubeconfig: Path, certs: Certificates, root: str, log: Path, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.certs = certs
        super().__init__(
            [
                *SYSCRIBE,
                "webhook",
                "--cert-file",
                str(certs.cert),
                "--key-file",
                str(certs.key),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--root",
                root,
                "--kubeconfig",
                str(kubeconfig),
            ],
            log,
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.certs.ca))

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"webhook exited: {self.output()}")
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.port}/readyz", context=context, timeout=2
            ) as r:
                return bool(r.status == 200)

        wait_for(f"webhook ready ({self.log})", ready, timeout=60, interval=0.2)


class AgentProcess(_Process):
    def __init__(
        self,
        kubeconfig: Path,
        root: Path,
        quarantine: Path,
        log: Path,
        *,
        node: str = "node-1",
        seccomp_dir: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        args = [
            *SYSCRIBE,
            "agent",
            "--root",
            str(root),
            "--quarantine",
            str(quarantine),
            "--node-name",
            node,
            "--kubeconfig",
            str(kubeconfig),
            "--rescan",
            "2",
            *extra,
        ]
        args += ["--seccomp-dir", str(seccomp_dir)] if seccomp_dir else ["--no-install-profiles"]
        super().__init__(args, log)


@contextlib.contextmanager
def running(process: _Process) -> Iterator[_Process]:
    try:
        yield process
    except BaseException:
        process.stop()
        print(f"--- {process.log} ---\n{process.output()[-4000:]}")  # pytest shows it with the failure
        raise
    else:
        process.stop()


@contextlib.contextmanager
def control_plane(kube: Any, base: Path, root: str) -> Iterator[dict[str, Any]]:
    """The shipped manifests applied, the webhook running (its own service account) for output root
    `root` and registered by URL; yields what tests need: `api` (admin), `webhook`, `certs`,
    `agent_kubeconfig`, `base`."""
    api = kube.client()
    apply_manifests(api)
    certs = Certificates(base / "tls")
    webhook_kubeconfig = kubeconfig_for(kube, "syscribe-webhook", base / "webhook.kubeconfig")
    agent_kubeconfig = kubeconfig_for(kube, "syscribe-agent", base / "agent.kubeconfig")
    hook = Webhook(webhook_kubeconfig, certs, root, base / "webhook.log")
    state = {"api": api, "webhook": hook, "certs": certs, "agent_kubeconfig": agent_kubeconfig, "base": base}
    try:
        hook.wait_ready()
        apply_manifests(api, webhook_url=hook.url, ca_bundle=certs.ca_bundle())
        yield state
    finally:
        state["webhook"].stop()


def recording_status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    from syscribe.controller.recording import GROUP, PLURAL, VERSION

    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status: dict[str, Any] = obj.get("status") or {}
    return status


def wait_pods_recorded(
    api: Any, namespace: str, name: str, pods: int, timeout: float = 60.0
) -> dict[str, Any]:
    """The recording's status once it counts `pods` recorded pods."""
    status: dict[str, Any] = wait_for(
        f"{pods} pods in {namespace}/{name}'s status",
        lambda: (s := recording_status(api, namespace, name)).get("podsRecorded") == pods and s,
        timeout=timeout,
    )
    return status
