"""Shared fixtures. Tests that need the real system call `tests.support.prereq.require(...)`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.prereq import require


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs holding busybox-static and a link per applet (built once per session)."""
    require("root", "busybox")
    from syscribe.bundle import make_busybox_rootfs

    return make_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")
