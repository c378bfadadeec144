"""crio-config/: the hooks.d file as containers' hooks library reads it (pkg/hooks 1.0.0), the CRI-O
drop-in, the hook config example, and that the install guide names the same paths.

The library's checks, from its 1.0.0 reader: `version` is "1.0.0"; `hook.path` is set (and stat-able:
the real podman test in test_hook_real.py loads a copy pointing at the installed command); every
`when.annotations` key and value and every `when.commands` entry compiles as a regexp; `stages` is set
and each stage is one of the OCI stages. A hook applies when every (key pattern, value pattern) pair
matches some annotation, with Go's unanchored regexp.MatchString, hence the explicit anchors.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from syscribe.hooks.annotation import KEY
from syscribe.hooks.config import _KEYS as CONFIG_KEYS
from syscribe.hooks.config import DEFAULT_PATH, parse_config

ROOT = Path(__file__).resolve().parent.parent
HOOKS_D = ROOT / "crio-config" / "hooks.d" / "syscribe-hook.json"
DROP_IN = ROOT / "crio-config" / "crio.conf.d" / "10-syscribe.conf"
EXAMPLE = ROOT / "crio-config" / "syscribe" / "hook.json"
INSTALL = ROOT / "docs" / "install-crio-node.md"
# OCI runtime-spec stages (containers/common accepts these, plus a consumer's extension stages).
OCI_STAGES = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
WHEN_KEYS = {"always", "annotations", "commands", "hasBindMounts"}
HOOK_KEYS = {"path", "args", "env", "timeout"}


def hooks_d() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(HOOKS_D.read_text())
    return doc


def library_matches(when: dict[str, Any], annotations: dict[str, str]) -> bool:
    """when.annotations as the 1.0.0 library evaluates it (AND over the pairs, search semantics)."""
    for key_pattern, value_pattern in when["annotations"].items():
        if not any(
            re.search(key_pattern, k) and re.search(value_pattern, v) for k, v in annotations.items()
        ):
            return False
    return True


def test_hooks_d_schema() -> None:
    doc = hooks_d()
    assert set(doc) == {"version", "hook", "when", "stages"}
    assert doc["version"] == "1.0.0"
    hook = doc["hook"]
    assert set(hook) <= HOOK_KEYS
    assert hook["path"].startswith("/") and Path(hook["path"]).name == "syscribe-hook"
    assert hook["args"][0] == "syscribe-hook"
    assert hook["args"][1:] == ["--config", DEFAULT_PATH]
    assert isinstance(hook["timeout"], int) and hook["timeout"] > 0
    assert all(isinstance(e, str) and "=" in e for e in hook["env"])
    assert doc["stages"] == ["prestart"]
    assert set(doc["stages"]) <= OCI_STAGES
    when = doc["when"]
    assert set(when) <= WHEN_KEYS and when  # at least one condition
    for key, value in when["annotations"].items():
        re.compile(key)
        re.compile(value)
    # RE2 (Go) rejects backreferences and lookarounds that Python accepts; the patterns use neither.
    for pattern in [*when["annotations"], *when["annotations"].values()]:
        assert not re.search(r"\\[1-9]|\(\?[=!<]", pattern)


def test_the_command_named_is_the_one_pyproject_installs() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[Path(hooks_d()["hook"]["path"]).name] == "syscribe.hooks.main:main"


@pytest.mark.parametrize(
    ("annotations", "runs"),
    [
        ({KEY: "of:/var/lib/syscribe/profiles/a.json"}, True),
        ({f"{KEY}/web": "of:/var/lib/syscribe/profiles/web.json"}, True),
        ({KEY: ""}, True),  # the hook runs and reports the empty value
        ({"other": "x", KEY: "of:/x"}, True),
        ({}, False),
        ({"other": "x"}, False),
        ({f"{KEY}x": "of:/a"}, False),
        ({f"x.{KEY}": "of:/a"}, False),
        ({f"{KEY}/": "of:/a"}, False),
        ({"io.containers.trace-syscallZ/web": "of:/a"}, False),
    ],
)
def test_hooks_d_annotation_match(annotations: dict[str, str], runs: bool) -> None:
    assert library_matches(hooks_d()["when"], annotations) is runs


def test_drop_in_is_toml_with_the_keys_crio_reads() -> None:
    doc = tomllib.loads(DROP_IN.read_text())
    runtime = doc["crio"]["runtime"]
    assert set(runtime) == {"hooks_dir", "runtimes"}
    assert "/etc/containers/oci/hooks.d" in runtime["hooks_dir"]
    assert all(d.startswith("/") for d in runtime["hooks_dir"])
    assert set(runtime["runtimes"]) == {"runc", "crun"}
    for name, handler in runtime["runtimes"].items():
        assert set(handler) == {"runtime_path", "runtime_type", "runtime_root", "allowed_annotations"}, name
        assert handler["runtime_type"] == "oci"
        assert handler["runtime_root"].startswith("/run/")
        assert handler["allowed_annotations"] == [KEY]


def test_hook_config_example_is_valid_and_complete() -> None:
    doc = json.loads(EXAMPLE.read_text())
    config = parse_config(EXAMPLE.read_bytes(), str(EXAMPLE))
    assert set(doc) == set(CONFIG_KEYS)  # every key, so that the example documents them all
    assert config.on_failure == "start"
    assert config.tracer_cgroup == "/syscribe"


def test_install_guide_names_the_same_paths() -> None:
    text = INSTALL.read_text()
    hook = hooks_d()["hook"]
    for needle in (
        hook["path"],
        DEFAULT_PATH,
        "/etc/containers/oci/hooks.d/syscribe-hook.json",
        "/etc/crio/crio.conf.d/10-syscribe.conf",
        "crio-config/hooks.d/syscribe-hook.json",
        "crio-config/crio.conf.d/10-syscribe.conf",
        "crio-config/syscribe/hook.json",
        KEY,
    ):
        assert needle in text, needle


def test_the_hooks_d_folder_holds_only_hook_files() -> None:
    # podman and CRI-O parse every *.json in a hooks directory; anything else there breaks every start.
    folder = HOOKS_D.parent
    for path in folder.iterdir():
        assert path.suffix == ".json", path
        assert "hook" in json.loads(path.read_text()), path
