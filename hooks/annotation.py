"""The trace-syscall annotation: which key applies to a container, and what its value asks for.

Pure (no I/O). The value grammar is containers/oci-seccomp-bpf-hook's, `[if:<abs path>;]of:<abs path>`
(either order; spaces around a part are ignored, as there), made strict where that hook was loose:
every problem is an error that names it, and paths are normalised so that the output-root check
(syscribe.hooks.paths) sees the path the kernel will.

Keys: `io.containers.trace-syscall` applies to every container of a pod (CRI-O passes pod annotations to
each container) except the sandbox/infra container; `io.containers.trace-syscall/<container-name>`
applies to the container of that name (`io.kubernetes.container.name`) and wins over the pod-wide key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from syscribe import annotations as keys
from syscribe.hooks.record import Record

KEY = keys.TRACE_SYSCALL
CONTAINER_NAME_KEY = keys.CONTAINER_NAME
# CRI-O marks the pod's infra container with ContainerType "sandbox", and gives it its own id as
# SandboxID. podman 4 marks pod members with the same keys (ContainerType "container") and passes a
# pod's annotations to its containers but not to the infra container.
CONTAINER_TYPE_KEY = keys.CRIO_CONTAINER_TYPE
SANDBOX_ID_KEY = keys.CRIO_SANDBOX_ID
SANDBOX = keys.SANDBOX

PATH_MAX = 4096  # Linux, bytes including the terminating NUL
NAME_MAX = 255
# Two prefixed paths and the separator; anything longer cannot be valid.
MAX_VALUE = 2 * (len("of:") + PATH_MAX) + 1
# The metadata file sits beside the profile under this suffix; a profile may not take such a name.
META_SUFFIX = ".meta.json"
GRAMMAR = "[if:<abs path>;]of:<abs path>"
# Names of temporary files (syscribe.hooks.output: `.syscribe-<12 hex>.tmp`; earlier versions
# `.<name>.<12 hex>.tmp`), which a write removes when their writer is gone: never a profile's name.
_TEMPORARY = re.compile(r"\..*\.[0-9a-f]{12}\.tmp|\.syscribe-.*\.tmp", re.S)


class AnnotationError(ValueError):
    """The annotation cannot be used; the message names the problem."""


# A named tuple, not a dataclass: importing dataclasses is most of the hook's import time (docs/hook.md,
# "Where the time goes"); see syscribe.hooks.record.
class Request(Record):
    """What one container's annotation asks for."""

    key: str  # the annotation that applied
    output: str  # normalised absolute path of the profile to write
    input: str | None  # normalised absolute path of the profile to extend, if any


def is_sandbox(annotations: Mapping[str, str], container_id: str | None = None) -> bool:
    """Whether these are the annotations of a pod's sandbox (infra) container."""
    if annotations.get(CONTAINER_TYPE_KEY) == SANDBOX:
        return True
    return container_id is not None and annotations.get(SANDBOX_ID_KEY) == container_id


def select(annotations: Mapping[str, str], container_id: str | None = None) -> tuple[str, str] | None:
    """The (key, value) that applies to the container with these annotations, or None.

    The per-container key wins; the pod-wide key never applies to a sandbox/infra container.
    """
    name = annotations.get(CONTAINER_NAME_KEY)
    if name:
        key = f"{KEY}/{name}"
        if key in annotations:
            return key, annotations[key]
    if KEY in annotations and not is_sandbox(annotations, container_id):
        return KEY, annotations[KEY]
    return None


def request_for(annotations: Mapping[str, str], container_id: str | None = None) -> Request | None:
    """select() and parse() in one: None when no annotation applies, AnnotationError when it is bad."""
    chosen = select(annotations, container_id)
    if chosen is None:
        return None
    key, value = chosen
    try:
        output, input_ = parse(value)
    except AnnotationError as exc:
        raise AnnotationError(f"annotation {_shown(key)}: {exc}") from None
    return Request(key=key, output=output, input=input_)


