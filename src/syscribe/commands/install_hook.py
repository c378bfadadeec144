"""`syscribe install-hook`: the hook's files on this node (syscribe.installhook)."""

from __future__ import annotations

from pathlib import Path

import click

from syscribe import installhook as ih
from syscribe.fsutil import FsError

_DIR = click.Path(file_okay=False, path_type=Path)


@click.command("install-hook", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--hooks-dir", type=_DIR, default=ih.HOOKS_DIR, show_default=True,
              help="The hooks.d directory CRI-O and podman read.")
@click.option("--config-dir", type=_DIR, default=ih.CONFIG_DIR, show_default=True,
              help="Where hook.json (and install-hook's manifest) go.")
@click.option("--output-root", type=_DIR, default=ih.OUTPUT_ROOT, show_default=True,
              help="The directory profiles may be written under.")
@click.option("--crio", is_flag=True, help="Also write the CRI-O drop-in (hooks_dir, allowed_annotations).")
@click.option("--crio-dir", type=_DIR, default=ih.CRIO_DIR, show_default=True,
              help="CRI-O's drop-in directory.")
@click.option("--launcher", type=click.Choice(["isolated", "script"]), default="isolated", show_default=True,
              help="isolated: this Python runs the hook with -I -S (no site: about 20 ms less per container "
                   "start); script: the syscribe-hook console script.")
@click.option("--hook-path", type=click.Path(dir_okay=False), default=None,
              help="With --launcher script, the syscribe-hook to register [default: the one installed "
                   "beside this syscribe].")
@click.option("--uninstall", is_flag=True, help="Remove what install-hook wrote (and nothing else).")
def install_hook(
    hooks_dir: Path, config_dir: Path, output_root: Path, crio: bool, crio_dir: Path,
    launcher: str, hook_path: str | None, uninstall: bool,
) -> None:
    """Register the recording hook: the hooks.d file, its config (unless one exists), the output root,
    and with --crio the CRI-O drop-in. Idempotent; never overwrites or removes a file it did not
    write (it keeps a manifest of what it wrote in the config directory)."""
    layout = ih.Layout(
        hooks_dir.absolute(), config_dir.absolute(), output_root.absolute(),
        crio_dir.absolute() if crio else None,
    )
    try:
        if uninstall:
            done = ih.uninstall(layout)
        elif launcher == "isolated" and hook_path is None:
            python, script = ih.default_isolated()
            done = ih.install(layout, python, isolated_script=script)
        else:
            done = ih.install(layout, hook_path or ih.default_hook_path())
    except (ih.InstallError, FsError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None
    for line in done:
        click.echo(line)
    if not uninstall and crio:
        click.echo("reload CRI-O to use it: systemctl restart crio")
