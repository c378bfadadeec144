"""`syscribe merge` and `syscribe convert`: results, exit codes, and one clear line for each error,
with no partial file left behind. Through click's runner and through the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from syscribe import arch
from syscribe import ociprofile as prof
from syscribe import seccompprofile as spo
from syscribe.cli import main
from tests.support.prereq import require

SYSCRIBE = str(Path(sys.executable).parent / "syscribe")


def cli(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def one_error_line(result: Result | subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("syscribe: ")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def write_profile(path: Path, *names: str) -> Path:
    path.write_text(prof.dumps(prof.from_names(names, arch.X86_64)))
    return path


@pytest.fixture
def ab(tmp_path: Path) -> tuple[Path, Path]:
    return write_profile(tmp_path / "a.json", "read", "write"), write_profile(
        tmp_path / "b.json", "read", "mkdir"
    )


# --- merge ---------------------------------------------------------------------------------------------


def test_merge_to_stdout_is_the_union(ab: tuple[Path, Path]) -> None:
    result = cli("merge", str(ab[0]), str(ab[1]))
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["syscalls"] == [{"names": ["mkdir", "read", "write"], "action": "SCMP_ACT_ALLOW"}]
    assert "archMap" not in data


def test_merge_to_a_file_and_as_a_seccompprofile(ab: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.yaml"
    result = cli(
        "merge", "-o", str(out), "--format", "seccompprofile", "--name", "both", str(ab[0]), str(ab[1])
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    data = yaml.safe_load(out.read_text())
    assert data["metadata"] == {"name": "both"}
    assert data["spec"]["syscalls"][0]["names"] == ["mkdir", "read", "write"]


def test_merge_of_mixed_formats_keeps_the_first_ones(ab: tuple[Path, Path], tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text(spo.dumps(prof.from_names(["openat"], arch.X86_64), "cee"))
    result = cli("merge", str(y), str(ab[0]))
    assert result.exit_code == 0
    data = yaml.safe_load(result.stdout)
    assert data["kind"] == "SeccompProfile" and data["metadata"]["name"] == "cee"


def test_merge_warns_about_conflicts_on_stderr(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
            }
        )
    )
    b.write_text(
        json.dumps(
            {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_KILL"}]}
        )
    )
    result = cli("merge", str(a), str(b))
    assert result.exit_code == 0
    assert result.stderr.startswith("syscribe: warning: profiles deny these syscalls in different ways")


def test_check_is_a_ci_gate(ab: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = ab
    missing = cli("merge", "--check", str(a), str(b))
    assert missing.exit_code == 1
    assert missing.stdout.splitlines() == [f"{a} lacks what {b} allow:", "  syscall mkdir"]
    big = write_profile(tmp_path / "big.json", "read", "write", "mkdir")
    covered = cli("merge", "--check", str(big), str(a), str(b))
    assert covered.exit_code == 0
    assert covered.stdout == ""
    assert "covers" in covered.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "no profiles given"),
        (("--check", "A"), "give at least two"),
        (("--check", "-o", "x", "A", "B"), "--check only reports"),
        (("--name", "x", "A", "B"), "--name is the SeccompProfile's metadata.name"),
        (("--format", "seccompprofile", "--name", "Bad_Name", "A", "B"), "--name: resource name 'Bad_Name'"),
        (("A", "missing.json"), "missing.json: no such file"),
        (("-o", "nodir/out.json", "A", "B"), "directory nodir does not exist"),
    ],
)
def test_merge_errors(ab: tuple[Path, Path], tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    os.chdir(tmp_path)
    mapped = [str(ab[0]) if a == "A" else str(ab[1]) if a == "B" else a for a in args]
    result = cli("merge", *mapped)
    assert result.exit_code == 2
    one_error_line(result, fragment)
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "the file is empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "the file holds a list"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}',
            "architectures[0]: unknown architecture (a string of 13 characters); valid:",
        ),
        ('{"defaultAction": "SCMP_ACT_MAYBE"}', "defaultAction: unknown action (a string of 14 characters)"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}',
            "names: empty",
        ),
        ("kind: SeccompProfile\napiVersion: v9\n", "apiVersion: a string of 2 characters, not one of"),
        ("a: &x [1]\nb: *x\n", "aliases"),
        ("\x00\x01\x02", "not valid YAML"),
    ],
)
def test_bad_input_profiles(tmp_path: Path, content: str, fragment: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = tmp_path / "out.json"
    out.write_text("previous")
    for args in (("merge", "-o", str(out), str(bad)), ("convert", str(bad), "-o", str(out))):
        result = cli(*args)
        assert result.exit_code == 2
        one_error_line(result, fragment)
        assert f"{bad}: " in result.stderr
        assert out.read_text() == "previous"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "out.json"]


def test_hostile_input_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_error_line(cli("convert", str(fifo)), "not a regular file")
    one_error_line(cli("convert", "/dev/zero"), "not a regular file")
    huge = tmp_path / "huge.json"
    with huge.open("wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: costs no disk
    one_error_line(cli("convert", str(huge)), "files over 67108864 bytes are refused")
    one_error_line(cli("convert", str(tmp_path)), "not a regular file")


# --- convert -------------------------------------------------------------------------------------------


def test_convert_both_ways(tmp_path: Path) -> None:
    src = write_profile(tmp_path / "my_app.json", "read", "write")
    to_cr = cli("convert", str(src))
    assert to_cr.exit_code == 0
    data = yaml.safe_load(to_cr.stdout)
    assert data["apiVersion"] == "security-profiles-operator.x-k8s.io/v1"
    assert data["metadata"] == {"name": "my-app"}  # from the file name, made valid
    cr = tmp_path / "cr.yaml"
    assert cli("convert", "--name", "web", str(src), "-o", str(cr)).exit_code == 0
    assert yaml.safe_load(cr.read_text())["metadata"]["name"] == "web"
    back = cli("convert", str(cr))
    assert back.exit_code == 0
    assert prof.loads(back.stdout) == prof.loads(src.read_text())
    same = cli("convert", "--to", "oci", str(src))
    assert prof.loads(same.stdout) == prof.loads(src.read_text())


def test_convert_from_stdin(tmp_path: Path) -> None:
    text = prof.dumps(prof.from_names(["read"], arch.X86_64))
    result = cli("convert", "-", stdin=text)
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == "profile"


def test_convert_refuses_what_a_seccompprofile_cannot_hold(tmp_path: Path) -> None:
    src = tmp_path / "p.json"
    src.write_text(json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}))
    out = tmp_path / "out.yaml"
    result = cli("convert", str(src), "-o", str(out))
    assert result.exit_code == 2
    one_error_line(result, "defaultErrnoRet 38 cannot be written to a SeccompProfile")
    assert not out.exists()


def test_convert_name_errors(tmp_path: Path) -> None:
    src = write_profile(tmp_path / "p.json", "read")
    one_error_line(cli("convert", "--name", "UPPER", str(src)), "--name: resource name 'UPPER' is not valid")
    one_error_line(cli("convert", "--to", "oci", "--name", "x", str(src)), "--name is the SeccompProfile's")


# --- the installed command -----------------------------------------------------------------------------


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSCRIBE, *args], capture_output=True, text=True, input=stdin, timeout=60, check=False
    )


def test_installed_command_merge_check_and_convert(ab: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = ab
    assert run("merge", "--check", str(a), str(b)).returncode == 1
    merged = tmp_path / "m.json"
    assert run("merge", "-o", str(merged), str(a), str(b)).returncode == 0
    assert run("merge", "--check", str(merged), str(a), str(b)).returncode == 0
    converted = run("convert", str(merged))
    assert converted.returncode == 0 and "kind: SeccompProfile" in converted.stdout


def test_installed_command_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["arm64"]}')
    good = write_profile(tmp_path / "good.json", "read")
    result = run("convert", str(good), "-o", str(tmp_path / "no" / "out.yaml"))
    assert result.returncode == 2
    one_error_line(result, "does not exist")
    result = run("convert", str(bad))
    assert result.returncode == 2
    one_error_line(result, "architectures[0]: unknown architecture (a string of 5 characters)")
    assert sorted(tmp_path.iterdir()) == [bad, good]


def test_stdout_closed_early_is_not_an_error(tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(100_000)]
    big = tmp_path / "big.json"
    big.write_text(
        json.dumps(
            {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}
        )
    )
    result = subprocess.run(
        f"{SYSCRIBE} convert --to oci {big} | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == '{\n  "defau'
    assert "Traceback" not in result.stderr


# --- duplicate keys, in every format (issue 9 item 10) ---------------------------------------------------

DUPLICATE_DEFAULT = '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [], "defaultAction": "SCMP_ACT_ALLOW"}'


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (DUPLICATE_DEFAULT, "a key appears twice in one object (its keys 1 and 3)"),
        ("\ufeff" + DUPLICATE_DEFAULT, "a key appears twice in one object (its keys 1 and 3)"),  # a BOM
        ("---\n" + DUPLICATE_DEFAULT, "a key appears twice in one mapping (at line 2 column 53, first at "
         "line 2 column 2)"),
        ("defaultAction: SCMP_ACT_ERRNO\nsyscalls: []\ndefaultAction: SCMP_ACT_ALLOW\n",
         "a key appears twice in one mapping (at line 3 column 1, first at line 1 column 1)"),
        ("defaultAction: SCMP_ACT_ERRNO\nsyscalls:\n- names: [mkdir]\n  action: SCMP_ACT_ERRNO\n"
         "  action: SCMP_ACT_ALLOW\n", "a key appears twice in one mapping (at line 5 column 3"),
        ("apiVersion: security-profiles-operator.x-k8s.io/v1beta1\nkind: SeccompProfile\n"
         "metadata: {name: p}\nspec:\n  defaultAction: SCMP_ACT_ERRNO\n  defaultAction: SCMP_ACT_ALLOW\n",
         "a key appears twice in one mapping (at line 6 column 3"),
    ],
    ids=["json", "json-after-bom", "json-after-document-marker", "yaml", "yaml-rule", "seccompprofile"],
)
def test_duplicate_keys_are_an_error_in_every_format(tmp_path: Path, content: str, fragment: str) -> None:
    bad = tmp_path / "dup.json"
    bad.write_bytes(content.encode())
    for args in (("convert", str(bad)), ("merge", str(bad))):
        result = run(*args)
        assert result.returncode == 2, result
        one_error_line(result, f"{bad}: ")
        assert fragment in result.stderr
        assert "SCMP_ACT_ALLOW" not in result.stdout


def test_run_does_not_allow_what_a_first_duplicate_key_denies(tmp_path: Path) -> None:
    require("libseccomp")
    bad = tmp_path / "dup.json"
    bad.write_bytes(b"\xef\xbb\xbf" + DUPLICATE_DEFAULT.encode())
    marker = tmp_path / "ran"
    result = run("run", "--profile", str(bad), "--", "touch", str(marker))
    assert result.returncode == 125
    one_error_line(result, "appears twice")
    assert not marker.exists()


# --- errors name the file, the position and the problem, never the bytes (issue 9 item 11) ---------------

SECRET = "root:$y$j9T$Zq8S3cr3tHashXyz:19000:0:99999:7:::"


@pytest.mark.parametrize(
    "content",
    [
        SECRET + "\ndaemon:*:19000:0:99999:7:::\n",  # a shadow file
        f'{{"{SECRET}": 1}}',
        f'{{"defaultAction": "SCMP_ACT_ERRNO", "{SECRET}": 1}}',
        f'{{"defaultAction": "{SECRET}"}}',
        f'{{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["{SECRET}"]}}',
        f'{{"defaultAction": "SCMP_ACT_LOG", "syscalls": [{{"names": ["{SECRET}"], "action": "x"}}]}}',
        f'{{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{{"names": ["read"], "action": "{SECRET}"}}]}}',
        f'{{"{SECRET}": 1, "{SECRET}": 2}}',
        f"{SECRET}: 1\n{SECRET}: 2\n",
        f"kind: '{SECRET}'\napiVersion: x\n",
        f"kind: SeccompProfile\napiVersion: '{SECRET}'\n",
        f"apiVersion: security-profiles-operator.x-k8s.io/v1\nkind: SeccompProfile\n'{SECRET}': 1\n",
        "apiVersion: security-profiles-operator.x-k8s.io/v1\nkind: SeccompProfile\nmetadata: {name: p}\n"
        f"spec:\n  defaultAction: SCMP_ACT_ERRNO\n  baseProfileName: {SECRET.replace(':', '-')}\n",
        f"a: b\nc: %{SECRET}\n",
        f'{{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1{"9" * 40}}}',
    ],
)
def test_errors_never_print_what_the_file_holds(tmp_path: Path, content: str) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(content)
    secret.chmod(0o600)
    link = tmp_path / "innocent.json"
    link.symlink_to(secret)
    ok = write_profile(tmp_path / "ok.json", "read")
    for args in (("merge", str(ok), str(link)), ("convert", str(link)),
                 ("merge", "--check", str(ok), str(link))):
        result = run(*args)
        assert result.returncode == 2, result
        one_error_line(result, f"{link}: ")
        for piece in ("j9T", "Zq8S3cr3t", "99999", "9" * 20):
            assert piece not in result.stderr, result.stderr
