"""SeccompProfile resources (Security Profiles Operator, v1): conversion both ways, reading either
format, and broken, hostile and huge YAML."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from syscribe import arch
from syscribe import ociprofile as prof
from syscribe import seccompprofile as spo
from syscribe.ociprofile import ProfileError

RECORDED = prof.from_names(["read", "write", "mkdir"], arch.X86_64)


def resource(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO"}
    body.update(spec)
    return {"apiVersion": spo.API_VERSION, "kind": "SeccompProfile", "metadata": {"name": "p"}, "spec": body}


def test_a_recorded_profile_becomes_a_cluster_scoped_v1_resource() -> None:
    data = yaml.safe_load(spo.dumps(RECORDED, "busybox"))
    assert data == {
        "apiVersion": "security-profiles-operator.x-k8s.io/v1",
        "kind": "SeccompProfile",
        "metadata": {"name": "busybox"},  # cluster-scoped since SPO 0.9: no namespace
        "spec": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "read", "write"], "action": "SCMP_ACT_ALLOW"}],
        },
    }
    assert "defaultErrnoRet" not in spo.dumps(RECORDED, "busybox")


def test_namespace_only_when_asked() -> None:
    data = spo.to_resource(RECORDED, "p", namespace="team-a")
    assert data["metadata"] == {"name": "p", "namespace": "team-a"}
    with pytest.raises(ProfileError, match="not valid"):
        spo.to_resource(RECORDED, "p", namespace="Team_A")


def test_round_trip_both_ways() -> None:
    full = prof.parse(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_AARCH64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
                },
            ],
        }
    )
    loaded = spo.loads(spo.dumps(full, "x"))
    assert loaded.format == "seccompprofile" and loaded.name == "x"
    assert loaded.profile == full
    back = spo.loads(prof.dumps(loaded.profile))
    assert back.format == "oci" and back.profile == full


def test_a_resource_in_json_is_read_too() -> None:
    loaded = spo.loads(json.dumps(spo.to_resource(RECORDED, "j")))
    assert loaded.format == "seccompprofile" and loaded.profile == RECORDED


def test_oci_profile_written_as_yaml_is_read() -> None:
    loaded = spo.loads(yaml.safe_dump(prof.to_dict(RECORDED)))
    assert loaded.format == "oci" and loaded.profile == RECORDED


def test_v1beta1_is_accepted_and_v1_written() -> None:
    data = resource(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW"}])
    data["apiVersion"] = "security-profiles-operator.x-k8s.io/v1beta1"
    p = spo.from_resource(data)
    assert spo.to_resource(p, "p")["apiVersion"] == "security-profiles-operator.x-k8s.io/v1"


def test_status_and_disabled_are_ignored() -> None:
    data = resource(disabled=False)
    data["status"] = {"status": "Installed", "localhostProfile": "operator/p.json"}
    assert spo.from_resource(data).default_action == "SCMP_ACT_ERRNO"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "an object with apiVersion"),
        ({"kind": "Pod", "apiVersion": spo.API_VERSION}, "kind: a string of 3 characters, not Seccomp"),
        ({**resource(), "apiVersion": "v1"}, "apiVersion: a string of 2 characters, not one of"),
        ({**resource(), "apiVersion": None}, "apiVersion: null, not one of"),
        ({**resource(), "extra": 1}, r"unknown field \(key 5\) in the resource"),
        ({**resource(), "metadata": "p"}, "metadata: expected an object"),
        ({k: v for k, v in resource().items() if k != "spec"}, "spec: missing"),
        ({**resource(), "spec": []}, "spec: missing or not an object"),
        (resource(defaultErrnoRet=1), r"spec: unknown field \(key \d of spec\)"),
        (resource(baseProfileName="runc-v1.0.0"), "cannot fetch base profiles"),
        (resource(disabled="no"), "spec.disabled"),
        (resource(defaultAction="SCMP_ACT_NOPE"), "spec.defaultAction: unknown action"),
        (resource(architectures=["SCMP_ARCH_NATIVE"]), r"spec.architectures\[0\]: unknown architecture"),
        (
            resource(syscalls=[{"names": [True], "action": "SCMP_ACT_ALLOW"}]),
            r"spec.syscalls\[0\].names\[0\]: a boolean",
        ),
        (
            resource(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]),
            "out of range",
        ),
    ],
)
def test_invalid_resources(data: object, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        spo.from_resource(data)


def test_what_a_seccompprofile_cannot_hold_is_refused() -> None:
    odd_errno = prof.parse({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38})
    with pytest.raises(ProfileError, match="defaultErrnoRet 38"):
        spo.to_resource(odd_errno, "p")
    huge_arg = prof.parse(
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 0xFFFFFFFF00000000, "op": "SCMP_CMP_MASKED_EQ"}],
                }
            ],
        }
    )
    with pytest.raises(ProfileError, match=r"syscalls\[0\].args\[0\].value: 0xffffffff00000000 does not fit"):
        spo.to_resource(huge_arg, "p")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("busybox", True),
        ("my-app.v2", True),
        ("a", True),
        ("a" * 253, True),
        ("a" * 254, False),
        ("", False),
        ("Busybox", False),
        ("-x", False),
        ("x-", False),
        ("x_y", False),
        ("x/y", False),
        ("x\ny", False),
        ("ü", False),
    ],
)
def test_resource_names(name: str, ok: bool) -> None:
    if ok:
        assert spo.check_name(name) == name
    else:
        with pytest.raises(ProfileError, match="not valid"):
            spo.check_name(name)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("/usr/bin/busybox", "busybox"),
        ("My_Tool", "my-tool"),
        ("./run.sh", "run.sh"),
        ("profile.json", "profile"),
        ("/tmp/out/p.yaml", "p"),
        ("___", "syscribe-profile"),
        ("", "syscribe-profile"),
        ("a..b--c", "a-b-c"),
        ("ü" * 10, "syscribe-profile"),
        ("x" * 1000, "x" * 253),
    ],
)
def test_names_made_from_commands(text: str, name: str) -> None:
    assert spo.name_for(text) == name
    spo.check_name(spo.name_for(text))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_valid_name(text: str) -> None:
    spo.check_name(spo.name_for(text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("kind: [", "not valid YAML"),
        ("a: b\n---\nc: d\n", "not valid YAML"),
        ("- 1\n- 2\n", "holds a list"),
        ("just text", "holds a string"),
        ("!!python/object/apply:os.system ['true']", "not valid YAML"),
        ("[" * 50_000, "nested too deeply|not valid YAML"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_broken_and_hostile_text(text: str | bytes, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        spo.loads(text)


def test_yaml_aliases_are_refused() -> None:
    # A billion-laughs style document: a few lines that expand to a huge name list.
    lines = ['a: &a ["read","read","read","read","read","read","read","read","read","read"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 10)}]")
    text = "\n".join(lines) + "\n"
    with pytest.raises(ProfileError, match="aliases"):
        spo.loads(text)


def test_an_ampersand_in_a_string_is_fine() -> None:
    data = resource(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW"}])
    data["metadata"]["annotations"] = {"note": "read & write"}
    loaded = spo.loads(yaml.safe_dump(data))
    assert loaded.profile.syscalls[0].names == ("read",)


def test_yaml_scalars_of_the_wrong_type() -> None:
    text = yaml.safe_dump(resource(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]))
    with pytest.raises(ProfileError, match="a boolean"):
        spo.loads(text.replace("- read", "- yes"))
    with pytest.raises(ProfileError, match=r"datetime|expected a string"):
        spo.loads(text.replace("- read", "- 2024-01-01"))


def test_a_100k_name_resource() -> None:
    names = [f"s{i}" for i in range(100_000)]
    p = prof.parse(
        {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}
    )
    text = spo.dumps(p, "big")
    loaded = spo.loads(text)
    # A resource has no defaultErrnoRet; read back, an ERRNO default gets EPERM (1) written out.
    assert loaded.profile.syscalls == p.syscalls
    assert loaded.profile.default_errno_ret == 1
