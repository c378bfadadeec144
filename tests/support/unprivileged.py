"""Run syscribe as an unprivileged user wherever the checkout is.

A test that drops to `nobody` cannot run the venv's programs from a checkout nobody can enter (a clone
under /root, or in a `mktemp -d` folder, mode 0700): the interpreter link, the console scripts and the
editable install all live inside it. `reachable()` copies what an unprivileged syscribe imports (the
syscribe package, dereferenced out of the editable install, and the distributions it needs, except the
lazily imported kubernetes client) once per session into a world-readable folder under /tmp, with a
`syscribe` script and a `python` that find it. The interpreter itself is the system one the venv was
made from (the venv uses --system-site-packages, so the Debian packages are there as in the venv).
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

import syscribe

# Imported only with `enrich --kube` or by the controller, which no unprivileged test runs; with its
# dependencies it is 150 MB.
_SKIP = frozenset({"kubernetes"})
_ROOT_DISTRIBUTION = "syscribe"
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Who runs as `nobody` in the tests: the user and group setpriv drops to.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@dataclass(frozen=True)
class Reachable:
    folder: Path  # world-readable, removed at exit
    python: Path  # the system interpreter, with `site` first on its path
    syscribe: Path  # the `syscribe` command


def _needed_distributions() -> list[importlib.metadata.Distribution]:
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [_ROOT_DISTRIBUTION]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen or key in _SKIP:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for requirement in dist.requires or ():
            if "extra ==" in requirement:
                continue
            match = _REQUIREMENT_NAME.match(requirement)
            if match:
                todo.append(match[0])
    return list(seen.values())


def _copy(dist: importlib.metadata.Distribution, site_packages: Path, into: Path) -> None:
    for file in dist.files or ():
        source = Path(str(dist.locate_file(file))).resolve()
        try:
            relative = Path(os.path.abspath(dist.locate_file(file))).relative_to(site_packages)
        except ValueError:
            continue  # a console script in bin/, or not in the venv (reachable as it is)
        if relative.parts[0] in ("..", "__pycache__") or not source.is_file():
            continue
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


@functools.cache
def reachable() -> Reachable:
    """The world-readable copy (made on first use in this process)."""
    folder = Path(tempfile.mkdtemp(prefix="syscribe-unprivileged-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    site = folder / "site"
    site.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for dist in _needed_distributions():
        if dist.metadata["Name"] != _ROOT_DISTRIBUTION:
            _copy(dist, site_packages, site)
    # The editable install is a tree of links into the checkout: copy what they point at.
    package = Path(next(iter(syscribe.__path__)))
    shutil.copytree(package, site / "syscribe", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    python = Path(os.path.realpath(sys.executable))
    launcher = folder / "python"
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH="{site}" exec {python} -s "$@"\n')
    command = folder / "syscribe"
    command.write_text(
        f"#!{python} -s\nimport sys\nsys.path.insert(0, {str(site)!r})\n"
        "from syscribe.cli import main\nsys.argv[0] = 'syscribe'\nsys.exit(main())\n"
    )
    for path in (launcher, command):
        path.chmod(0o755)
    for directory, _dirs, files in os.walk(folder):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644 if not name.endswith(".so") else 0o755)
    launcher.chmod(0o755)
    command.chmod(0o755)
    return Reachable(folder, launcher, command)
