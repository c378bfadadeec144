"""The hook's configuration: a small JSON file named in the hooks.d entry (`--config PATH`).

`parse_config` is pure; `load_config` reads the file (bounded, regular files only). Every key is
optional; unknown keys and wrong types are errors, because a typo (`outputRoot`) would otherwise
silently change where profiles may be written.
"""

from __future__ import annotations

import json

from syscribe import strictjson
from syscribe.hooks.record import Record

TYPE_CHECKING = False  # not typing's: see syscribe.hooks.record
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "/etc/syscribe/hook.json"
DEFAULT_OUTPUT_ROOT = "/var/lib/syscribe/profiles"
DEFAULT_LOG = "/var/log/syscribe-hook.log"
DEFAULT_RECORDER_SOCKET = "/run/syscribe/recorder.sock"
MAX_CONFIG_BYTES = 64 * 1024
MAX_TIMEOUT = 120.0
ON_FAILURE = ("start", "fail")
RUNTIME_INIT = ("trim", "keep")
BACKENDS_HINT = "core, bcc or auto"

_KEYS = (
    "outputRoots",
    "inputRoots",
    "timeoutSeconds",
    "backend",
    "logFile",
    "onFailure",
    "runtimeInit",
    "createDirectories",
    "addRuntimeSyscalls",
    "tracerCgroup",
    "recorderSocket",
)


class ConfigError(ValueError):
    """The configuration file is unusable; the message names the key and what is expected."""


# A named tuple, not a dataclass: importing dataclasses (inspect, ast...) costs every recorded container
# start about 10 ms, typing about 6 (docs/hook.md, "Where the time goes").
class HookConfig(Record):
    # Directories an `of:` path must lie under (after normalisation, without following symlinks).
    output_roots: tuple[str, ...] = (DEFAULT_OUTPUT_ROOT,)
    # Directories an `if:` path must lie under. Whoever can create pods names the file and the hook reads
    # it as root, and a parse error quotes what it found: so not "/" by default, only where profiles
    # live (earlier recordings, and profiles an admin put in /etc).
    input_roots: tuple[str, ...] = (DEFAULT_OUTPUT_ROOT, "/etc/syscribe/profiles")
    # How long the hook waits for the tracer to say it is attached.
    timeout_seconds: float = 5.0
    # Passed to syscribe.recorder: core (CO-RE, default), bcc, auto. Checked by the tracer, whose
    # error then follows on_failure like any other.
    backend: str = "core"
    log_file: str | None = DEFAULT_LOG
    # What a failure does to the container: "start" lets it start unrecorded (the error is logged),
    # "fail" makes the hook exit non-zero so that the runtime refuses to start it.
    on_failure: str = "start"
    # "trim": leave out the runtime's own calls before its first prctl (docs/hook.md); "keep": all.
    runtime_init: str = "trim"
    # Create missing directories between an output root and the profile (never the root itself).
    create_directories: bool = True
    # Add what the runtime (runc, crun) is known to call after loading the filter and this recording
    # may have missed (syscribe.runtimes), so that the container starts under the profile every time.
    add_runtime_syscalls: bool = True
    # The cgroup (a path below each hierarchy's root, the same in every hierarchy) the tracer moves
    # itself into, out of the runtime's (the pod's, under CRI-O); None: it stays there.
    tracer_cgroup: str | None = None
    # The resident recorder's socket (syscribe recorder): the hook hands over there when it answers,
    # and starts a tracer of its own when nothing listens; null: always a tracer of its own.
    recorder_socket: str | None = DEFAULT_RECORDER_SOCKET

    @property
    def fails_closed(self) -> bool:
        return self.on_failure == "fail"


