"""Where a profile may be written (or an input read): under a configured root, by path alone.

Pure (no I/O). The annotation's paths arrive normalised (syscribe.hooks.annotation.normalise: no `..`,
no `.`, no `//`), so "under a root" is a comparison of components. Symlinks are the writer's business:
syscribe.hooks.output walks the directories below the root with O_NOFOLLOW.
"""

from __future__ import annotations

from collections.abc import Sequence

from syscribe.hooks.annotation import meta_name_for
from syscribe.hooks.record import Record

__all__ = ["PathError", "Placement", "components", "meta_name_for", "place", "under"]


class PathError(ValueError):
    """The path is outside every configured root; the message says which roots are allowed."""


class Placement(Record):  # not a dataclass: see syscribe.hooks.config.HookConfig
    """A path split at the root it lies under."""

    root: str  # the configured root
    parts: tuple[str, ...]  # directories between the root and the file
    name: str  # the file name

    @property
    def path(self) -> str:
        return "/".join((self.root.rstrip("/"), *self.parts, self.name))

    @property
    def meta_name(self) -> str:
        return meta_name_for(self.name)

    @property
    def meta_path(self) -> str:
        return "/".join((self.root.rstrip("/"), *self.parts, self.meta_name))


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def under(path: str, root: str) -> bool:
    """Whether normalised `path` is `root` or below it (by components: /a/bc is not under /a/b)."""
    root_parts = components(root)
    return components(path)[: len(root_parts)] == root_parts


def place(path: str, roots: Sequence[str], what: str = "of:") -> Placement:
    """Split `path` at the most specific root it lies strictly below."""
    parts = components(path)
    if ".." in parts or "." in parts:
        raise PathError(f"{what} {path!r} is not normalised")
    best: list[str] | None = None
    best_root = ""
    for root in roots:
        root_parts = components(root)
        inside = parts[: len(root_parts)] == root_parts and len(parts) > len(root_parts)
        if inside and (best is None or len(root_parts) > len(best)):
            best, best_root = root_parts, root
    if best is None:
        allowed = ", ".join(roots)
        shown = path if len(path) <= 120 else path[:120] + "..."
        raise PathError(
            f"{what} {shown!r} is not under an allowed directory ({allowed}); write below one of them, "
            "or add a directory to the hook config's "
            + ("outputRoots" if what == "of:" else "inputRoots")
        )
    rest = parts[len(best) :]
    return Placement(root=best_root, parts=tuple(rest[:-1]), name=rest[-1])
