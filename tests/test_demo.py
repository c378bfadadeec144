"""`syscribe demo`, the main job `make run` shows, end to end on the real machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.prereq import require


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_demo_records_enforces_and_denies(tmp_path: Path, runtime: str) -> None:
    require("root", "ebpf", runtime, "busybox")
    result = subprocess.run(
        [sys.executable, "-m", "syscribe", "demo", "--workdir", str(tmp_path), "--runtime", runtime],
        capture_output=True, text=True, check=False, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All as expected." in result.stdout
    assert result.stdout.count("[ok]") == 7
    assert "FAILED" not in result.stdout
    # The bundles are cleaned up; the profiles stay for the user to read.
    assert not list(tmp_path.glob("bundle-*"))
    assert (tmp_path / "workload.json").exists()
    assert (tmp_path / f"workload-{runtime}.json").exists()


def test_demo_refuses_an_unknown_runtime() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syscribe", "demo", "--runtime", "docker"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "'docker' is not one of" in result.stderr
