"""`syscribe recorder`'s command line: broken configs and options fail with one line, before any eBPF
is loaded."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from syscribe.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["recorder", *args])
    return result.exit_code, result.output


def test_help_names_the_options() -> None:
    code, out = run("--help")
    assert code == 0
    for option in ("--config", "--socket", "--pin-dir", "--state-dir", "--slots", "--max-pending",
                   "--unload"):
        assert option in out


def test_a_missing_named_config_is_one_line(tmp_path: Path) -> None:
    code, out = run("--config", str(tmp_path / "none.json"))
    assert code == 1 and out.count("\n") == 1 and "none.json" in out


def test_a_broken_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "hook.json"
    bad.write_text('{"recorderSocket": "relative"}')
    code, out = run("--config", str(bad))
    assert code == 1 and "recorderSocket must be an absolute path" in out


def test_no_socket_anywhere_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "hook.json"
    config.write_text('{"recorderSocket": null}')
    code, out = run("--config", str(config))
    assert code == 1 and "recorderSocket is null" in out
    code, out = run("--config", str(config), "--socket", "rel.sock")
    assert code == 1 and "must be absolute" in out


def test_out_of_range_options_are_usage_errors() -> None:
    for args in (["--slots", "0"], ["--slots", "1000000"], ["--max-pending", "0"], ["--read-seconds", "-1"]):
        code, out = run(*args)
        assert code == 2, (args, out)
