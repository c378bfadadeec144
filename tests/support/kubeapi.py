"""A real Kubernetes API server for the tests: kube-apiserver and etcd on loopback, as envtest runs them.

The binaries are built once per machine from the Go modules in tests/k8s/ by scripts/build-kube.sh
(`make test` runs it) into a cache outside the repository; the `kube` prerequisite says how when they
are missing. The session fixture `kube_api` (tests/conftest.py) starts one `KubeAPI` for the whole
run; `kube_namespace` gives each test a fresh namespace.

What runs: etcd (`--unsafe-no-fsync`, data in a temporary folder) and kube-apiserver on 127.0.0.1 with
its own CA and serving certificate, an admin client certificate (CN=admin, O=system:masters), RBAC,
service-account signing keys (so `token_for` gets real tokens that RBAC judges), and the
ServiceAccount admission plugin off (no controller makes the `default` account). Nothing else runs:
no scheduler, kubelet or controller manager. So:

- pods need a valid spec (a container with an image) and `spec.nodeName` set at creation, and stay
  Pending;
- namespaces never finish deleting and nothing is garbage collected: never reuse a namespace, take a
  fresh one from `kube_namespace` or `create_namespace()`;
- a resource's `resourceVersion` is etcd's revision, shared by every kind and namespace, and the API
  server writes on its own (leases, every few seconds): never expect a version to stay put.

Faults, made for real:

- `restart()`: the API server stops and starts again (same port, same etcd): every watch is dropped;
  clients resume from their version, or get 410 Gone when the restarted watch cache no longer has it.
- `down()`: a context in which the API server is stopped (connections refused), started again after.
- `compact()`: writes one key to etcd and compacts etcd to that revision, so every resourceVersion a
  client holds is history: a watch resumed from it gets 410 Gone once the API server's watch cache no
  longer has it either (restart it, or compact inside `down()`).

What the server saw: `requests(user)` reads the API server's audit log (one entry per request, written
before the request is served), e.g. to count a client's lists and watches. The admin user is `admin`;
a service account's is `system:serviceaccount:NAMESPACE:NAME`.

Logs (etcd.log, kube-apiserver.log, audit.log) are in `workdir`; when a start fails, their tail is in
the error.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-kube.sh"
BINARIES = ("kube-apiserver", "etcd")
START_TIMEOUT = 120.0  # a cold start on the shared 2-core machine takes seconds; this is a bound only
SERVICE_CIDR = "10.0.0.0/24"

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [ResponseStarted, Panic]
rules:
  - level: None
    users: ["system:apiserver"]
  - level: Metadata
"""

OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class KubeAPIError(RuntimeError):
    """The control plane could not be started (or stopped); the message has the logs' tails."""


def binary_dir() -> Path:
    """Where scripts/build-kube.sh puts (or would put) the binaries for the current Go modules."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=True, timeout=60
    )
    return Path(done.stdout.strip())


def missing() -> str | None:
    """None when both binaries are built, else what is missing and how to build them."""
    where = binary_dir()
    absent = [name for name in BINARIES if not os.access(where / name, os.X_OK)]
    if not absent:
        return None
    go = _find_go()
    how = (
        "run scripts/build-kube.sh (make test does; a cold build takes 10-20 min)"
        if go
        else "Go 1.26+ not found (not on PATH nor in /usr/local/go/bin): install it, then run "
        "scripts/build-kube.sh"
    )
    return f"{' and '.join(absent)} not built in {where}: {how}"


def _find_go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent(argv: Sequence[str]) -> list[str]:
    """`argv` under util-linux's setpriv, which has the kernel SIGKILL it when the test process dies,
    however it dies (no preexec_fn: the test process has threads when it restarts a server)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *argv] if setpriv else list(argv)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Request:
    """One request the API server received, from its audit log."""

    verb: str  # get, list, watch, create, update, patch, delete, ...
    uri: str  # path and query, as the client sent them
    user: str


