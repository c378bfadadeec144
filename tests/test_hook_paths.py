"""Output confinement by path, and the writer that follows no symlink (on a real filesystem)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syscribe.hooks.annotation import AnnotationError, parse
from syscribe.hooks.output import OutputError, check_target, open_dir, read_input, write_outputs
from syscribe.hooks.paths import PathError, Placement, meta_name_for, place, under


class TestPlace:
    def test_under_a_root(self) -> None:
        p = place("/var/lib/syscribe/profiles/ns/pod/web.json", ["/var/lib/syscribe/profiles"])
        assert p == Placement("/var/lib/syscribe/profiles", ("ns", "pod"), "web.json")
        assert p.path == "/var/lib/syscribe/profiles/ns/pod/web.json"
        assert p.meta_name == "web.meta.json"

    def test_most_specific_root_wins(self) -> None:
        p = place("/a/b/c/x.json", ["/a", "/a/b"])
        assert (p.root, p.parts) == ("/a/b", ("c",))

    @pytest.mark.parametrize(
        "path",
        [
            "/etc/passwd",
            "/var/lib/syscribe/profilesX/a.json",  # a sibling sharing a prefix is not below
            "/var/lib/syscribe/profiles",  # the root itself is a directory
            "/var/lib/syscribe",
            "/",
        ],
    )
    def test_outside_every_root(self, path: str) -> None:
        with pytest.raises(PathError, match="not under an allowed directory"):
            place(path, ["/var/lib/syscribe/profiles"])

    def test_input_roots_are_named_in_the_error(self) -> None:
        with pytest.raises(PathError, match="inputRoots"):
            place("/etc/shadow", ["/usr/share/containers"], "if:")

    def test_unnormalised_paths_are_refused(self) -> None:
        with pytest.raises(PathError, match="not normalised"):
            place("/r/../etc/x", ["/r"])

    def test_meta_names(self) -> None:
        assert meta_name_for("web.json") == "web.meta.json"
        assert meta_name_for("web") == "web.meta.json"
        assert meta_name_for("a.json.json") == "a.json.meta.json"

    @given(st.lists(st.sampled_from(["r", "s", "..", ".", "", "x", "etc"]), min_size=1, max_size=8))
    def test_an_annotation_path_that_places_stays_under_its_root(self, parts: list[str]) -> None:
        try:
            output, _ = parse("of:/" + "/".join(parts))
            p = place(output, ["/r/s", "/x"])
        except (AnnotationError, PathError) as exc:
            # refused, saying why in one line
            assert str(exc) and "\n" not in str(exc), exc
            return
        assert under(p.path, p.root) and p.path != p.root
        assert ".." not in p.parts


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "profiles"
    r.mkdir()
    return r


def placement(root: Path, rel: str) -> Placement:
    return place(str(root / rel), [str(root)])


class TestWriter:
    def test_creates_missing_directories_and_writes_profile_and_metadata(self, root: Path) -> None:
        p = placement(root, "ns/pod/web.json")
        fd = open_dir(p, create=True)
        try:
            digest = write_outputs(fd, p, "{}\n", '{"m": 1}\n')
        finally:
            os.close(fd)
        assert (root / "ns/pod/web.json").read_text() == "{}\n"
        meta = json.loads((root / "ns/pod/web.meta.json").read_text())
        assert meta == {"m": 1, "profileSHA256": hashlib.sha256(b"{}\n").hexdigest()} and digest == meta[
            "profileSHA256"]
        assert oct((root / "ns").stat().st_mode & 0o777) == "0o755"
        assert not [f for f in os.listdir(root / "ns/pod") if f.endswith(".tmp")]

    def test_missing_directories_without_create(self, root: Path) -> None:
        with pytest.raises(OutputError, match="does not exist; create it first"):
            open_dir(placement(root, "ns/web.json"), create=False)

    def test_missing_root(self, tmp_path: Path) -> None:
        p = place(str(tmp_path / "nope" / "x.json"), [str(tmp_path / "nope")])
        with pytest.raises(OutputError, match=r"does not exist; create it \(mkdir -p"):
            open_dir(p, create=True)
        assert not (tmp_path / "nope").exists()  # the root itself is never created

    def test_symlink_at_the_root(self, tmp_path: Path) -> None:
        (tmp_path / "real").mkdir()
        (tmp_path / "linked").symlink_to(tmp_path / "real")
        p = place(str(tmp_path / "linked" / "x.json"), [str(tmp_path / "linked")])
        with pytest.raises(OutputError, match="is a symlink; syscribe does not follow symlinks"):
            open_dir(p, create=True)

    @pytest.mark.parametrize("where", ["first", "middle"])
    def test_symlink_below_the_root(self, root: Path, tmp_path: Path, where: str) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        if where == "first":
            (root / "ns").symlink_to(elsewhere)
        else:
            (root / "ns").mkdir()
            (root / "ns" / "pod").symlink_to(elsewhere)
        with pytest.raises(OutputError, match="is a symlink or not a directory"):
            open_dir(placement(root, "ns/pod/web.json"), create=True)
        assert list(elsewhere.iterdir()) == []

    def test_dangling_symlink_is_not_created_through(self, root: Path, tmp_path: Path) -> None:
        (root / "ns").symlink_to(tmp_path / "would-be-created")
        with pytest.raises(OutputError, match="symlink"):
            open_dir(placement(root, "ns/web.json"), create=True)
        assert not (tmp_path / "would-be-created").exists()

    def test_a_file_in_the_middle(self, root: Path) -> None:
        (root / "ns").write_text("")
        with pytest.raises(OutputError, match="not a directory"):
            open_dir(placement(root, "ns/web.json"), create=True)

    def test_symlink_at_the_file_to_etc_passwd_is_never_touched(self, root: Path) -> None:
        before = Path("/etc/passwd").read_bytes()
        (root / "web.json").symlink_to("/etc/passwd")
        p = placement(root, "web.json")
        fd = open_dir(p, create=True)
        try:
            with pytest.raises(OutputError, match="is a symlink"):
                check_target(fd, p.name, p.path)
            with pytest.raises(OSError, match="symlink"):
                write_outputs(fd, p, "{}", "{}")
        finally:
            os.close(fd)
        assert Path("/etc/passwd").read_bytes() == before
        assert (root / "web.json").is_symlink()

    def test_other_things_at_the_file(self, root: Path) -> None:
        (root / "d.json").mkdir()
        os.mkfifo(root / "f.json")
        fd = open_dir(placement(root, "x.json"), create=True)
        try:
            with pytest.raises(OutputError, match="is a directory"):
                check_target(fd, "d.json", "d.json")
            with pytest.raises(OutputError, match="not a regular file"):
                check_target(fd, "f.json", "f.json")
            check_target(fd, "absent.json", "absent.json")
        finally:
            os.close(fd)

    def test_a_swap_after_the_walk_does_not_redirect_the_write(self, root: Path, tmp_path: Path) -> None:
        # The tracer writes through the directory fd the hook opened: replacing the directory by a
        # symlink while the container runs changes nothing about where the profile goes.
        (root / "ns").mkdir()
        p = placement(root, "ns/web.json")
        fd = open_dir(p, create=True)
        try:
            (root / "ns").rename(root / "moved")
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
            (root / "ns").symlink_to(elsewhere)
            write_outputs(fd, p, "{}\n", "{}\n")
        finally:
            os.close(fd)
        assert (root / "moved" / "web.json").exists()
        assert list(elsewhere.iterdir()) == []

    def test_existing_hardlink_is_replaced_not_written_through(self, root: Path, tmp_path: Path) -> None:
        victim = tmp_path / "victim"
        victim.write_text("precious")
        os.link(victim, root / "web.json")
        p = placement(root, "web.json")
        fd = open_dir(p, create=True)
        try:
            write_outputs(fd, p, "{}\n", "{}\n")
        finally:
            os.close(fd)
        assert victim.read_text() == "precious"
        assert (root / "web.json").read_text() == "{}\n"


class TestReadInput:
    def test_reads_a_regular_file(self, root: Path) -> None:
        (root / "base.json").write_text("{}")
        assert read_input(place(str(root / "base.json"), [str(root)], "if:")) == b"{}"

    def test_refuses_symlinks_and_non_files(self, root: Path) -> None:
        (root / "link.json").symlink_to("/etc/passwd")
        with pytest.raises(OutputError, match="is a symlink"):
            read_input(place(str(root / "link.json"), [str(root)], "if:"))
        os.mkfifo(root / "fifo.json")
        with pytest.raises(OutputError, match="not a regular file"):
            read_input(place(str(root / "fifo.json"), [str(root)], "if:"))
        with pytest.raises(OutputError, match="No such file"):
            read_input(place(str(root / "absent.json"), [str(root)], "if:"))

    def test_refuses_huge_files(self, root: Path) -> None:
        big = root / "big.json"
        with big.open("wb") as f:
            f.truncate((1 << 20) + 1)  # sparse: no disk used
        with pytest.raises(OutputError, match="is 1048577 bytes; at most 1048576"):
            read_input(place(str(big), [str(root)], "if:"))

    def test_input_root_slash(self) -> None:
        p = place("/etc/hostname", ["/"], "if:")
        assert (p.root, p.parts, p.name) == ("/", ("etc",), "hostname")
