"""The trace-syscall annotation: which key applies, and the value grammar with every way to break it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syscribe.hooks.annotation import (
    CONTAINER_NAME_KEY,
    CONTAINER_TYPE_KEY,
    KEY,
    MAX_VALUE,
    SANDBOX_ID_KEY,
    AnnotationError,
    Request,
    normalise,
    parse,
    request_for,
    select,
)


class TestGrammar:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("of:/out/p.json", ("/out/p.json", None)),
            ("if:/in/base.json;of:/out/p.json", ("/out/p.json", "/in/base.json")),
            ("of:/out/p.json;if:/in/base.json", ("/out/p.json", "/in/base.json")),  # either order
            (" of:/out/p.json ", ("/out/p.json", None)),  # spaces around parts, as the Go hook trims
            ("if: /in/b.json ; of: /out/p.json", ("/out/p.json", "/in/b.json")),
            ("of:/out//sub/./p.json", ("/out/sub/p.json", None)),  # normalised
            ("of:/out/dir with space/p.json", ("/out/dir with space/p.json", None)),
            ("of:/out/prófil.json", ("/out/prófil.json", None)),
        ],
    )
    def test_valid(self, value: str, expected: tuple[str, str | None]) -> None:
        assert parse(value) == expected

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("", "empty"),
            ("   ", "empty"),
            ("if:/in/b.json", "missing of:"),
            ("/out/p.json", "unknown prefix"),
            ("out:/x.json", "unknown prefix"),
            ("OF:/x.json", "unknown prefix"),
            ("xf:/a;of:/b", "unknown prefix"),
            ("of:/a;;if:/b", "2 semicolons"),
            ("if:/a;of:/b;", "2 semicolons"),
            ("of:/a;", "part 2 of 2 is empty"),
            (";of:/a", "part 1 of 2 is empty"),
            ("of:/a;of:/b", "of: is given twice"),
            ("if:/a;if:/b", "if: is given twice"),
            ("of:", "empty path"),
            ("of: ", "empty path"),
            ("if:;of:/a", "if: has an empty path"),
            ("of:out/p.json", "relative"),
            ("of:./p.json", "relative"),
            ("of:~/p.json", "relative"),
            ("if:base.json;of:/out/p.json", "if: path 'base.json' is relative"),
            ("of:/out/../etc/passwd", "'..' component"),
            ("of:/out/..", "'..' component"),
            ("if:/in/../../etc/shadow;of:/out/p.json", "'..' component"),
            ("of:/out/", "names a directory"),
            ("of:/", "names a directory"),
            ("of://", "names a directory"),
            ("of:/out/p.meta.json", "metadata"),
            ("of:/out/.syscribe-0123456789ab.tmp", "temporary files"),
            ("of:/out/.web.json.0123456789ab.tmp", "temporary files"),
            ("of:/out/p\x00.json", "control character"),
            ("of:/out/p.json\n", "control character"),
            ("of:/out/\np.json", "control character"),
            ("of:/out/p\t.json", "control character"),
            ("of:/out/p\x7f.json", "control character"),
            ("of:/out/p\x1b[31m.json", "control character"),
            # C1 controls (U+0080..U+009F): U+009B is a terminal's one-character CSI.
            ("of:/out/p\x9b31m.json", "control character"),
            ("of:/out/p\x80.json", "control character"),
            ("of:/out/p\x85.json", "control character"),  # NEL, a line break to some readers
            ("if:/in/\x9f.json;of:/out/p.json", "control character"),
            ("of:/out/\ud800.json", "lone surrogate"),
        ],
    )
    def test_errors_name_the_problem(self, value: str, message: str) -> None:
        with pytest.raises(AnnotationError, match=message.replace("(", r"\(").replace("?", r"\?")):
            parse(value)

    def test_error_messages_are_one_line_and_show_the_grammar(self) -> None:
        for value in ("x", "of:rel", "of:/a;;", "of:/a\nb"):
            with pytest.raises(AnnotationError) as info:
                parse(value)
            assert "\n" not in str(info.value)

    @pytest.mark.parametrize("value", [None, 1, b"of:/a", ["of:/a"]])
    def test_not_a_string(self, value: object) -> None:
        with pytest.raises(AnnotationError, match="not a string"):
            parse(value)

    def test_path_max(self) -> None:
        deep = "/out/" + "/".join(["d" * 200] * 25) + "/p.json"  # > 4096 bytes
        with pytest.raises(AnnotationError, match="PATH_MAX"):
            parse("of:" + deep)
        with pytest.raises(AnnotationError, match="NAME_MAX"):
            parse("of:/out/" + "n" * 256 + ".json")
        # Multi-byte characters count in bytes.
        with pytest.raises(AnnotationError, match="NAME_MAX"):
            parse("of:/out/" + "é" * 128)

    def test_the_metadata_name_must_fit_too(self) -> None:
        """`<stem>.meta.json` sits beside the profile: a name the grammar accepts is one the hook can
        write, and the error names the metadata file."""
        assert parse("of:/out/" + "x" * 245 + ".json")[0].endswith("x.json")  # meta: 255 bytes
        assert parse("of:/out/" + "x" * 245)[0].endswith("/" + "x" * 245)
        for name in ("x" * 246 + ".json", "x" * 250 + ".json", "x" * 255, "€" * 82 + ".json"):
            over = r"\.meta\.json', would be 2\d\d bytes, over NAME_MAX"
            with pytest.raises(AnnotationError, match=over) as info:
                parse("of:/out/" + name)
            assert "at most 2" in str(info.value) and len(str(info.value)) < 300
        deep = "/out/" + "/".join(["d" * 200] * 20)
        path = deep + "/" + "p" * (4094 - len(deep) - 1)  # 4094 bytes: fits; its metadata does not
        assert len(path) < 4096
        with pytest.raises(AnnotationError, match=r"metadata .* PATH_MAX"):
            parse("of:" + path)

    def test_huge_values_fail_fast_without_scanning(self) -> None:
        with pytest.raises(AnnotationError, match="characters, longer than any valid"):
            parse("of:/" + "a" * (10 * 1024 * 1024))
        assert MAX_VALUE < 10_000

    def test_hostile_text_is_cut_in_messages(self) -> None:
        with pytest.raises(AnnotationError) as info:
            parse("zz:" + "x" * 5000)
        assert len(str(info.value)) < 300

    @given(st.text(max_size=200))
    def test_never_crashes(self, value: str) -> None:
        try:
            output, input_ = parse(value)
        except AnnotationError as exc:
            # refused: with one line that says why, never a crash
            assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 300, exc
            return
        for path in (output, input_):
            if path is not None:
                assert path.startswith("/") and "/../" not in path + "/" and "//" not in path
                assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in path)

    @given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "c d"]), max_size=8))
    def test_normalise_never_leaves_dots(self, parts: list[str]) -> None:
        path = "/" + "/".join(parts)
        try:
            out = normalise(path, "if:")
        except AnnotationError as exc:
            assert ".." in parts, exc
            return
        assert ".." not in out.split("/") and "." not in out.split("/")


class TestKeys:
    def test_pod_wide_key(self) -> None:
        assert select({KEY: "of:/p.json"}) == (KEY, "of:/p.json")
        assert select({"other": "x"}) is None
        assert select({}) is None

    def test_per_container_key_wins(self) -> None:
        annotations = {
            KEY: "of:/pod.json",
            f"{KEY}/web": "of:/web.json",
            f"{KEY}/sidecar": "of:/sidecar.json",
            CONTAINER_NAME_KEY: "web",
        }
        assert select(annotations) == (f"{KEY}/web", "of:/web.json")
        sidecar = select({**annotations, CONTAINER_NAME_KEY: "sidecar"})
        assert sidecar == (f"{KEY}/sidecar", "of:/sidecar.json")
        # A container without its own key falls back to the pod-wide one.
        assert select({**annotations, CONTAINER_NAME_KEY: "db"}) == (KEY, "of:/pod.json")

    def test_per_container_key_of_another_container_does_not_apply(self) -> None:
        assert select({f"{KEY}/web": "of:/web.json", CONTAINER_NAME_KEY: "db"}) is None
        assert select({f"{KEY}/web": "of:/web.json"}) is None  # no name known (plain runc, podman)

    def test_sandbox_never_recorded_by_the_pod_wide_key(self) -> None:
        crio_sandbox = {KEY: "of:/p.json", CONTAINER_TYPE_KEY: "sandbox", CONTAINER_NAME_KEY: "POD"}
        assert select(crio_sandbox) is None
        assert select({KEY: "of:/p.json", CONTAINER_TYPE_KEY: "container"}) == (KEY, "of:/p.json")
        # CRI-O's sandbox is also its own SandboxID.
        assert select({KEY: "of:/p.json", SANDBOX_ID_KEY: "abc"}, "abc") is None
        assert select({KEY: "of:/p.json", SANDBOX_ID_KEY: "abc"}, "def") == (KEY, "of:/p.json")
        # ...unless someone names it explicitly.
        assert select({**crio_sandbox, f"{KEY}/POD": "of:/pause.json"}) == (f"{KEY}/POD", "of:/pause.json")

    def test_bad_value_of_an_unused_key_is_ignored(self) -> None:
        annotations = {KEY: "garbage", f"{KEY}/web": "of:/web.json", CONTAINER_NAME_KEY: "web"}
        assert request_for(annotations) == Request(f"{KEY}/web", "/web.json", None)

    def test_errors_name_the_key(self) -> None:
        with pytest.raises(AnnotationError, match=rf"annotation '{KEY}/web': .*relative"):
            request_for({f"{KEY}/web": "of:web.json", CONTAINER_NAME_KEY: "web"})

    def test_hostile_container_names_are_plain_lookups(self) -> None:
        name = "x" * 10_000 + "\n"
        chosen = select({f"{KEY}/{name}": "of:/a.json", CONTAINER_NAME_KEY: name})
        assert chosen == (f"{KEY}/{name}", "of:/a.json")
        with pytest.raises(AnnotationError) as info:
            request_for({f"{KEY}/{name}": "bad", CONTAINER_NAME_KEY: name})
        assert "\n" not in str(info.value) and len(str(info.value)) < 400
