"""OCI runtime-spec `linux.seccomp` profiles: the model, and reading, checking and writing its JSON.

Pure (no I/O) and stdlib-only: the hook imports it to read its `if:` profile and write what it
recorded, and the hook's import path stays lean. What is accepted is written down in
docs/profile-format.md; syscribe.profilemerge combines and compares profiles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from syscribe import arch as archmod
from syscribe import strictjson
from syscribe.arch import Arch

ACT_ALLOW = "SCMP_ACT_ALLOW"
ACT_ERRNO = "SCMP_ACT_ERRNO"
ACT_LOG = "SCMP_ACT_LOG"

ACTIONS = (
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
)
# LOG lets the call through (it only writes an audit record), so for what a profile allows it is ALLOW.
ALLOWING = frozenset({ACT_ALLOW, ACT_LOG})

OPS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)

FLAGS = (
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
)

# Every name the runtime spec lists, plus those syscribe.arch knows; some (MIPS n32, PA-RISC) have no
# entry in syscribe.arch because syscribe never records on them, but a profile may still name them.
ARCHITECTURES: tuple[str, ...] = tuple(
    sorted(
        {
            "SCMP_ARCH_X86",
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_X32",
            "SCMP_ARCH_ARM",
            "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_MIPS",
            "SCMP_ARCH_MIPS64",
            "SCMP_ARCH_MIPS64N32",
            "SCMP_ARCH_MIPSEL",
            "SCMP_ARCH_MIPSEL64",
            "SCMP_ARCH_MIPSEL64N32",
            "SCMP_ARCH_PPC",
            "SCMP_ARCH_PPC64",
            "SCMP_ARCH_PPC64LE",
            "SCMP_ARCH_S390",
            "SCMP_ARCH_S390X",
            "SCMP_ARCH_PARISC",
            "SCMP_ARCH_PARISC64",
            "SCMP_ARCH_RISCV64",
            "SCMP_ARCH_LOONGARCH64",
        }
        | set(archmod.BY_OCI)
    )
)

# runc and crun return EPERM when an ERRNO or TRACE action carries no errnoRet.
DEFAULT_ERRNO = 1
# The kernel keeps 16 bits of data with SECCOMP_RET_ERRNO / SECCOMP_RET_TRACE.
MAX_ERRNO_RET = 0xFFFF
U64_MAX = (1 << 64) - 1
MAX_ARGS = 6
MAX_NAME_LENGTH = 64
MAX_STRING_LENGTH = 4096
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")

_TOP_KEYS = (
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "archMap",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
)
_RULE_KEYS = ("names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes")
_ARG_KEYS = ("index", "value", "valueTwo", "op")


class ProfileError(ValueError):
    """A profile is not valid; the message names the field, what was wrong and what is expected."""


@dataclass(frozen=True, slots=True)
class Arg:
    index: int
    value: int
    value_two: int
    op: str


@dataclass(frozen=True, slots=True)
class Rule:
    names: tuple[str, ...]  # sorted, without duplicates
    action: str
    errno_ret: int | None = None
    args: tuple[Arg, ...] = ()

    @property
    def allows(self) -> bool:
        return self.action in ALLOWING


@dataclass(frozen=True, slots=True)
class Profile:
    default_action: str
    architectures: tuple[str, ...] = ()
    syscalls: tuple[Rule, ...] = ()
    default_errno_ret: int | None = None
    flags: tuple[str, ...] = ()
    listener_path: str | None = None
    listener_metadata: str | None = None

    @property
    def allows_by_default(self) -> bool:
        return self.default_action in ALLOWING

    def named(self) -> frozenset[str]:
        return frozenset(n for rule in self.syscalls for n in rule.names)


# ---------------------------------------------------------------------------------------------------
# Building


def from_names(names: Iterable[str], native: Arch) -> Profile:
    """The profile of a recording: deny by default, allow exactly `names` on `native` and its sub-arches."""
    unique = sorted(set(names))
    if not unique:
        raise ProfileError("no syscalls were recorded, so there is no profile to write; did the command run?")
    for i, name in enumerate(unique):
        check_name(name, f"names[{i}]")
    arches = tuple(a.oci for a in archmod.subarches(native))
    return Profile(
        default_action=ACT_ERRNO,
        default_errno_ret=DEFAULT_ERRNO,
        architectures=arches,
        syscalls=(Rule(names=tuple(unique), action=ACT_ALLOW),),
    )


# ---------------------------------------------------------------------------------------------------
# Parsing


def loads(text: str | bytes) -> Profile:
    """Parse OCI seccomp JSON text."""
    return parse(load_json(text))


def as_text(data: str | bytes) -> str:
    """A profile file's bytes as text; ProfileError when they are not UTF-8."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"not UTF-8 text (byte {exc.start}); a profile is JSON or YAML") from None