def parse_config(data: bytes, shown: str = "config") -> HookConfig:
    """The configuration from the file's bytes; ConfigError names what is wrong."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{shown}: {len(data)} bytes; a hook config is at most {MAX_CONFIG_BYTES}")
    try:
        doc = strictjson.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{shown}: nested too deeply") from None
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ConfigError(f"{shown}: not valid JSON: {reason}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{shown}: expected a JSON object of settings")
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{shown}: unknown key {unknown[0]!r}; known keys: {', '.join(_KEYS)}")
    defaults = HookConfig()
    return HookConfig(
        output_roots=_roots(doc, "outputRoots", defaults.output_roots, shown, allow_slash=False),
        input_roots=_roots(doc, "inputRoots", defaults.input_roots, shown, allow_slash=True),
        timeout_seconds=_timeout(doc.get("timeoutSeconds", defaults.timeout_seconds), shown),
        backend=_backend(doc.get("backend", defaults.backend), shown),
        log_file=_log_file(doc.get("logFile", defaults.log_file), shown),
        on_failure=_choice(doc, "onFailure", ON_FAILURE, defaults.on_failure, shown),
        runtime_init=_choice(doc, "runtimeInit", RUNTIME_INIT, defaults.runtime_init, shown),
        create_directories=_bool(doc, "createDirectories", defaults.create_directories, shown),
        add_runtime_syscalls=_bool(doc, "addRuntimeSyscalls", defaults.add_runtime_syscalls, shown),
        tracer_cgroup=_cgroup(doc.get("tracerCgroup", defaults.tracer_cgroup), shown),
        recorder_socket=_socket_path(doc.get("recorderSocket", defaults.recorder_socket), shown),
    )


def load_config(path: str, *, required: bool) -> HookConfig:
    """Read and parse `path`. A missing file gives the defaults unless `required` (named explicitly)."""
    import os

    from syscribe.fsutil import FsError, read_limited

    if not required and not os.path.lexists(path):
        return HookConfig()
    try:
        data = read_limited(path, MAX_CONFIG_BYTES)
    except FsError as exc:
        raise ConfigError(f"{exc}; fix or remove the hook config") from None
    return parse_config(data, path)


def _roots(
    doc: dict[str, Any], key: str, default: tuple[str, ...], shown: str, *, allow_slash: bool
) -> tuple[str, ...]:
    if key not in doc:
        return default
    value = doc[key]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{shown}: {key} must be a non-empty list of absolute directories")
    if len(value) > 64:
        raise ConfigError(f"{shown}: {key} has {len(value)} entries; at most 64")
    roots: list[str] = []
    for i, item in enumerate(value):
        where = f"{shown}: {key}[{i}]"
        if not isinstance(item, str) or not item.startswith("/"):
            raise ConfigError(f"{where} must be an absolute directory path")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in item) or len(item) >= 4096:
            raise ConfigError(f"{where} has control characters or is too long")
        parts = [p for p in item.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ConfigError(f"{where} has a '..' component; give the real directory")
        if not parts and not allow_slash:
            raise ConfigError(f"{where} is '/', which confines nothing; name the directory for profiles")
        roots.append("/" + "/".join(parts))
    return tuple(dict.fromkeys(roots))


def _timeout(value: object, shown: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT:
        raise ConfigError(
            f"{shown}: timeoutSeconds must be a number of seconds above 0, at most {MAX_TIMEOUT:g}"
        )
    return float(value)


def _backend(value: object, shown: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 40 or not value.isprintable():
        raise ConfigError(f"{shown}: backend must be the name of a recorder backend ({BACKENDS_HINT})")
    return value


def _log_file(value: object, shown: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or value.endswith("/"):
        raise ConfigError(f"{shown}: logFile must be an absolute file path, or null for stderr only")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or len(value) >= 4096:
        raise ConfigError(f"{shown}: logFile has control characters or is too long")
    return value


def _cgroup(value: object, shown: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{shown}: tracerCgroup must be a cgroup path like /syscribe, or null to stay put")
    if not value.isprintable() or len(value) >= 1024:
        raise ConfigError(f"{shown}: tracerCgroup has control characters or is too long")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"{shown}: tracerCgroup has a '..' component")
    return "/" + "/".join(parts)
def _socket_path(value: object, shown: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or value.endswith("/"):
        raise ConfigError(
            f"{shown}: recorderSocket must be an absolute path, or null for no resident recorder"
        )
    # sun_path holds 108 bytes with the terminating NUL.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or len(value.encode()) > 107:
        raise ConfigError(f"{shown}: recorderSocket has control characters or is longer than 107 bytes")
    return value


def _choice(doc: dict[str, Any], key: str, valid: tuple[str, ...], default: str, shown: str) -> str:
    value = doc.get(key, default)
    if value not in valid or not isinstance(value, str):
        raise ConfigError(f"{shown}: {key} must be one of {', '.join(map(repr, valid))}")
    return value


def _bool(doc: dict[str, Any], key: str, default: bool, shown: str) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{shown}: {key} must be true or false")
    return value


