"""Finding a container in the runtimes' state directories, asked directly (through the resolver, with
what the resolver makes of it, and hostile directories: test_enricher_containers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syscribe.enricher.runtimestate import CRIO_SANDBOX_ID, BundleFacts
from syscribe.enricher.statedirs import Found, StateDirs, pod_labels, read_bounded

CID = "5d8a4b9c1e0f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3"
SANDBOX = "134b58ab2e0cfd7432a9db818b1b4ec52fdc747333f0ba2c9342860dc2ea7c50"

# Each layout as the smallest set of files that makes it: (path below the state dir, content) pairs.
LAYOUTS: dict[str, list[tuple[str, object]]] = {
    "runc": [(f"{CID}/state.json", {"config": {"labels": ["a=b"]}})],
    "crun": [(f"{CID}/status", {"pid": 1, "bundle": "/b"}), (f"{CID}/config.json", {"annotations": {}})],
    "docker": [(f"{CID}/config.v2.json", {"Name": "/web", "Config": {}})],
    "containerd": [(f"k8s.io/{CID}/config.json", {"annotations": {}})],
    "cri-o": [(f"vfs-containers/{CID}/userdata/config.json", {"annotations": {}})],
}


def _lay_out(base: Path, files: list[tuple[str, object]]) -> None:
    for relative, doc in files:
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_is_told(tmp_path: Path, layout: str) -> None:
    _lay_out(tmp_path, LAYOUTS[layout])
    found = StateDirs([tmp_path / "missing", tmp_path]).find(CID)
    assert found is not None and found.layout == layout
    assert found.storage == ((tmp_path, "vfs") if layout == "cri-o" else None)
    assert StateDirs([tmp_path]).find(SANDBOX) is None


def test_containerds_moby_namespace_is_docker(tmp_path: Path) -> None:
    _lay_out(tmp_path, [(f"moby/{CID}/config.json", {"annotations": {}})])
    found = StateDirs([tmp_path]).find(CID)
    assert found is not None and found.layout == "docker"


def test_names_and_labels_kept_beside_the_bundle_need_containers_storage(tmp_path: Path) -> None:
    _lay_out(tmp_path, LAYOUTS["runc"])
    dirs = StateDirs([tmp_path])
    found = dirs.find(CID)
    assert found is not None and found.storage is None
    assert dirs.storage_name(found, CID) is None
    assert pod_labels(found, sandbox=True) == {}


@pytest.mark.parametrize("sandbox_id", [SANDBOX, "../outside", SANDBOX.upper(), SANDBOX + "0", ""])
def test_pod_labels_come_only_from_a_sandbox_named_by_a_valid_id(tmp_path: Path, sandbox_id: str) -> None:
    annotations = {"io.kubernetes.cri-o.Labels": json.dumps({"app": "web"})}
    for folder in (SANDBOX, "../outside", SANDBOX.upper(), SANDBOX + "0"):
        _lay_out(tmp_path, [(f"vfs-containers/{folder}/userdata/config.json", {"annotations": annotations})])
    found = Found(BundleFacts(annotations={CRIO_SANDBOX_ID: sandbox_id}), "cri-o", (tmp_path, "vfs"))
    assert pod_labels(found, sandbox=False) == ({"app": "web"} if sandbox_id == SANDBOX else {})


def test_read_bounded_is_none_where_fsutil_refuses(tmp_path: Path) -> None:
    # The refusals themselves are tested with fsutil (tests/test_profile_fsutil.py).
    assert read_bounded(tmp_path, [], 10) is None
    assert read_bounded(tmp_path / "missing", ["x"], 10) is None
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"ok")
    assert read_bounded(tmp_path, ["d", "f"], 10) == b"ok"
    (tmp_path / "dl").symlink_to(tmp_path / "d")
    assert read_bounded(tmp_path, ["dl", "f"], 10) is None
