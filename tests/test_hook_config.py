"""The hook's config file: defaults, every key, and broken, hostile and huge files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from syscribe.hooks.config import (
    DEFAULT_LOG,
    DEFAULT_OUTPUT_ROOT,
    MAX_CONFIG_BYTES,
    ConfigError,
    HookConfig,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "crio-config" / "syscribe" / "hook.json"


def cfg(**values: object) -> HookConfig:
    return parse_config(json.dumps(values).encode())


def test_defaults() -> None:
    c = parse_config(b"{}")
    assert c == HookConfig()
    assert c.output_roots == (DEFAULT_OUTPUT_ROOT,)
    assert c.input_roots == ("/var/lib/syscribe/profiles", "/etc/syscribe/profiles")
    assert c.timeout_seconds == 5.0
    assert c.backend == "core"
    assert c.log_file == DEFAULT_LOG
    assert c.on_failure == "start" and not c.fails_closed
    assert c.runtime_init == "trim"
    assert c.create_directories is True


def test_every_key() -> None:
    c = cfg(
        outputRoots=["/srv/profiles/", "/var//lib/./p", "/srv/profiles"],
        inputRoots=["/usr/share/containers"],
        timeoutSeconds=2,
        backend="bcc",
        logFile=None,
        onFailure="fail",
        runtimeInit="keep",
        createDirectories=False,
    )
    assert c.output_roots == ("/srv/profiles", "/var/lib/p")  # normalised, duplicates dropped
    assert c.input_roots == ("/usr/share/containers",)
    assert (c.timeout_seconds, c.backend, c.log_file) == (2.0, "bcc", None)
    assert c.fails_closed and c.runtime_init == "keep" and not c.create_directories


def test_tracer_cgroup() -> None:
    assert HookConfig().tracer_cgroup is None  # stays where the runtime ran it unless configured
    assert cfg(tracerCgroup="/syscribe//tracers/./").tracer_cgroup == "/syscribe/tracers"
    assert cfg(tracerCgroup=None).tracer_cgroup is None


def test_the_shipped_example_parses() -> None:
    c = parse_config(EXAMPLE.read_bytes(), str(EXAMPLE))
    assert c.output_roots == (DEFAULT_OUTPUT_ROOT,)
    assert c.on_failure == "start"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"outputRoot": ["/x"]}, "unknown key 'outputRoot'"),
        ({"tracerCgroup": "syscribe"}, "tracerCgroup must be a cgroup path"),
        ({"tracerCgroup": 7}, "tracerCgroup must be a cgroup path"),
        ({"tracerCgroup": "/a/../b"}, "tracerCgroup has a '..' component"),
        ({"tracerCgroup": "/a\x85b"}, "tracerCgroup has control characters"),
        ({"tracerCgroup": "/" + "a" * 2000}, "too long"),
        ({"outputRoots": "/x"}, "non-empty list"),
        ({"outputRoots": []}, "non-empty list"),
        ({"outputRoots": ["relative"]}, r"outputRoots\[0\] must be an absolute"),
        ({"outputRoots": [7]}, "must be an absolute"),
        ({"outputRoots": ["/"]}, "confines nothing"),
        ({"outputRoots": ["//./"]}, "confines nothing"),
        ({"outputRoots": ["/a/../etc"]}, "'..' component"),
        ({"outputRoots": ["/a\nb"]}, "control characters"),
        ({"outputRoots": ["/" + "a" * 5000]}, "too long"),
        ({"outputRoots": ["/a"] * 100}, "at most 64"),
        ({"inputRoots": ["x"]}, "inputRoots"),
        ({"timeoutSeconds": 0}, "timeoutSeconds"),
        ({"timeoutSeconds": -1}, "timeoutSeconds"),
        ({"timeoutSeconds": 1e9}, "timeoutSeconds"),
        ({"timeoutSeconds": "5"}, "timeoutSeconds"),
        ({"timeoutSeconds": True}, "timeoutSeconds"),
        ({"timeoutSeconds": None}, "timeoutSeconds"),
        ({"backend": ""}, "backend"),
        ({"backend": 3}, "backend"),
        ({"backend": "x" * 100}, "backend"),
        ({"backend": "core\n"}, "backend"),
        ({"logFile": "relative.log"}, "logFile"),
        ({"logFile": "/var/log/"}, "logFile"),
        ({"logFile": 1}, "logFile"),
        ({"logFile": "/a\x00b"}, "logFile"),
        ({"onFailure": "ignore"}, "onFailure must be one of 'start', 'fail'"),
        ({"onFailure": ["fail"]}, "onFailure"),
        ({"runtimeInit": "drop"}, "runtimeInit"),
        ({"createDirectories": "yes"}, "createDirectories must be true or false"),
    ],
)
def test_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg(**values)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b"{,}", "not valid JSON"),
        (b"\xff", "not UTF-8"),
        (b'{"backend": "core", "backend": "bcc"}', "appears twice"),
        (b"[" * 50_000, "nested too deeply|not valid JSON"),
        (b" " * (MAX_CONFIG_BYTES + 1), "a hook config is at most"),
    ],
)
def test_broken_files(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "/etc/syscribe/hook.json")


def test_load_missing_default_gives_defaults(tmp_path: Path) -> None:
    assert load_config(str(tmp_path / "absent.json"), required=False) == HookConfig()
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "absent.json"), required=True)


def test_load_refuses_what_is_not_a_small_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(tmp_path), required=True)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(fifo), required=False)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_CONFIG_BYTES + 10))
    with pytest.raises(ConfigError, match="refused"):
        load_config(str(big), required=True)
    good = tmp_path / "good.json"
    good.write_text('{"onFailure": "fail"}')
    assert load_config(str(good), required=True).fails_closed
