"""`syscribe install-hook`: put the hook's files on a node (and take them away again).

What it writes is what `crio-config/` holds (a test keeps the two the same), with the paths of this
node filled in: the hooks.d file naming the installed `syscribe-hook` by its absolute path, the hook
config (only where none exists), the output root, and with CRI-O the drop-in. Every file it writes is
listed, with the SHA-256 of what it wrote, in a manifest beside the config (`install-hook.json`), which
is how it knows what is its own: a file it did not write, or one changed since, is never overwritten
or removed. Running it twice changes nothing; `--uninstall` removes what the manifest lists.

Contents are built by pure functions; `install` and `uninstall` do the file work and return what they
did, one line each, for the command to print.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from syscribe import annotations as keys
from syscribe import fsutil

HOOKS_DIR = "/etc/containers/oci/hooks.d"
CONFIG_DIR = "/etc/syscribe"
OUTPUT_ROOT = "/var/lib/syscribe/profiles"
CRIO_DIR = "/etc/crio/crio.conf.d"
HOOKS_FILE = "syscribe-hook.json"
CONFIG_FILE = "hook.json"
CRIO_FILE = "10-syscribe.conf"
MANIFEST = "install-hook.json"
KEY = keys.TRACE_SYSCALL
# CRI-O's own hooks directories; another --hooks-dir is added to them.
CRIO_HOOKS_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")


class InstallError(Exception):
    """Something stopped the install; the message says what and what to do."""


@dataclass(frozen=True)
class Layout:
    hooks_dir: Path
    config_dir: Path
    output_root: Path
    crio_dir: Path | None  # None: no CRI-O drop-in

    @property
    def hooks_file(self) -> Path:
        return self.hooks_dir / HOOKS_FILE

    @property
    def config_file(self) -> Path:
        return self.config_dir / CONFIG_FILE

    @property
    def manifest(self) -> Path:
        return self.config_dir / MANIFEST


# -- contents (pure) ------------------------------------------------------------------------------


def hooks_d(hook_path: str, config_file: str, *, isolated_script: str | None = None) -> str:
    """The hooks.d file. With `isolated_script`, `hook_path` is a Python interpreter that runs the hook
    as `python3 -I -S <script>`: no `site` at start, about 20 ms less on every container start than the
    `syscribe-hook` console script (docs/hook.md, "Where the time goes")."""
    if isolated_script is None:
        args = ["syscribe-hook", "--config", config_file]
    else:
        args = ["python3", "-I", "-S", isolated_script, "--config", config_file]
    doc = {
        "version": "1.0.0",
        "hook": {
            "path": hook_path,
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "timeout": 30,
        },
        "when": {"annotations": {r"^io\.containers\.trace-syscall(/.+)?$": ".*"}},
        "stages": ["prestart"],
    }
    return json.dumps(doc, indent=2) + "\n"


def hook_config(output_root: str, config_dir: str) -> str:
    doc = {
        "outputRoots": [output_root],
        "inputRoots": [output_root, f"{config_dir.rstrip('/')}/profiles"],
        "timeoutSeconds": 5,
        "backend": "core",
        "logFile": "/var/log/syscribe-hook.log",
        "onFailure": "start",
        "runtimeInit": "trim",
        "createDirectories": True,
        "addRuntimeSyscalls": True,
        "tracerCgroup": "/syscribe",
        "recorderSocket": "/run/syscribe/recorder.sock",
    }
    return json.dumps(doc, indent=2) + "\n"


def crio_drop_in(hooks_dir: str) -> str:
    dirs = list(CRIO_HOOKS_DIRS) + ([hooks_dir] if hooks_dir not in CRIO_HOOKS_DIRS else [])
    listed = "".join(f'  "{d}",\n' for d in dirs)
    handlers = "".join(
        f"\n[crio.runtime.runtimes.{name}]\n"
        'runtime_path = ""\n'
        'runtime_type = "oci"\n'
        f'runtime_root = "/run/{name}"\n'
        f'allowed_annotations = ["{KEY}"]\n'
        for name in ("runc", "crun")
    )
    return (
        "# CRI-O drop-in for syscribe's recording hook, written by `syscribe install-hook`\n"
        "# (`syscribe install-hook --uninstall` removes it). docs/install-crio-node.md explains each\n"
        "# setting. Reload CRI-O after a change (systemctl restart crio).\n"
        "\n[crio.runtime]\n"
        "# Where CRI-O reads hooks.d files; later directories take precedence.\n"
        f"hooks_dir = [\n{listed}]\n"
        "\n# CRI-O drops experimental annotations a runtime handler does not allow (matching by prefix,\n"
        "# so the per-container keys pass too). A later drop-in replaces a handler's whole entry: copy\n"
        "# any other field your distribution's config sets for these handlers.\n" + handlers
    )


def digest(data: str) -> str:
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


# -- the manifest ---------------------------------------------------------------------------------


@dataclass
class Manifest:
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of what was written
    dirs: list[str] = field(default_factory=list)  # directories made (removed if empty at uninstall)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.exists():
            return cls()
        try:
            doc = json.loads(fsutil.read_limited(path, 1 << 20))
            files = doc["files"]
            dirs = doc["dirs"]
            if not isinstance(files, dict) or not isinstance(dirs, list):
                raise TypeError("wrong types")
            return cls({str(k): str(v) for k, v in files.items()}, [str(d) for d in dirs])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InstallError(
                f"{path}: not a manifest install-hook can read ({exc}); remove what it lists by hand, "
                "then the file"
            ) from None

    def save(self, path: Path) -> None:
        doc = {"writtenBy": "syscribe install-hook", "files": self.files, "dirs": self.dirs}
        fsutil.write_atomic(path, json.dumps(doc, indent=2) + "\n", 0o644)


# -- the file work --------------------------------------------------------------------------------


def _current(path: Path) -> str | None:
    """The SHA-256 of the file at `path`, None when there is none; refuses what is not a file."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise InstallError(f"{path} exists and is not a regular file; install-hook leaves it alone")
    if not path.exists():
        return None
    return hashlib.sha256(fsutil.read_limited(path, 1 << 20)).hexdigest()


