"""The committed CO-RE object is exactly what its source builds to with the pinned clang-14."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.prereq import require

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bpf" / "recorder.bpf.c"
OBJECT = ROOT / "bpf" / "recorder.bpf.o"
# The resident recorder's object (one program for every recording on the node).
RESIDENT_SOURCE = ROOT / "bpf" / "resident.bpf.c"
RESIDENT_OBJECT = ROOT / "bpf" / "resident.bpf.o"
BUILD = ROOT / "scripts" / "build-bpf.sh"


def sections(obj: Path) -> list[str]:
    out = subprocess.run(["llvm-objdump-14", "-h", str(obj)], check=True, capture_output=True, text=True)
    return [line.split()[1] for line in out.stdout.splitlines() if line.strip()[:1].isdigit() and
            len(line.split()) > 1]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("clang")
    if shutil.which("llvm-strip-14") is None:
        pytest.fail("llvm-strip-14 not on PATH: apt-get install llvm-14 (make setup installs llvm)")
    # Build from a copy in another directory: the object must not depend on where the tree is.
    work = tmp_path_factory.mktemp("bpfsrc")
    src = work / "src" / SOURCE.name
    src.parent.mkdir()
    shutil.copy(SOURCE, src)
    out = work / "out" / OBJECT.name
    subprocess.run(["bash", str(BUILD), str(src), str(out)], check=True, cwd="/")
    return out


def test_committed_object_matches_its_source(rebuilt: Path) -> None:
    committed, fresh = OBJECT.read_bytes(), rebuilt.read_bytes()
    assert committed == fresh, (
        f"bpf/recorder.bpf.o ({len(committed)} bytes) is not what bpf/recorder.bpf.c builds to "
        f"({len(fresh)} bytes): run `make bpf` and commit the object"
    )


@pytest.fixture(scope="module")
def rebuilt_resident(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("clang")
    work = tmp_path_factory.mktemp("bpfres")
    src = work / "src" / RESIDENT_SOURCE.name
    src.parent.mkdir()
    shutil.copy(RESIDENT_SOURCE, src)
    out = work / "out" / RESIDENT_OBJECT.name
    subprocess.run(["bash", str(BUILD), str(src), str(out)], check=True, cwd="/")
    return out


def test_committed_resident_object_matches_its_source(rebuilt_resident: Path) -> None:
    committed, fresh = RESIDENT_OBJECT.read_bytes(), rebuilt_resident.read_bytes()
    assert committed == fresh, (
        f"bpf/resident.bpf.o ({len(committed)} bytes) is not what bpf/resident.bpf.c builds to "
        f"({len(fresh)} bytes): run `make bpf` and commit the object"
    )
    names = sections(RESIDENT_OBJECT)
    assert ".BTF" in names and "raw_tracepoint/sys_enter" in names
    assert not [n for n in names if n.startswith(".debug")]
    data = RESIDENT_OBJECT.read_bytes()
    for leak in (str(ROOT).encode(), b"/tmp/", b"/home/", b"/root/"):
        assert leak not in data


def test_object_keeps_btf_and_drops_dwarf(rebuilt: Path) -> None:
    names = sections(OBJECT)
    assert ".BTF" in names and ".BTF.ext" in names
    assert not [n for n in names if n.startswith(".debug")]
    assert "raw_tracepoint/sys_enter" in names


def test_object_holds_no_build_paths() -> None:
    data = OBJECT.read_bytes()
    for leak in (str(ROOT).encode(), b"/tmp/", b"/home/", b"/root/"):
        assert leak not in data


def test_build_script_rejects_bad_usage(tmp_path: Path) -> None:
    require("clang")
    bad = subprocess.run(["bash", str(BUILD)], check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    argv = ["bash", str(BUILD), str(tmp_path / "none.bpf.c"), str(tmp_path / "x.o")]
    missing = subprocess.run(argv, check=False, capture_output=True, text=True)
    assert missing.returncode != 0
    assert not (tmp_path / "x.o").exists()
