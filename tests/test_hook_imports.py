"""The hook's import path stays lean: stdlib, ctypes and syscribe's small modules only, and a container
without the annotation does not even load those (decided before anything heavy is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("click", "yaml", "kubernetes", "bcc", "orjson", "watchdog", "pyroute2", "prometheus_client",
         "syscribe.cli", "syscribe.enricher", "syscribe.controller", "syscribe.seccompprofile")

NO_ANNOTATION = json.dumps({
    "ociVersion": "1.0.2", "id": "c", "status": "creating", "pid": 1, "bundle": "/b",
    "annotations": {"io.kubernetes.cri-o.ContainerType": "container"},
})


def modules_after(code: str, stdin: str = "") -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        input=stdin, capture_output=True, text=True, check=True,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or any(m.startswith(h) for h in HEAVY))


def test_entry_point_imports_nothing_heavy() -> None:
    loaded = modules_after("import syscribe.hooks.main")
    assert heavy(loaded) == []
    assert not {"ctypes", "syscribe.recorder", "syscribe.ociprofile", "syscribe.profilemerge",
                "syscribe.hooks.tracer"} & loaded


def test_a_container_without_the_annotation_loads_only_the_decision() -> None:
    code = "from syscribe.hooks.main import main\nrc = main(['--config', '/nonexistent/hook.json'])\n" \
           "assert rc == 0, rc"
    loaded = modules_after(code, NO_ANNOTATION)
    assert heavy(loaded) == []
    assert not {"ctypes", "syscribe.recorder", "syscribe.ociprofile", "syscribe.profilemerge",
                "syscribe.fsutil", "syscribe.syscalls", "syscribe.hooks.spawn", "syscribe.hooks.tracer",
                "subprocess"} & loaded


def test_the_hand_over_path_imports_neither_typing_nor_socket() -> None:
    """What a recorded container's start imports before it hands over to the resident recorder (main,
    the config, the log, the hand-over and the path checks), under the launcher install-hook registers
    (`python3 -I -S`): no typing (about 6 ms), no socket.py (its IntEnums, about 6 ms), no dataclasses
    (docs/hook.md, "Where the time goes")."""
    import syscribe.hooks

    top = os.path.dirname(os.path.dirname(os.path.dirname(syscribe.hooks.__file__)))
    code = (f"import sys; sys.path.insert(0, {top!r})\n"
            "import syscribe.hooks.main, syscribe.hooks.config, syscribe.hooks.log, syscribe.hooks.handover\n"
            "import syscribe.hooks.paths\n"
            "syscribe.hooks.config.HookConfig()\n"
            "print(sorted(set(sys.modules) & {'typing', 'socket', 'dataclasses', 'inspect', 'ast'}))")
    result = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_records_behave_as_named_tuples() -> None:
    """syscribe.hooks.record.Record makes what typing.NamedTuple would: fields in order, defaults,
    properties and methods, _replace, equality with a tuple; a default before a field without one is
    refused as typing.NamedTuple refuses it."""
    import pytest

    from syscribe.hooks.config import HookConfig
    from syscribe.hooks.paths import Placement
    from syscribe.hooks.record import Record

    placement = Placement("/var/lib/syscribe", ("ns",), "web.json")
    assert placement == ("/var/lib/syscribe", ("ns",), "web.json")
    assert placement.path == "/var/lib/syscribe/ns/web.json" and placement.meta_name == "web.meta.json"
    assert Placement._fields == ("root", "parts", "name")
    config = HookConfig()
    assert not config.fails_closed and config._replace(on_failure="fail").fails_closed
    assert HookConfig._fields[0] == "output_roots"
    assert len(HookConfig._field_defaults) == len(HookConfig._fields)
    with pytest.raises(TypeError, match="without a default follows one with a default"):
        class Broken(Record):
            first: int = 1
            second: int


def test_the_tracer_path_imports_nothing_heavy() -> None:
    code = "\n".join([
        "import syscribe.hooks.tracer, syscribe.hooks.spawn, syscribe.hooks.output",
        "import syscribe.recorder, syscribe.recorder.coreobject, syscribe.syscalls, syscribe.runtimes",
        "from syscribe.recorder.names import name_recording",
    ])
    loaded = modules_after(code)
    assert heavy(loaded) == []
    assert "syscribe.recorder.bcc" not in loaded


def test_importtime_is_measurable() -> None:
    """`python -X importtime` works on the entry point (docs/hook.md quotes its numbers)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import syscribe.hooks.main"],
                            capture_output=True, text=True, check=True, env={**os.environ})
    assert "syscribe.hooks.main" in result.stderr


def test_the_isolated_launcher_runs_without_site() -> None:
    """`python3 -I -S hooks/isolated.py`: no site-packages on sys.path, and the hook still runs,
    the hand-over module included (stdlib only)."""
    import syscribe.hooks

    script = os.path.join(os.path.dirname(syscribe.hooks.__file__), "isolated.py")
    result = subprocess.run(["/usr/bin/python3", "-I", "-S", script, "--config", "/nonexistent/hook.json"],
                            input=NO_ANNOTATION, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    top = os.path.dirname(os.path.dirname(os.path.dirname(script)))
    code = (f"import sys; sys.path.insert(0, {top!r})\n"
            "import syscribe.hooks.main, syscribe.hooks.handover\n"
            "print(sorted(m for m in sys.modules if 'site' in m or m.split('.')[0] in ('click', 'yaml')))")
    loaded = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True, text=True,
                            check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_entry_point_knows_the_default_config_without_importing_it() -> None:
    from syscribe.hooks.config import DEFAULT_PATH
    from syscribe.hooks.main import DEFAULT_CONFIG

    assert DEFAULT_CONFIG == DEFAULT_PATH
    assert "dataclasses" not in modules_after("from syscribe.hooks.main import main\n"
                                              "main(['--config', '/nonexistent/hook.json'])", NO_ANNOTATION)