def _mkdirs(directory: Path, manifest: Manifest, done: list[str]) -> None:
    missing: list[Path] = []
    walk = directory
    while not walk.exists():
        missing.append(walk)
        walk = walk.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        manifest.dirs.append(str(d))
        done.append(f"created {d}/")


def _put(
    path: Path, content: str, manifest: Manifest, done: list[str], *, keep_existing: bool = False
) -> None:
    have = _current(path)
    want = digest(content)
    ours = manifest.files.get(str(path))
    if have is not None and ours is None:
        if keep_existing:
            done.append(f"kept {path} (it exists; install-hook does not replace a config)")
            return
        raise InstallError(
            f"{path} exists and was not written by install-hook; move it away (or merge it by hand) "
            "and run install-hook again"
        )
    if have is not None and have != ours:
        raise InstallError(
            f"{path} was changed since install-hook wrote it; keep your version by removing it from "
            f"{MANIFEST}, or move it away and run install-hook again"
        )
    if have == want:
        done.append(f"unchanged {path}")
        return
    _mkdirs(path.parent, manifest, done)
    fsutil.write_atomic(path, content, 0o644)
    manifest.files[str(path)] = want
    done.append(f"wrote {path}")


def install(layout: Layout, hook_path: str, *, isolated_script: str | None = None) -> list[str]:
    """Write the hook's files; what was done, one line each. InstallError leaves what was written so
    far listed in the manifest (so that --uninstall can remove it)."""
    if not os.path.isabs(hook_path) or not os.access(hook_path, os.X_OK):
        raise InstallError(f"{hook_path} is not an executable absolute path; install syscribe first")
    if isolated_script is not None and not (
        os.path.isabs(isolated_script) and os.path.isfile(isolated_script)
    ):
        raise InstallError(f"{isolated_script} is not the hook's isolated.py; install syscribe first")
    for name, p in (
        ("--hooks-dir", layout.hooks_dir),
        ("--config-dir", layout.config_dir),
        ("--output-root", layout.output_root),
    ):
        if not p.is_absolute():
            raise InstallError(f"{name} takes an absolute path, not {p}")
    done: list[str] = []
    manifest = Manifest.load(layout.manifest)
    try:
        _mkdirs(layout.config_dir, manifest, done)  # the manifest's home
        hooks_file = hooks_d(hook_path, str(layout.config_file), isolated_script=isolated_script)
        _put(layout.hooks_file, hooks_file, manifest, done)
        _put(
            layout.config_file,
            hook_config(str(layout.output_root), str(layout.config_dir)),
            manifest,
            done,
            keep_existing=True,
        )
        if not layout.output_root.exists():
            _mkdirs(layout.output_root, manifest, done)
        elif not layout.output_root.is_dir() or layout.output_root.is_symlink():
            raise InstallError(
                f"{layout.output_root} exists and is not a directory; the hook needs a real one"
            )
        if layout.crio_dir is not None:
            _put(layout.crio_dir / CRIO_FILE, crio_drop_in(str(layout.hooks_dir)), manifest, done)
    finally:
        manifest.save(layout.manifest)
    return done


def uninstall(layout: Layout) -> list[str]:
    """Remove what the manifest lists and is unchanged; what was done, one line each."""
    if not layout.manifest.exists():
        return [f"nothing to remove ({layout.manifest} does not exist)"]
    manifest = Manifest.load(layout.manifest)
    done: list[str] = []
    kept: dict[str, str] = {}
    for name, sha in sorted(manifest.files.items()):
        path = Path(name)
        try:
            have = _current(path)
        except InstallError as exc:
            done.append(f"kept {path}: {exc}")
            kept[name] = sha
            continue
        if have is None:
            continue
        if have != sha:
            done.append(f"kept {path}: changed since install-hook wrote it")
            kept[name] = sha
            continue
        path.unlink()
        done.append(f"removed {path}")
    if kept:
        manifest.files = kept
        manifest.save(layout.manifest)
        return done
    layout.manifest.unlink()
    for d in sorted(manifest.dirs, key=len, reverse=True):
        try:
            os.rmdir(d)
            done.append(f"removed {d}/")
        except FileNotFoundError:
            pass
        except OSError:
            done.append(f"kept {d}/ (not empty)")
    return done


def default_hook_path() -> str:
    """The `syscribe-hook` installed beside the running `syscribe` (the same environment)."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "syscribe-hook"
    if beside.exists():
        return str(beside.absolute())
    found = shutil.which("syscribe-hook")
    return os.path.abspath(found) if found else str(beside.absolute())


def default_isolated() -> tuple[str, str]:
    """This interpreter and the hook's isolated.py beside the installed package: the fast launcher."""
    import sys

    from syscribe import hooks

    return os.path.abspath(sys.executable), str(Path(hooks.__file__).absolute().parent / "isolated.py")
