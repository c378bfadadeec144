"""`syscribe install-hook`: the files of crio-config/ with this node's paths, idempotent, never over a
file it did not write, and `--uninstall` takes away exactly what it wrote. Run as the real command, in
temporary directories; podman then records a container through the hooks.d file it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from syscribe import installhook as ih
from syscribe.hooks.annotation import KEY
from syscribe.hooks.config import parse_config
from tests.support.prereq import require

ROOT = Path(__file__).resolve().parent.parent
CRIO_CONFIG = ROOT / "crio-config"
SYSCRIBE = Path(sys.executable).parent / "syscribe"


def dirs(tmp_path: Path) -> list[str]:
    return ["--hooks-dir", str(tmp_path / "hooks.d"), "--config-dir", str(tmp_path / "etc"),
            "--output-root", str(tmp_path / "profiles"),
            "--crio", "--crio-dir", str(tmp_path / "crio.conf.d")]


def install(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SYSCRIBE), "install-hook", *dirs(tmp_path), *args],
                          capture_output=True, text=True, check=False)


def tree(tmp_path: Path) -> dict[str, str]:
    return {str(p.relative_to(tmp_path)): p.read_text() if p.is_file() else "/"
            for p in sorted(tmp_path.rglob("*"))}


def test_contents_are_crio_configs_with_this_nodes_paths() -> None:
    shipped_hook = json.loads((CRIO_CONFIG / "hooks.d" / "syscribe-hook.json").read_text())
    assert json.loads(ih.hooks_d("/usr/local/bin/syscribe-hook", "/etc/syscribe/hook.json")) == shipped_hook
    shipped_config = json.loads((CRIO_CONFIG / "syscribe" / "hook.json").read_text())
    assert json.loads(ih.hook_config(ih.OUTPUT_ROOT, ih.CONFIG_DIR)) == shipped_config
    shipped_crio = tomllib.loads((CRIO_CONFIG / "crio.conf.d" / "10-syscribe.conf").read_text())
    assert tomllib.loads(ih.crio_drop_in(ih.HOOKS_DIR)) == shipped_crio
    other = tomllib.loads(ih.crio_drop_in("/srv/hooks.d"))
    assert other["crio"]["runtime"]["hooks_dir"][-1] == "/srv/hooks.d"


def test_install_is_idempotent_and_uninstall_removes_what_it_wrote(tmp_path: Path) -> None:
    first = install(tmp_path)
    assert first.returncode == 0, first.stderr
    hook = json.loads((tmp_path / "hooks.d" / "syscribe-hook.json").read_text())["hook"]
    # The default launcher: this Python, isolated and without site, running the package's isolated.py.
    assert hook["path"] == os.path.abspath(sys.executable)
    assert hook["args"][:3] == ["python3", "-I", "-S"]
    assert hook["args"][3].endswith("/syscribe/hooks/isolated.py")
    assert hook["args"][-2:] == ["--config", str(tmp_path / "etc" / "hook.json")]
    config = parse_config((tmp_path / "etc" / "hook.json").read_bytes())
    assert config.output_roots == (str(tmp_path / "profiles"),)
    assert (tmp_path / "profiles").is_dir()
    crio = tomllib.loads((tmp_path / "crio.conf.d" / "10-syscribe.conf").read_text())
    assert str(tmp_path / "hooks.d") in crio["crio"]["runtime"]["hooks_dir"]
    written = tree(tmp_path)

    again = install(tmp_path)
    assert again.returncode == 0 and "wrote" not in again.stdout and tree(tmp_path) == written

    gone = install(tmp_path, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert tree(tmp_path) == {}
    assert install(tmp_path, "--uninstall").returncode == 0  # nothing left: still fine


def test_the_script_launcher_names_the_console_script(tmp_path: Path) -> None:
    done = install(tmp_path, "--launcher", "script")
    assert done.returncode == 0, done.stderr
    hook = json.loads((tmp_path / "hooks.d" / "syscribe-hook.json").read_text())["hook"]
    assert hook["path"] == str(Path(sys.executable).parent / "syscribe-hook")
    assert hook["args"] == ["syscribe-hook", "--config", str(tmp_path / "etc" / "hook.json")]


def test_a_file_it_did_not_write_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "hooks.d").mkdir()
    theirs = tmp_path / "hooks.d" / "syscribe-hook.json"
    theirs.write_text('{"mine": true}')
    refused = install(tmp_path)
    assert refused.returncode == 1
    assert "was not written by install-hook" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert theirs.read_text() == '{"mine": true}'
    # What it did write before it stopped is in the manifest, and goes away with --uninstall.
    assert install(tmp_path, "--uninstall").returncode == 0
    assert tree(tmp_path) == {"hooks.d": "/", "hooks.d/syscribe-hook.json": '{"mine": true}'}


def test_an_existing_config_is_kept_and_a_changed_file_is_not_removed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "hook.json"
    config.write_text('{"onFailure": "fail"}')
    done = install(tmp_path)
    assert done.returncode == 0 and "kept" in done.stdout
    assert config.read_text() == '{"onFailure": "fail"}'
    hooks_file = tmp_path / "hooks.d" / "syscribe-hook.json"
    hooks_file.write_text(hooks_file.read_text().replace("30", "31"))  # an admin's edit
    refused = install(tmp_path)
    assert refused.returncode == 1 and "was changed since install-hook wrote it" in refused.stderr
    gone = install(tmp_path, "--uninstall")
    assert gone.returncode == 0 and "kept" in gone.stdout
    assert config.exists() and hooks_file.exists()
    assert not (tmp_path / "crio.conf.d" / "10-syscribe.conf").exists()


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_no_symlink_or_directory_is_written_through(tmp_path: Path, kind: str) -> None:
    (tmp_path / "hooks.d").mkdir()
    target = tmp_path / "hooks.d" / "syscribe-hook.json"
    if kind == "symlink":
        target.symlink_to(tmp_path / "elsewhere")
    else:
        target.mkdir()
    refused = install(tmp_path)
    assert refused.returncode == 1 and "is not a regular file" in refused.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("manifest", ["garbage", '{"files": []}', "[]", "x" * (2 << 20)])
def test_a_broken_manifest_is_one_clear_line(tmp_path: Path, manifest: str) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / ih.MANIFEST).write_text(manifest)
    for args in ((), ("--uninstall",)):
        refused = install(tmp_path, *args)
        assert refused.returncode == 1 and "manifest" in refused.stderr, refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and "Traceback" not in refused.stderr


def test_podman_records_through_the_installed_hooks_d_file(tmp_path: Path, busybox_rootfs: Path) -> None:
    require("root", "ebpf", "podman", "busybox")
    assert install(tmp_path).returncode == 0
    # Keep the test's traces in its own directory: its own log, and the tracer in the test's cgroup.
    config = tmp_path / "etc" / "hook.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "logFile": str(tmp_path / "hook.log"),
                                  "tracerCgroup": None}))
    out = tmp_path / "profiles" / "ls.json"
    name = f"syscribe-install-{uuid.uuid4().hex[:12]}"
    try:
        ran = subprocess.run(
            ["podman", "--cgroup-manager=cgroupfs", "--hooks-dir", str(tmp_path / "hooks.d"), "run", "--rm",
             "--name", name, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit",
             "nproc=1024:1024", "--annotation", f"{KEY}=of:{out}", "--rootfs", str(busybox_rootfs),
             "/bin/ls", "/"],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
    assert ran.returncode == 0, ran.stderr
    meta = tmp_path / "profiles" / "ls.meta.json"
    for _ in range(12000):  # the tracer writes when the container has exited; a hang guard only
        if meta.exists():
            break
        subprocess.run(["sleep", "0.01"], check=False)
    assert json.loads(meta.read_text())["profileSHA256"]
