"""What an operator installs (packaging/) agrees with the code: the arguments parse with the real
command, the DaemonSet mounts what the enricher reads, RBAC allows what it calls, and a real API server
accepts every object of the manifest."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from syscribe.enricher.cli import enrich
from syscribe.enricher.statedirs import DEFAULT_STATE_DIRS
from tests.support.kubeapi import KubeAPI

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "packaging" / "kubernetes" / "enricher.yaml"
UNIT = ROOT / "packaging" / "systemd" / "syscribe-enricher.service"
CONTAINERFILE = ROOT / "packaging" / "image" / "Containerfile"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def one(kind: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def parse_enrich(args: list[str]) -> dict[str, Any]:
    """The arguments as `syscribe enrich` parses them, strictly (unknown options and bad values fail)."""
    assert args[0] == "enrich"
    # Paths inside the pod; the test runs on the host, where /proc is the host's /proc.
    args = [a.replace("/host/proc", "/proc") for a in args[1:]]
    ctx = enrich.make_context("enrich", args)
    return dict(ctx.params)


def test_manifest_kinds() -> None:
    kinds = sorted(d["kind"] for d in documents())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "Namespace", "ServiceAccount"]
    for d in documents():
        assert d["apiVersion"] in {"v1", "apps/v1", "rbac.authorization.k8s.io/v1"}


def test_daemonset_arguments_parse_with_the_real_command() -> None:
    container = one("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    params = parse_enrich(container["args"])
    assert params["source"] == "auto"
    assert params["kube"] is True
    assert str(params["checkpoint_path"]).startswith("/var/log/syscribe/")
    assert params["output"].startswith("/var/log/syscribe/")
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    ports = {p["containerPort"] for p in container["ports"]}
    assert params["metrics_port"] in ports


def test_daemonset_mounts_what_the_enricher_reads() -> None:
    spec = one("DaemonSet")["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True  # audit netlink multicast reaches the initial netns only
    assert spec["hostPID"] is True  # the process events connector answers the host pid namespace only
    container = spec["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in ("/host/proc", "/var/log/audit", "/dev/kmsg", "/var/log/syscribe"):
        assert path in mounts, path
    assert not mounts["/var/log/syscribe"].get("readOnly")
    # Every default state directory the resolver looks in is covered by a read-only mount of it or of
    # a parent, from the same host path.
    for state_dir in DEFAULT_STATE_DIRS:
        if "docker" in state_dir.parts:
            continue  # docker nodes are not what this manifest is for (CRI-O, containerd)
        covering = [p for p in mounts if state_dir == Path(p) or Path(p) in state_dir.parents]
        assert covering, f"{state_dir} is not mounted"
        mount = mounts[covering[0]]
        assert mount.get("readOnly") is True
        assert volumes[mount["name"]]["hostPath"]["path"] == covering[0]
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert set(caps["add"]) == {"AUDIT_READ", "SYSLOG", "DAC_READ_SEARCH", "NET_ADMIN"}


def test_rbac_allows_list_and_watch_of_pods() -> None:
    rules = one("ClusterRole")["rules"]
    assert any("pods" in r["resources"] and {"list", "watch"} <= set(r["verbs"]) for r in rules)
    binding = one("ClusterRoleBinding")
    account = one("ServiceAccount")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == account["metadata"]["namespace"]
    daemonset = one("DaemonSet")
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_systemd_unit_runs_a_valid_command() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    exec_start = shlex.split(unit["Service"]["ExecStart"])
    assert exec_start[0].endswith("/syscribe")
    params = parse_enrich(exec_start[1:])
    assert params["source"] == "auto"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "CAP_AUDIT_READ" in unit["Service"]["CapabilityBoundingSet"]


def test_containerfile_installs_with_the_pinned_constraints() -> None:
    text = CONTAINERFILE.read_text()
    assert "-c /src/constraints.txt" in text
    assert 'ENTRYPOINT ["syscribe"]' in text
    for package in ("libseccomp2", "libbpf1", "python3"):
        assert package in text


@pytest.mark.parametrize("bad", [["enrich", "--no-such-option"], ["enrich", "--source=nope"]])
def test_the_argument_check_catches_mistakes(bad: list[str]) -> None:
    with pytest.raises(click.UsageError):
        parse_enrich(bad)


def test_the_api_server_accepts_the_manifest(kube_api: KubeAPI, kube_namespace: str, tmp_path: Path) -> None:
    """Each object, applied server side with dryRun=All (validated and admitted, not stored), in the
    test's namespace instead of `syscribe`: the schema, the priority class, the hostPath types."""
    from kubernetes import dynamic

    api = dynamic.DynamicClient(kube_api.client(), cache_file=str(tmp_path / "discovery.json"))
    kinds = []
    for doc in documents():
        text = yaml.safe_dump(doc).replace("namespace: syscribe", f"namespace: {kube_namespace}")
        obj = yaml.safe_load(text)
        resource = api.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = kube_namespace if resource.namespaced else None
        made = resource.server_side_apply(
            body=obj, name=obj["metadata"]["name"], namespace=namespace,
            field_manager="syscribe-test", dry_run="All", force_conflicts=True,
        )
        assert made.metadata.name == obj["metadata"]["name"]
        kinds.append(made.kind)
    assert "DaemonSet" in kinds and "ClusterRole" in kinds


def test_recorder_unit_runs_a_valid_command() -> None:
    from syscribe.commands.recorder import recorder

    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((ROOT / "packaging" / "systemd" / "syscribe-recorder.service").read_text())
    exec_start = shlex.split(unit["Service"]["ExecStart"])
    assert exec_start[0].endswith("/syscribe") and exec_start[1] == "recorder"
    ctx = recorder.make_context("recorder", exec_start[2:])
    assert ctx.params["config_path"] == "/etc/syscribe/hook.json"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
