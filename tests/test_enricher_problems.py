"""One enumeration of what the enricher reports (enricher/problems.py), every problem counted and
exported in syscribe_enricher_problems_total{kind}."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from syscribe.enricher.containers import Lookup
from syscribe.enricher.events import EventAssembler
from syscribe.enricher.metrics import Metrics
from syscribe.enricher.output import OutputWriter
from syscribe.enricher.pipeline import CheckpointSaveError, Pipeline, Settings, Stats
from syscribe.enricher.problems import NOTICES, PROBLEMS
from syscribe.enricher.reporter import Reporter
from syscribe.enricher.sources import FileSource

ENRICHER = Path(__file__).parent.parent / "enricher"
# The enricher's pod labels come through the shared list+watch, which reports the API's codes.
SHARED = [Path(__file__).parent.parent / "src" / "syscribe" / "kube.py"]
# What reports a code: the Reporter and the callables handed down to the parts (report, _report), the
# file follower's own (_say, _cannot).
REPORTERS = {"report", "_report", "_say", "_cannot"}


def reported_codes() -> dict[str, list[str]]:
    """Every code literal the enricher's source hands to a reporter, with where."""
    found: dict[str, list[str]] = {}
    for path in [*sorted(ENRICHER.glob("*.py")), *SHARED]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in REPORTERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, []).append(f"{path.name}:{node.lineno}")
    return found


def test_every_reported_code_is_enumerated_and_every_enumerated_code_is_reported() -> None:
    codes = reported_codes()
    assert len(codes) > 20  # the scan sees the reporters
    unknown = {code: where for code, where in codes.items() if code not in PROBLEMS | NOTICES}
    assert unknown == {}
    assert set(codes) == PROBLEMS | NOTICES  # nothing enumerated that nothing reports
    assert not PROBLEMS & NOTICES


def sample(metrics: Metrics, kind: str) -> float | None:
    return metrics.registry.get_sample_value("syscribe_enricher_problems_total", {"kind": kind})


def test_every_problem_is_exported_from_the_start_and_counted() -> None:
    metrics = Metrics()
    text = generate_latest(metrics.registry).decode()
    for kind in PROBLEMS:
        assert f'syscribe_enricher_problems_total{{kind="{kind}"}} 0.0' in text
    report = Reporter(metrics, Stats(), quiet=True)
    for kind in sorted(PROBLEMS | NOTICES):
        report(kind, "something happened")
    assert {kind: sample(metrics, kind) for kind in PROBLEMS} == dict.fromkeys(PROBLEMS, 1.0)
    assert {kind: sample(metrics, kind) for kind in NOTICES} == dict.fromkeys(NOTICES, None)


def test_a_checkpoint_that_cannot_be_written_stops_the_run_before_it_writes(tmp_path: Path) -> None:
    """The first checkpoint is saved before any output; when it cannot be, the run ends there (one
    line, exit 1 from the CLI) rather than write what a restart could not account for."""
    log = tmp_path / "audit.log"
    log.write_text(
        "type=SECCOMP msg=audit(1700000000.001:1): auid=0 uid=0 gid=0 ses=1 pid=5 comm=\"sh\" "
        'exe="/bin/sh" sig=0 arch=c000003e syscall=3 compat=0 ip=0x1 code=0x7ffc0000\n'
    )
    (tmp_path / "file").write_text("")
    metrics = Metrics()
    stats = Stats()
    pipeline = Pipeline(
        FileSource("auditd", log, follow=False, start="beginning", mark=None), EventAssembler(),
        _Nobody(), OutputWriter(tmp_path / "out.json"), Settings(node="n"),
        checkpoint_path=tmp_path / "file" / "cp.json",  # its folder is a file
        metrics=metrics, stats=stats, report=Reporter(metrics, stats, quiet=True),
    )
    with pytest.raises(CheckpointSaveError, match="cannot save the checkpoint"):
        pipeline.run()
    assert not (tmp_path / "out.json").exists() or (tmp_path / "out.json").read_text() == ""
    assert sample(metrics, "checkpoint_error") == 0  # exported from the start, as every problem


class _Nobody:
    def lookup(self, pid: int, at: float | None = None) -> Lookup:
        return Lookup(None, True)
