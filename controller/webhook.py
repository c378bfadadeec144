"""`syscribe webhook`: the mutating admission webhook that marks selected pods for recording.

An HTTPS server (stdlib http.server in threads) answering AdmissionReviews at `/mutate` with
syscribe.controller.admission, from a cache of the cluster's ProfileRecordings that list+watch keeps
current (syscribe.kube.ListWatch): a request never waits on the API server. `/healthz` answers once the
cache is filled.

The serving certificate and key are read from files (a Secret mounted into the pod, renewed by
cert-manager or by hand) and read again when either file changes, at the next TLS handshake: a
certificate replaced mid-run is used without a restart, and one that cannot be loaded (half-written,
key and certificate not matching yet) leaves the previous one in use and says so once.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from syscribe.controller import admission
from syscribe.controller.recording import GROUP, PLURAL, VERSION, Recording, RecordingError, parse_recording
from syscribe.kube import ListWatch, Report, host_of

MAX_BODY = 8 * 1024 * 1024  # a pod with hundreds of containers is well under a megabyte
READ_TIMEOUT = 10.0


class RecordingCache:
    """The cluster's ProfileRecordings, by (namespace, name); those that cannot be parsed are kept aside
    with the reason, so that they select nothing and are still reported once."""

    def __init__(self, report: Report | None = None) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Recording] = {}
        self._report = report
        self._invalid: dict[tuple[str, str], str] = {}

    def _key(self, obj: object) -> tuple[str, str] | None:
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(meta, dict):
            return None
        ns, name = meta.get("namespace"), meta.get("name")
        return (ns, name) if isinstance(ns, str) and isinstance(name, str) else None

    def _parse(self, obj: object) -> Recording | None:
        try:
            return parse_recording(obj)
        except RecordingError as exc:
            key = self._key(obj)
            if key is not None and self._invalid.get(key) != str(exc):
                self._invalid[key] = str(exc)
                if self._report is not None:
                    self._report("recording_invalid", f"ProfileRecording {key[0]}/{key[1]} ignored: {exc}")
            return None

    def reset(self, items: list[object]) -> None:
        fresh: dict[tuple[str, str], Recording] = {}
        for obj in items:
            recording = self._parse(obj)
            if recording is not None:
                fresh[recording.key] = recording
        with self._lock:
            self._items = fresh

    def apply(self, kind: str, obj: object) -> None:
        key = self._key(obj)
        if key is None:
            return
        recording = None if kind == "DELETED" else self._parse(obj)
        with self._lock:
            if recording is None:
                self._items.pop(key, None)
            else:
                self._items[key] = recording

    def get(self, namespace: str, name: str) -> Recording | None:
        with self._lock:
            return self._items.get((namespace, name))

    def in_namespace(self, namespace: str) -> list[Recording]:
        with self._lock:
            return [r for (ns, _), r in self._items.items() if ns == namespace]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def watch_recordings(
    api_client: Any, cache: RecordingCache, report: Report | None = None, **kwargs: Any
) -> ListWatch:
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    return ListWatch(
        api.list_cluster_custom_object,
        what="ProfileRecordings",
        host=host_of(api_client),
        list_kwargs={"group": GROUP, "version": VERSION, "plural": PLURAL},
        on_list=cache.reset,
        on_event=cache.apply,
        report=report,
        **kwargs,
    )


# --- TLS that follows its files -----------------------------------------------------------------


def _signature(*paths: str) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class ReloadingTLS:
    """An SSLContext per certificate file version; each handshake gets the newest one that loaded."""

    def __init__(self, cert_file: str, key_file: str, report: Report) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._report = report
        self._lock = threading.Lock()
        self._signature = _signature(cert_file, key_file)
        self._context = self._load()  # the first load must work: nothing to fall back on
        self._failed: tuple[tuple[int, int, int], ...] | None = None
        self.reloads = 0

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def current(self) -> ssl.SSLContext:
        try:
            signature = _signature(self.cert_file, self.key_file)
        except OSError:
            return self._context  # mid-replacement (a Secret update swaps a symlink): keep serving
        with self._lock:
            if signature in (self._signature, self._failed):
                return self._context
            try:
                self._context = self._load()
            except (ssl.SSLError, OSError) as exc:
                self._failed = signature
                self._report(
                    "certificate_unusable",
                    f"new certificate {self.cert_file} / key {self.key_file} cannot be used ({exc}); "
                    "still serving the previous one",
                )
                return self._context
            self._signature = signature
            self.reloads += 1
            self._report("certificate_reloaded", f"serving the new certificate from {self.cert_file}")
            return self._context


# --- the server ---------------------------------------------------------------------------------


@dataclass
class WebhookStats:
    reviews: int = 0
    mutated: int = 0
    refused: int = 0
    started: float = field(default_factory=time.monotonic)


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        tls: ReloadingTLS,
        cache: RecordingCache,
        root: str,
        synced: Callable[[], bool],
        report: Report,
    ) -> None:
        super().__init__(address, _Handler)
        self.tls, self.cache, self.root = tls, cache, root
        self.synced = synced
        self.report = report
        self.stats = WebhookStats()
        self._stats_lock = threading.Lock()

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        sock.settimeout(READ_TIMEOUT)
        # The handshake happens in the handler's thread (do_handshake_on_connect on first read), so a
        # slow client holds only its own thread.
        return self.tls.current().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def count(self, field_name: str) -> None:
        with self._stats_lock:
            setattr(self.stats, field_name, getattr(self.stats, field_name) + 1)


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per review would flood the log; errors are reported through `report`

    def handle(self) -> None:
        try:
            self.connection.do_handshake()
            super().handle()
        except (ssl.SSLError, OSError):
            pass  # a client that hangs up or fails its handshake costs nothing but its connection

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/readyz"):
            ready = self.server.synced()
            self._send(
                200 if ready else 503, b"ok\n" if ready else b"recordings not listed yet\n", "text/plain"
            )
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/mutate":
            self._send(404, b"not found; reviews go to /mutate\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, b"Content-Length required\n", "text/plain")
            return
        if length < 0 or length > MAX_BODY:
            self.server.count("refused")
            self._send(413, f"body of {length} bytes; at most {MAX_BODY}\n".encode(), "text/plain")
            self.close_connection = True
            return
        body = self.rfile.read(length)
        self.server.count("reviews")
        try:
            namespace = _peek_namespace(body)
            decision = admission.decide(
                body, self.server.cache.in_namespace(namespace) if namespace else [], self.server.root
            )
        except admission.ReviewError as exc:
            self.server.count("refused")
            self.server.report("review_refused", f"AdmissionReview not answered: {exc}")
            self._send(400, f"{exc}\n".encode(), "text/plain")
            return
        if decision.patch:
            self.server.count("mutated")
        self._send(200, decision.response())


def _peek_namespace(body: bytes) -> str | None:
    """The request's namespace, so only that namespace's recordings are handed to the decision (the full
    parse and every check happen in admission.decide)."""
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    request = doc.get("request") if isinstance(doc, dict) else None
    namespace = request.get("namespace") if isinstance(request, dict) else None
    return namespace if isinstance(namespace, str) else None


def stderr_report(kind: str, message: str) -> None:
    print(f"syscribe webhook: {message}", file=sys.stderr, flush=True)


def serve(
    *,
    api_client: Any,
    cert_file: str,
    key_file: str,
    bind: str,
    port: int,
    root: str,
    report: Report = stderr_report,
    ready: Callable[[WebhookServer], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run until `stop` is set (or forever). `ready` gets the server once it listens."""
    cache = RecordingCache(report)
    watch = watch_recordings(api_client, cache, report)
    tls = ReloadingTLS(cert_file, key_file, report)
    server = WebhookServer((bind, port), tls, cache, root, watch.synced, report)
    watch.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        if ready is not None:
            ready(server)
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        server.server_close()
        watch.stop()
        with contextlib.suppress(RuntimeError):
            thread.join(5)