def load_json(text: str | bytes) -> Any:
    """JSON text to Python values, with errors a user can act on (and no duplicate keys)."""
    text = as_text(text)
    if not text.strip():
        raise ProfileError('the file is empty; expected a JSON object such as {"defaultAction": ...}')
    try:
        return strictjson.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ProfileError("JSON nested too deeply; a seccomp profile is at most 4 levels deep") from None
    except ValueError as exc:  # duplicate keys, NaN, integers beyond the interpreter's digit limit
        reason = str(exc)
        if "digits" in reason:
            reason = "a number has thousands of digits"
        raise ProfileError(f"not a usable JSON document: {reason}") from None


def parse(data: object) -> Profile:
    """Validate a decoded OCI `linux.seccomp` object and build the Profile."""
    if not isinstance(data, dict):
        raise ProfileError(f"the profile is {json_type(data)}; expected a JSON object with defaultAction")
    if "kind" in data or "apiVersion" in data:
        raise ProfileError("this is a Kubernetes resource, not an OCI seccomp profile; convert it first")
    if "ociVersion" in data and "linux" in data:
        raise ProfileError("this is an OCI config.json; pass the object under linux.seccomp instead")
    _check_keys(data, _TOP_KEYS, "the profile")
    if "defaultAction" not in data:
        raise ProfileError("defaultAction: missing; expected one of " + ", ".join(ACTIONS))
    default_action = _enum(data["defaultAction"], ACTIONS, "defaultAction", "action")
    default_errno = _opt_int(data.get("defaultErrnoRet"), "defaultErrnoRet", 0, MAX_ERRNO_RET)
    arches = _strings(data.get("architectures", []), "architectures")
    for i, name in enumerate(arches):
        _enum(name, ARCHITECTURES, f"architectures[{i}]", "architecture")
    arches += _arch_map(data.get("archMap"))
    flags = _strings(data.get("flags", []), "flags")
    for i, flag in enumerate(flags):
        _enum(flag, FLAGS, f"flags[{i}]", "flag")
    listener_path = _opt_str(data.get("listenerPath"), "listenerPath")
    listener_metadata = _opt_str(data.get("listenerMetadata"), "listenerMetadata")
    raw_rules = data.get("syscalls", [])
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        raise ProfileError(f"syscalls: {json_type(raw_rules)}; expected a list of rules")
    rules = tuple(_rule(r, f"syscalls[{i}]") for i, r in enumerate(raw_rules))
    return Profile(
        default_action=default_action,
        default_errno_ret=default_errno,
        architectures=unique_in_order(arches),
        flags=unique_in_order(flags),
        listener_path=listener_path,
        listener_metadata=listener_metadata,
        syscalls=rules,
    )


def _rule(data: object, where: str) -> Rule:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: {json_type(data)}; expected an object with names and action")
    _check_keys(data, _RULE_KEYS, where)
    for key in ("includes", "excludes"):
        if data.get(key) not in (None, {}):
            raise ProfileError(
                f"{where}.{key}: Docker's conditional rules are not part of the OCI format; "
                "keep only the rules that apply to your architecture and capabilities"
            )
    comment = data.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise ProfileError(f"{where}.comment: {json_type(comment)}; expected a string")
    names = _strings(data.get("names", []), f"{where}.names")
    if "name" in data:  # Docker's old single-name form
        single = data["name"]
        if not isinstance(single, str):
            raise ProfileError(f"{where}.name: {json_type(single)}; expected a syscall name")
        names.append(single)
    if not names:
        raise ProfileError(f"{where}.names: empty; a rule needs at least one syscall name")
    for i, name in enumerate(names):
        check_name(name, f"{where}.names[{i}]")
    if "action" not in data:
        raise ProfileError(f"{where}.action: missing; expected one of " + ", ".join(ACTIONS))
    action = _enum(data["action"], ACTIONS, f"{where}.action", "action")
    errno_ret = _opt_int(data.get("errnoRet"), f"{where}.errnoRet", 0, MAX_ERRNO_RET)
    raw_args = data.get("args", [])
    if raw_args is None:
        raw_args = []
    if not isinstance(raw_args, list):
        raise ProfileError(f"{where}.args: {json_type(raw_args)}; expected a list of argument filters")
    if len(raw_args) > MAX_ARGS:
        raise ProfileError(f"{where}.args: {len(raw_args)} filters; syscalls have {MAX_ARGS} arguments")
    args = tuple(_arg(a, f"{where}.args[{i}]") for i, a in enumerate(raw_args))
    return Rule(names=tuple(sorted(set(names))), action=action, errno_ret=errno_ret, args=args)