def parse(value: object) -> tuple[str, str | None]:
    """(output, input) paths from an annotation value; AnnotationError names what is wrong."""
    if not isinstance(value, str):
        raise AnnotationError(f"value is not a string; expected {GRAMMAR}")
    if len(value) > MAX_VALUE:
        raise AnnotationError(
            f"value is {len(value)} characters, longer than any valid {GRAMMAR} ({MAX_VALUE})"
        )
    _check_characters(value)
    if not value.strip(" "):
        raise AnnotationError(f"value is empty; expected {GRAMMAR}")
    parts = value.split(";")
    if len(parts) > 2:
        raise AnnotationError(f"{len(parts) - 1} semicolons; at most one separates if: and of: ({GRAMMAR})")
    found: dict[str, str] = {}
    for index, raw in enumerate(parts, start=1):
        part = raw.strip(" ")
        if not part:
            raise AnnotationError(f"part {index} of {len(parts)} is empty; expected {GRAMMAR}")
        prefix, sep, path = part.partition(":")
        if not sep or prefix not in ("if", "of"):
            raise AnnotationError(
                f"unknown prefix in {_shown(part)}; each part starts with if: or of: ({GRAMMAR})"
            )
        if prefix in found:
            raise AnnotationError(f"{prefix}: is given twice; give it once ({GRAMMAR})")
        found[prefix] = normalise(path.strip(" "), f"{prefix}:")
    if "of" not in found:
        raise AnnotationError(f"missing of:<abs path>, the profile to write ({GRAMMAR})")
    output = found["of"]
    if output == "/":
        raise AnnotationError(f"of: {_shown(output)} names a directory; name the profile file to write")
    name = output.rsplit("/", 1)[-1]
    if name.endswith(META_SUFFIX):
        raise AnnotationError(
            f"of: file names ending in {META_SUFFIX} are kept for the metadata written beside each "
            "profile; choose another name"
        )
    if _TEMPORARY.fullmatch(name):
        raise AnnotationError(
            f"of: {_shown_name(name)} has the form of the hook's temporary files, which it removes once "
            "their writer is gone; choose another name"
        )
    _check_meta_name(output, name)
    return output, found.get("if")


def meta_name_for(name: str) -> str:
    """`web.json` -> `web.meta.json`; `web` -> `web.meta.json`."""
    return name.removesuffix(".json") + META_SUFFIX


def _check_meta_name(output: str, name: str) -> None:
    """The hook writes `<stem>.meta.json` beside the profile (and temporaries of a fixed short length,
    syscribe.hooks.output): a profile name is only good if that name fits NAME_MAX and PATH_MAX too."""
    meta = meta_name_for(name)
    meta_bytes = len(meta.encode("utf-8", "surrogatepass"))
    if meta_bytes > NAME_MAX:
        room = NAME_MAX - (meta_bytes - len(name.encode("utf-8", "surrogatepass")))
        raise AnnotationError(
            f"of: the metadata file written beside the profile, {_shown_name(meta)}, would be {meta_bytes} "
            f"bytes, over NAME_MAX ({NAME_MAX}); shorten the profile's name to at most {room} bytes"
        )
    meta_path = output[: len(output) - len(name)] + meta
    if len(meta_path.encode("utf-8", "surrogatepass")) >= PATH_MAX:
        raise AnnotationError(
            f"of: the metadata file written beside the profile would have a path of PATH_MAX "
            f"({PATH_MAX} bytes) or more; choose a shorter path"
        )


def normalise(path: str, what: str) -> str:
    """An absolute path with `//` and `.` collapsed; `..`, relative and over-long paths refused."""
    if not path:
        raise AnnotationError(f"{what} has an empty path; give an absolute path ({GRAMMAR})")
    if not path.startswith("/"):
        raise AnnotationError(f"{what} path {_shown(path)} is relative; give an absolute path")
    if len(path.encode("utf-8", "surrogatepass")) >= PATH_MAX:
        raise AnnotationError(f"{what} path is longer than PATH_MAX ({PATH_MAX} bytes)")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise AnnotationError(f"{what} path {_shown(path)} has a '..' component; give the path without it")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise AnnotationError(f"{what} path has a component longer than NAME_MAX ({NAME_MAX} bytes)")
    if what == "of:" and path.endswith("/"):
        raise AnnotationError(f"of: {_shown(path)} names a directory; name the profile file to write")
    return "/" + "/".join(parts)


def _check_characters(value: str) -> None:
    for i, ch in enumerate(value):
        code = ord(ch)
        # C0, DEL and C1: U+009B alone is a terminal's CSI, and U+0085 a line break to some readers.
        if code < 0x20 or 0x7F <= code <= 0x9F:
            raise AnnotationError(
                f"value has a control character ({ch!r}) at position {i}; paths must be plain text"
            )
        if 0xD800 <= code <= 0xDFFF:
            raise AnnotationError(f"value is not valid UTF-8 (a lone surrogate at position {i})")


def _shown_name(name: str) -> str:
    """A long file name shown by both ends, where its suffix is."""
    return repr(name) if len(name) <= 60 else repr(name[:24] + "..." + name[-24:])


def _shown(text: str) -> str:
    """A value quoted for a one-line message, however hostile: escaped and cut short."""
    cut = text if len(text) <= 60 else text[:60] + "..."
    return repr(cut)