class _Process:
    """A server process in its own process group, its output appended to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "ab") as out:
            out.write(f"\n=== starting {name}: {' '.join(argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                _die_with_parent(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the group, SIGKILL after `grace` seconds; returns once the process is reaped."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(wait)
        if self.popen.poll() is None:
            raise KubeAPIError(f"{self.name} (pid {self.popen.pid}) did not stop")
        # Whatever it started in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class KubeAPI:
    """etcd and kube-apiserver on loopback, with certificates made for them in `workdir`.

    `start()` then `stop()` (or `with KubeAPI(...) as kube:`); the session fixture `kube_api` does it.
    """

    def __init__(self, workdir: Path, binaries: Path | None = None) -> None:
        self.workdir = workdir
        self.binaries = binaries or binary_dir()
        self.port = free_port()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        pki = workdir / "pki"
        self.ca_file = pki / "ca.crt"
        self.admin_cert, self.admin_key = pki / "admin.crt", pki / "admin.key"
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.audit_log = workdir / "audit.log"
        self.start_seconds: float | None = None  # the last start of kube-apiserver, to /readyz
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._ssl: ssl.SSLContext | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> KubeAPI:
        try:
            self._make_pki()
            self._write_files()
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops both (the API server first); safe to call again and after a failed start."""
        errors: list[str] = []
        for attr in ("_apiserver", "_etcd"):
            process: _Process | None = getattr(self, attr)
            if process is not None:
                try:
                    process.stop()
                except KubeAPIError as err:
                    errors.append(str(err))
                setattr(self, attr, None)
        if errors:
            raise KubeAPIError("; ".join(errors))

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart(self) -> None:
        """Stops the API server and starts it again on the same port with the same etcd: every watch
        is dropped, and its watch cache starts afresh from etcd."""
        self._stop_apiserver()
        self._start_apiserver()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Inside, the API server is stopped (its port refuses connections); after, it runs again on
        the same port (even when the body failed)."""
        self._stop_apiserver()
        try:
            yield
        finally:
            self._start_apiserver()

    # --- etcd ------------------------------------------------------------------------------------------

    def _etcd_call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """etcd's v3 API through its JSON gateway (bytes in base64), so the tests need no etcdctl."""
        request = urllib.request.Request(
            f"{self.etcd_url}/v3/{method}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def revision(self) -> int:
        """etcd's current revision: the newest resourceVersion."""
        key = base64.b64encode(b"/syscribe-test/").decode()
        return int(self._etcd_call("kv/range", {"key": key, "limit": 1})["header"]["revision"])

    def compact(self) -> int:
        """Writes a key (so the revision passes every version a client holds) and compacts etcd to the
        new revision: every older resourceVersion is gone from etcd. Returns that revision."""
        key = base64.b64encode(b"/syscribe-test/compact").decode()
        value = base64.b64encode(str(time.time()).encode()).decode()
        revision = int(self._etcd_call("kv/put", {"key": key, "value": value})["header"]["revision"])
        self._etcd_call("kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        data.mkdir(exist_ok=True)
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd = _Process(
            "etcd",
            [
                str(self.binaries / "etcd"),
                "--name=test",
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        self._wait("etcd", self._etcd, self._etcd_ready)

    def _etcd_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=5) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    # --- kube-apiserver ----------------------------------------------------------------------------------

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        started = time.monotonic()
        self._apiserver = _Process(
            "kube-apiserver",
            [
                str(self.binaries / "kube-apiserver"),
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--etcd-servers={self.etcd_url}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.url}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--disable-admission-plugins=ServiceAccount",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                "--shutdown-watch-termination-grace-period=2s",
            ],
            self.workdir / "kube-apiserver.log",
        )
        self._wait("kube-apiserver", self._apiserver, self._apiserver_ready)
        self.start_seconds = time.monotonic() - started

    def _stop_apiserver(self) -> None:
        if self._apiserver is not None:
            self._apiserver.stop()
            self._apiserver = None

    def _context(self) -> ssl.SSLContext:
        # Anonymous (RBAC lets anyone read /readyz): the admin's requests in the audit log stay the tests'.
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def _apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5, context=self._context()) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def _wait(self, name: str, process: _Process, ready: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if not process.alive() or time.monotonic() > deadline:
                why = f"exited with {process.popen.returncode}" if not process.alive() else (
                    f"not ready within {START_TIMEOUT:.0f} s"
                )
                with contextlib.suppress(KubeAPIError):
                    process.stop()
                raise KubeAPIError(f"{name} {why}; the end of {process.log}:\n{_tail(process.log)}")
            time.sleep(0.1)

    # --- certificates and files ----------------------------------------------------------------------------

    def _make_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        config = pki / "openssl.cnf"
        config.write_text(OPENSSL_CONFIG)

        def openssl(*args: str) -> None:
            done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                raise KubeAPIError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")

        def key(path: Path) -> None:
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))

        key(pki / "ca.key")
        openssl(
            "req", "-x509", "-new", "-key", str(pki / "ca.key"), "-subj", "/CN=syscribe-test-ca",
            "-days", "7", "-config", str(config), "-extensions", "ca", "-out", str(self.ca_file),
        )
        for name, subject, extensions in (
            ("server", "/CN=kube-apiserver", "server"),
            ("admin", "/O=system:masters/CN=admin", "client"),
        ):
            key(pki / f"{name}.key")
            openssl(
                "req", "-new", "-key", str(pki / f"{name}.key"), "-subj", subject, "-config", str(config),
                "-out", str(pki / f"{name}.csr"),
            )
            openssl(
                "x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(self.ca_file),
                "-CAkey", str(pki / "ca.key"), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
                "-days", "7", "-extfile", str(config), "-extensions", extensions,
                "-out", str(pki / f"{name}.crt"),
            )
        # Service-account tokens are signed with this key and checked with its public half.
        key(pki / "sa.key")
        openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))

    def _write_files(self) -> None:
        (self.workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._write_kubeconfig(
            self.admin_kubeconfig,
            {"client-certificate": str(self.admin_cert), "client-key": str(self.admin_key)},
        )

    def _write_kubeconfig(self, path: Path, user: dict[str, str]) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(config, indent=1) + "\n")  # JSON is YAML
        return path

    # --- clients -------------------------------------------------------------------------------------

    def configuration(self) -> Any:
        """A kubernetes.client.Configuration for the admin (CN=admin, O=system:masters)."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        config.ssl_ca_cert = str(self.ca_file)
        config.cert_file = str(self.admin_cert)
        config.key_file = str(self.admin_key)
        return config

    def client(self) -> Any:
        """A kubernetes.client.ApiClient for the admin."""
        from kubernetes import client

        return client.ApiClient(self.configuration())

    def kubeconfig_for_token(self, token: str, path: Path) -> Path:
        """A kubeconfig at `path` that reaches this server with a bearer token."""
        return self._write_kubeconfig(path, {"token": token})

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A token of the service account (made when it does not exist yet), from the TokenRequest API."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.client())
        try:
            core.create_namespaced_service_account(
                namespace, {"metadata": {"name": service_account}}
            )
        except ApiException as err:
            if err.status != 409:
                raise
        answer = core.create_namespaced_service_account_token(
            service_account, namespace, {"spec": {"expirationSeconds": seconds}}
        )
        token: str = answer.status.token
        return token

    def create_namespace(self, prefix: str = "test") -> str:
        """A new namespace named `prefix-xxxxx` (the prefix made a valid name); returns its name."""
        from kubernetes import client

        base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].rstrip("-") or "test"
        made = client.CoreV1Api(self.client()).create_namespace({"metadata": {"generateName": f"{base}-"}})
        name: str = made.metadata.name
        return name

    # --- what the server saw -------------------------------------------------------------------------

    def requests(self, user: str | None = None) -> list[Request]:
        """The requests the API server received (in order), of `user` when given, from its audit log."""
        seen: list[Request] = []
        with open(self.audit_log, "rb") as log:
            for line in log:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line being written
                if event.get("stage") != "RequestReceived":
                    continue
                who = str(event.get("user", {}).get("username", ""))
                if user is None or who == user:
                    seen.append(Request(str(event.get("verb")), str(event.get("requestURI")), who))
        return seen

    def allowed(
        self, user: str, verb: str, resource: str, group: str = "", namespace: str | None = None,
        groups: Sequence[str] = (),
    ) -> bool:
        """Whether RBAC lets `user` do `verb` on `resource` (a SubjectAccessReview, asked as admin)."""
        from kubernetes import client

        attributes: dict[str, str] = {"verb": verb, "resource": resource, "group": group}
        if namespace is not None:
            attributes["namespace"] = namespace
        review = client.AuthorizationV1Api(self.client()).create_subject_access_review(
            {"spec": {"user": user, "groups": list(groups), "resourceAttributes": attributes}}
        )
        return bool(review.status.allowed)


def service_account_user(namespace: str, name: str) -> str:
    """The user name a service account's token authenticates as."""
    return f"system:serviceaccount:{namespace}:{name}"


def pod_manifest(
    name: str, node: str, labels: dict[str, str] | None = None, containers: Sequence[str] = ("app",)
) -> dict[str, Any]:
    """A Pod the API server accepts, bound to `node` at creation (no scheduler runs: it stays Pending)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "nodeName": node,
            "containers": [{"name": c, "image": "registry.example/app:1"} for c in containers],
        },
    }
