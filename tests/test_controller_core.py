"""The controller's pure core: ProfileRecording parsing and selection, dump paths, the webhook's
decision, dump trust checks and profile merging. Broken, hostile and huge input included."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syscribe import ociprofile as prof
from syscribe.arch import X86_64
from syscribe.controller import admission, dumppath, dumps, profiles
from syscribe.controller.recording import (
    LABEL_RECORDING,
    Recording,
    RecordingError,
    Selector,
    parse_recording,
    parse_selector,
    profile_name,
    selecting,
)

ROOT = "/var/lib/syscribe/profiles"


def recording_obj(name: str = "web", namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {"matchLabels": {"app": "web"}})
    return {
        "apiVersion": "syscribe.io/v1alpha1",
        "kind": "ProfileRecording",
        "metadata": {"name": name, "namespace": namespace, "uid": "u-1"},
        "spec": spec,
    }


def rec(name: str = "web", namespace: str = "team-a", **spec: Any) -> Recording:
    return parse_recording(recording_obj(name, namespace, **spec))


# --- ProfileRecording -----------------------------------------------------------------------------


def test_a_recording_with_defaults() -> None:
    r = rec()
    assert (r.namespace, r.name, r.containers, r.merge_strategy, r.disable_after) == (
        "team-a",
        "web",
        None,
        "None",
        False,
    )
    assert r.records("anything")


def test_selector_semantics_follow_kubernetes() -> None:
    s = parse_selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["z9"]},
                {"key": "example.com/owner", "operator": "Exists"},
            ],
        }
    )
    base = {"app": "web", "tier": "front", "example.com/owner": "x"}
    assert s.matches(base)
    assert not s.matches({**base, "app": "db"})
    assert not s.matches({**base, "tier": "back"})
    assert not s.matches({**base, "canary": "1"})
    assert not s.matches({**base, "zone": "z9"})
    assert s.matches({**base, "zone": "z1"})
    assert not s.matches({k: v for k, v in base.items() if k != "example.com/owner"})
    assert Selector().matches({}) and Selector().matches({"any": "thing"})


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"podSelector": None}, "spec.podSelector"),
        ({"podSelector": {"matchLabels": {"bad key!": "x"}}}, "not a label key"),
        ({"podSelector": {"matchLabels": {"app": "x" * 64}}}, "not a label value"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}, "operator"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "needs at least one value"),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
            "no values",
        ),
        ({"podSelector": {"matchExpressions": "a=b"}}, "matchExpressions"),
        ({"podSelector": {"nodeName": "x"}}, "unknown field"),
        ({"podSelector": {}, "containers": []}, "non-empty list"),
        ({"podSelector": {}, "containers": ["Web_1"]}, "not a container name"),
        ({"podSelector": {}, "mergeStrategy": "Pods"}, "mergeStrategy"),
        ({"podSelector": {}, "disableProfileAfterRecording": "yes"}, "true or false"),
        ({"podSelector": {"matchLabels": {f"k{i}": "v" for i in range(65)}}}, "more than 64"),
    ],
)
def test_broken_recordings_are_named(spec: dict[str, Any], words: str) -> None:
    obj = recording_obj()
    obj["spec"] = spec
    with pytest.raises(RecordingError, match=words):
        parse_recording(obj)


@pytest.mark.parametrize(
    "obj", [None, [], "x", {"metadata": {}}, {"metadata": {"name": "a", "namespace": "n"}}]
)
def test_objects_that_are_not_recordings(obj: object) -> None:
    with pytest.raises(RecordingError):
        parse_recording(obj)


@given(
    st.recursive(
        st.none() | st.text(max_size=5) | st.integers(),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
    )
)
def test_any_json_is_a_recording_or_a_recording_error(spec: object) -> None:
    obj = recording_obj()
    obj["spec"] = {"podSelector": spec, "containers": spec}
    with contextlib.suppress(RecordingError):
        parse_recording(obj)


def test_selecting_is_by_namespace_and_in_name_order() -> None:
    rs = [rec("zeta"), rec("alpha"), rec("other", namespace="team-b")]
    assert [r.name for r in selecting(rs, "team-a", {"app": "web"})] == ["alpha", "zeta"]
    assert selecting(rs, "team-a", {"app": "db"}) == []


def test_profile_names_fit_kubernetes() -> None:
    assert profile_name("web", "nginx", None) == "web-nginx"
    assert profile_name("web", "nginx", "x7k2p") == "web-nginx-x7k2p"
    long = profile_name("r" * 63, "c" * 63, "p" * 200)
    assert len(long) == 253 and long != profile_name("r" * 63, "c" * 63, "p" * 199)


# --- dump paths -----------------------------------------------------------------------------------


def test_dump_paths_round_trip() -> None:
    named = dumppath.for_pod("team-a", "web", "nginx", "web-0", None, "6f1c0b9e-8a7d-4c3b-9e2f-1a2b3c4d5e6f")
    generated = dumppath.for_pod(
        "team-a", "web", "nginx", None, "web-7d4b9-", "6f1c0b9e-8a7d-4c3b-9e2f-1a2b3c4d5e6f"
    )
    assert named.relative() == "team-a/web/nginx_web-0.json"
    assert generated.relative() == "team-a/web/nginx_web-7d4b9-_6f1c0b9e8a7d.json"
    for where in (named, generated):
        assert dumppath.parse(where.relative()) == (where, False)
        assert dumppath.parse(where.relative_meta()) == (where, True)
    assert generated.pod_matches("web-7d4b9-x7k2p") and not generated.pod_matches("web-7d4b9-")
    assert generated.pod_suffix("web-7d4b9-x7k2p") == "x7k2p"
    assert named.pod_matches("web-0") and not named.pod_matches("web-00")
    assert named.pod_suffix("web-0") == "web-0"


def test_every_name_made_from_a_dump_path_fits_name_max() -> None:
    where = dumppath.for_pod("n" * 63, "r" * 63, "c" * 63, None, "g" * 253, "f" * 32)
    name = where.relative_meta().rsplit("/", 1)[-1]
    assert len(f".{name}.{'0' * 12}.tmp") <= 255


@pytest.mark.parametrize(
    "relative",
    [
        "a/b.json",
        "a/b/c/d.json",
        "Team/web/c_p.json",
        "ns/web/c.json",
        "ns/web/c_p_q_r.json",
        "ns/web/C_p.json",
        "ns/web/c_p_zzzzzzzzzzzz.json",
        "ns/web/c_p.yaml",
        "ns/web/c_P.json",
        "ns/../c_p.json",
        "ns/web/c_" + "p" * 121 + ".json",
    ],
)
def test_paths_the_webhook_never_makes_are_refused(relative: str) -> None:
    with pytest.raises(dumppath.DumpPathError):
        dumppath.parse(relative)


# --- the webhook's decision -----------------------------------------------------------------------


def review(
    pod: dict[str, Any],
    *,
    namespace: str = "team-a",
    uid: str = "0e3f9a2c-1111-2222-3333-444455556666",
    operation: str = "CREATE",
    resource: str = "pods",
) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": resource},
                "namespace": namespace,
                "operation": operation,
                "object": pod,
            },
        }
    )


def pod(
    labels: dict[str, str] | None = None,
    containers: tuple[str, ...] = ("app",),
    *,
    name: str | None = None,
    generate_name: str | None = "web-",
    annotations: dict[str, str] | None = None,
    init: tuple[str, ...] = (),
) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels if labels is not None else {"app": "web"}}
    if name:
        meta["name"] = name
    if generate_name:
        meta["generateName"] = generate_name
    if annotations is not None:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox"} for c in containers]}
    if init:
        spec["initContainers"] = [{"name": c, "image": "busybox"} for c in init]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def patched(decision: admission.Decision) -> dict[str, Any]:
    body = orjson.loads(decision.response())
    assert body["response"]["allowed"] is True and body["response"]["uid"] == decision.uid
    if "patch" not in body["response"]:
        return {}
    ops = json.loads(base64.b64decode(body["response"]["patch"]))
    return {op["path"]: op["value"] for op in ops}


def test_selected_containers_get_the_annotation_and_the_pod_the_label() -> None:
    d = admission.decide(
        review(pod(containers=("app", "sidecar"), init=("setup",))), [rec(containers=["app", "setup"])], ROOT
    )
    p = patched(d)
    ann = p["/metadata/annotations"]
    assert ann == {
        "io.containers.trace-syscall/setup": f"of:{ROOT}/team-a/web/setup_web-_0e3f9a2c1111.json",
        "io.containers.trace-syscall/app": f"of:{ROOT}/team-a/web/app_web-_0e3f9a2c1111.json",
    }
    assert p["/metadata/labels"] == {"app": "web", LABEL_RECORDING: "web"}


def test_init_containers_are_recorded_when_no_list_is_given() -> None:
    ann = patched(admission.decide(review(pod(init=("setup",))), [rec()], ROOT))["/metadata/annotations"]
    assert set(ann) == {"io.containers.trace-syscall/setup", "io.containers.trace-syscall/app"}


def test_a_pod_cannot_choose_where_its_recording_lands() -> None:
    forged = {"io.containers.trace-syscall/app": "of:/etc/cron.d/x.json", "keep": "me"}
    ann = patched(admission.decide(review(pod(annotations=forged)), [rec()], ROOT))["/metadata/annotations"]
    assert ann["io.containers.trace-syscall/app"].startswith(f"of:{ROOT}/team-a/web/") and ann["keep"] == "me"


@pytest.mark.parametrize(
    "body",
    [
        review(pod(labels={"app": "db"})),  # nothing selects it
        review(pod(), namespace="team-b"),  # the recording is in another namespace
        review(pod(), operation="UPDATE"),
        review(pod(), resource="configmaps"),
    ],
)
def test_pods_nothing_selects_are_untouched(body: bytes) -> None:
    assert admission.decide(body, [rec()], ROOT).patch == []


def test_a_named_pod_gets_its_name_in_the_file() -> None:
    ann = patched(admission.decide(review(pod(name="db-0", generate_name=None)), [rec()], ROOT))[
        "/metadata/annotations"
    ]
    assert ann["io.containers.trace-syscall/app"] == f"of:{ROOT}/team-a/web/app_db-0.json"


def test_two_hundred_containers() -> None:
    names = tuple(f"c{i}" for i in range(200))
    ann = patched(admission.decide(review(pod(containers=names)), [rec()], ROOT))["/metadata/annotations"]
    assert len(ann) == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not an AdmissionReview"),
        (
            b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"x"}}',
            "v1beta1",
        ),
        (b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}', "no request"),
        (b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""}}', "no uid"),
        (b"[" * 100_000 + b"]" * 100_000, "not"),
    ],
)
def test_malformed_reviews_are_named(body: bytes, words: str) -> None:
    with pytest.raises(admission.ReviewError, match=words):
        admission.decide(body, [rec()], ROOT)


def test_a_pod_with_broken_parts_is_an_error_not_a_crash() -> None:
    broken = pod()
    broken["spec"]["containers"] = [{"image": "x"}]
    with pytest.raises(admission.ReviewError, match="without a name"):
        admission.decide(review(broken), [rec()], ROOT)
    broken = pod()
    broken["metadata"]["labels"] = {"app": 1}
    with pytest.raises(admission.ReviewError, match="labels"):
        admission.decide(review(broken), [rec()], ROOT)


# --- dumps ----------------------------------------------------------------------------------------

WHERE = dumppath.for_pod("team-a", "web", "app", None, "web-", "0e3f9a2c-1111-2222-3333-444455556666")
PROFILE = prof.dumps(prof.from_names(["read", "write", "exit_group"], X86_64)).encode()


def meta(**over: Any) -> bytes:
    doc: dict[str, Any] = {
        "namespace": "team-a",
        "pod": "web-x7k2p",
        "container": "app",
        "podUID": "p-1",
        "profileSHA256": hashlib.sha256(PROFILE).hexdigest(),
    }
    doc.update(over)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def test_a_dump_that_matches_its_path() -> None:
    dump = dumps.read(WHERE, PROFILE, meta())
    assert dump.pod == "web-x7k2p" and dump.profile.named() == {"read", "write", "exit_group"}


@pytest.mark.parametrize(
    ("meta_bytes", "words"),
    [
        (meta(namespace="team-b"), "namespace 'team-b'"),
        (meta(container="other"), "container"),
        (meta(pod="db-0"), "pod"),
        (meta(namespace=None), "not a pod's recording"),
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b" " * (dumps.MAX_META_BYTES + 1), "bytes"),
    ],
)
def test_dumps_the_node_does_not_vouch_for(meta_bytes: bytes, words: str) -> None:
    with pytest.raises(dumps.UntrustedError, match=words):
        dumps.read(WHERE, PROFILE, meta_bytes)


def test_a_profile_that_is_not_one() -> None:
    for body in (
        b"",
        b"{",
        b'{"defaultAction": "SCMP_ACT_ALLOW", "x": 1}',
        b"x" * (dumps.MAX_PROFILE_BYTES + 1),
    ):
        with pytest.raises(dumps.UntrustedError):
            dumps.read(WHERE, body, meta(profileSHA256=None))


def test_a_dump_being_written_is_waited_for() -> None:
    with pytest.raises(dumps.IncompleteError):
        dumps.read(WHERE, PROFILE, meta(profileSHA256="0" * 64))


# --- profiles -------------------------------------------------------------------------------------


def test_merging_is_a_union_and_idempotent() -> None:
    r = rec(mergeStrategy="Containers")
    first = profiles.new_resource("web-app", prof.from_names(["read", "write"], X86_64), r, "app")
    assert first["metadata"]["labels"]["syscribe.io/recording-namespace"] == "team-a"
    second = profiles.merge_into(first, prof.from_names(["read", "mkdir"], X86_64), r)
    assert second is not None
    assert prof.loads(orjson.dumps({**second["spec"], "defaultErrnoRet": 1})).named() == {
        "read",
        "write",
        "mkdir",
    }
    assert profiles.merge_into(second, prof.from_names(["mkdir"], X86_64), r) is None


def test_another_namespaces_profile_is_never_touched() -> None:
    mine = rec()
    theirs = profiles.new_resource(
        "web-app", prof.from_names(["read"], X86_64), rec(namespace="team-b"), "app"
    )
    with pytest.raises(profiles.ProfileCollisionError, match="team-b/web"):
        profiles.merge_into(theirs, prof.from_names(["read"], X86_64), mine)
    hand_made = {
        "apiVersion": "security-profiles-operator.x-k8s.io/v1",
        "kind": "SeccompProfile",
        "metadata": {"name": "web-app"},
        "spec": {"defaultAction": "SCMP_ACT_ALLOW"},
    }
    with pytest.raises(profiles.ProfileCollisionError, match="someone else"):
        profiles.merge_into(hand_made, prof.from_names(["read"], X86_64), mine)


def test_a_profile_edited_into_nonsense_is_an_error() -> None:
    r = rec()
    edited = profiles.new_resource("web-app", prof.from_names(["read"], X86_64), r, "app")
    edited["spec"]["syscalls"] = [{"names": [], "action": "SCMP_ACT_ALLOW"}]
    with pytest.raises(prof.ProfileError):
        profiles.merge_into(edited, prof.from_names(["write"], X86_64), r)


def test_disabled_after_recording() -> None:
    r = rec(disableProfileAfterRecording=True)
    made = profiles.new_resource("web-app", prof.from_names(["read"], X86_64), r, "app")
    assert made["spec"]["disabled"] is True and profiles.enabled_profile(made) is None