def _arg(data: object, where: str) -> Arg:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: {json_type(data)}; expected an object with index, value, op")
    _check_keys(data, _ARG_KEYS, where)
    for key in ("index", "op"):
        if key not in data:
            raise ProfileError(f"{where}.{key}: missing")
    index = _int(data["index"], f"{where}.index", 0, MAX_ARGS - 1)
    value = _int(data.get("value", 0), f"{where}.value", 0, U64_MAX)
    value_two = _int(data.get("valueTwo", 0), f"{where}.valueTwo", 0, U64_MAX)
    op = _enum(data["op"], OPS, f"{where}.op", "operator")
    return Arg(index=index, value=value, value_two=value_two, op=op)


def _arch_map(data: object) -> list[str]:
    """Docker's archMap, accepted on input only: its architectures and sub-architectures, flattened."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ProfileError(f"archMap: {json_type(data)}; expected a list (better: use architectures)")
    out: list[str] = []
    for i, entry in enumerate(data):
        where = f"archMap[{i}]"
        if not isinstance(entry, dict):
            raise ProfileError(f"{where}: {json_type(entry)}; expected an object with architecture")
        _check_keys(entry, ("architecture", "subArchitectures"), where)
        main = entry.get("architecture")
        out.append(_enum(main, ARCHITECTURES, f"{where}.architecture", "architecture"))
        subs = _strings(entry.get("subArchitectures", []) or [], f"{where}.subArchitectures")
        for j, sub in enumerate(subs):
            out.append(_enum(sub, ARCHITECTURES, f"{where}.subArchitectures[{j}]", "architecture"))
    return out


def check_name(name: str, where: str) -> None:
    """ProfileError (naming `where`) unless `name` can be a syscall name."""
    if len(name) > MAX_NAME_LENGTH:
        raise ProfileError(f"{where}: {len(name)} characters; a syscall name has {MAX_NAME_LENGTH} at most")
    if not _NAME_RE.match(name):
        raise ProfileError(f"{where}: is not a syscall name (lower-case letters, digits and _)")


def _check_keys(data: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for i, key in enumerate(data):
        if key not in known:
            # The position, not the key: a file that is not a profile (a secret, through a symlink) must
            # not have its bytes printed by a CLI run as root.
            raise ProfileError(
                f"{where}: unknown field (key {i + 1} of the object); known fields: {', '.join(known)}"
            )


def _enum(value: object, valid: Sequence[str], where: str, what: str) -> str:
    if not isinstance(value, str):
        raise ProfileError(f"{where}: {json_type(value)}; expected a string, one of {', '.join(valid)}")
    if value not in valid:
        raise ProfileError(f"{where}: unknown {what} (a string of {len(value)} characters); valid: "
                           f"{', '.join(valid)}")
    return value


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ProfileError(f"{where}: {json_type(value)}; expected a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ProfileError(f"{where}[{i}]: {json_type(item)}; expected a string")
    return list(value)


def _int(value: object, where: str, low: int, high: int) -> int:
    # bool is an int in Python but `true` is not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{where}: {json_type(value)}; expected an integer from {low} to {high}")
    if not low <= value <= high:
        raise ProfileError(f"{where}: out of range; expected an integer from {low} to {high}")
    return value


def _opt_int(value: object, where: str, low: int, high: int) -> int | None:
    return None if value is None else _int(value, where, low, high)


def _opt_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProfileError(f"{where}: {json_type(value)}; expected a string")
    if len(value) > MAX_STRING_LENGTH or "\x00" in value:
        raise ProfileError(f"{where}: longer than {MAX_STRING_LENGTH} characters or holds a NUL byte")
    return value


def json_type(value: object) -> str:
    """What a decoded JSON/YAML value is, with its article, for messages ("a list", "an object")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a fractional number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def unique_in_order(items: Iterable[str]) -> tuple[str, ...]:
    """`items` without repeats, each where it first appears."""
    return tuple(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------------
# Writing


def to_dict(profile: Profile) -> dict[str, Any]:
    """The OCI JSON object, keys in the order runtimes document them. Never `archMap`."""
    out: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.default_errno_ret is not None:
        out["defaultErrnoRet"] = profile.default_errno_ret
    out["architectures"] = list(profile.architectures)
    if profile.flags:
        out["flags"] = list(profile.flags)
    if profile.listener_path is not None:
        out["listenerPath"] = profile.listener_path
    if profile.listener_metadata is not None:
        out["listenerMetadata"] = profile.listener_metadata
    out["syscalls"] = [rule_to_dict(r) for r in profile.syscalls]
    return out


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
    if rule.errno_ret is not None:
        out["errnoRet"] = rule.errno_ret
    if rule.args:
        out["args"] = [
            {"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op} for a in rule.args
        ]
    return out


def dumps(profile: Profile) -> str:
    return json.dumps(to_dict(profile), indent=2) + "\n"
