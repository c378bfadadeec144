"""Syscall recorders: an eBPF program that counts the syscalls of one namespace.

`open_tracer` picks a backend; the backends' modules are imported only when chosen, so that the
container-start hook, which imports `syscribe.recorder.coreobject`, does not pay for bcc.
"""

from __future__ import annotations

import os

from syscribe.recorder.base import RecorderError, Tracer

BACKENDS = ("auto", "core", "bcc")


def _core() -> Tracer:
    from syscribe.recorder.coreobject import CoreTracer, check_kernel

    check_kernel()
    return CoreTracer()


def _bcc() -> Tracer:
    from syscribe.recorder.bcc import BccTracer, check_bcc

    check_bcc()
    return BccTracer()


def open_tracer(backend: str) -> Tracer:
    """A tracer of the named backend (auto|core|bcc), not yet attached.

    auto: core when the kernel has BTF and libbpf loads, else bcc. RecorderError says what is missing
    and what to install.
    """
    if backend not in BACKENDS:
        shown = backend if len(backend) <= 40 else backend[:40] + "..."
        raise RecorderError(f"unknown recorder backend {shown!r}; use one of: {', '.join(BACKENDS)}")
    if os.geteuid() != 0:
        raise RecorderError("recording syscalls with eBPF needs root; run as root (e.g. sudo)")
    if backend == "core":
        return _core()
    if backend == "bcc":
        return _bcc()
    try:
        return _core()
    except RecorderError as core_problem:
        try:
            return _bcc()
        except RecorderError as bcc_problem:
            raise RecorderError(
                f"no recorder backend can run here: core: {core_problem}; bcc: {bcc_problem}"
            ) from None
