"""The recorder's pure parts: map layouts, per-CPU sums, namespace encodings, names, exit statuses."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syscribe import arch as archmod
from syscribe.recorder import bcc, coreobject
from syscribe.recorder.base import RecorderError, Recording, Target
from syscribe.recorder.names import name_recording
from syscribe.usercommand import shell_status

KINDS = coreobject.kinds_for(archmod.X86_64)


def per_cpu(words_per_cpu: list[list[int]]) -> bytes:
    return b"".join(struct.pack(f"={len(w)}Q", *w) for w in words_per_cpu)


class TestConfig:
    def test_packs_inode_and_mode(self) -> None:
        assert coreobject.config_bytes(4026531841, coreobject.COMPAT_X86) == struct.pack("=II", 4026531841, 1)

    @pytest.mark.parametrize("inode", [0, -1, 1 << 32, 1 << 64, -(1 << 70)])
    def test_rejects_inodes_out_of_range(self, inode: int) -> None:
        with pytest.raises(RecorderError, match="out of range"):
            coreobject.config_bytes(inode, coreobject.COMPAT_NONE)

    @pytest.mark.parametrize("mode", [-1, 2, 1 << 40])
    def test_rejects_unknown_compat_modes(self, mode: int) -> None:
        with pytest.raises(RecorderError, match="compat mode"):
            coreobject.config_bytes(1, mode)

    def test_compat_only_on_x86_64(self) -> None:
        assert coreobject.compat_mode_for(archmod.X86_64) == coreobject.COMPAT_X86
        assert coreobject.compat_mode_for(archmod.BY_NAME["aarch64"]) == coreobject.COMPAT_NONE
        assert coreobject.kinds_for(archmod.X86_64) == (archmod.X86_64, archmod.I386, archmod.X32)
        aarch64 = archmod.BY_NAME["aarch64"]
        assert coreobject.kinds_for(aarch64) == (aarch64, aarch64, aarch64)


class TestPerCpu:
    def test_sums_every_cpu(self) -> None:
        raw = per_cpu([[1, 2, 3], [10, 20, 30], [100, 0, 0]])
        assert coreobject.sum_per_cpu(raw, 3, 24) == [111, 22, 33]

    @pytest.mark.parametrize(
        ("raw", "ncpu", "size"),
        [
            (b"", 1, 8),  # nothing
            (b"\0" * 15, 2, 8),  # short
            (b"\0" * 24, 2, 8),  # long
            (b"\0" * 16, 0, 8),  # no CPUs
            (b"\0" * 16, -2, 8),
            (b"\0" * 12, 1, 12),  # not whole words
        ],
    )
    def test_rejects_buffers_that_do_not_fit(self, raw: bytes, ncpu: int, size: int) -> None:
        with pytest.raises(RecorderError):
            coreobject.sum_per_cpu(raw, ncpu, size)

    def test_huge_counts_do_not_wrap(self) -> None:
        top = (1 << 64) - 1
        assert coreobject.sum_per_cpu(per_cpu([[top], [top]]), 2, 8) == [2 * top]

    def test_full_counter_block_of_many_cpus(self) -> None:
        ncpu = 64
        words = [[0] * coreobject.COUNTERS_WORDS for _ in range(ncpu)]
        for cpu in range(ncpu):
            words[cpu][0] = 1  # read on every CPU
            words[cpu][coreobject.NR_SLOTS + 20] = 2  # i386 getpid
            words[cpu][-1] = cpu  # lost
        totals = coreobject.sum_per_cpu(per_cpu(words), ncpu, coreobject.COUNTERS_SIZE)
        counts, lost = coreobject.decode_counters(totals, KINDS)
        assert counts == {(archmod.X86_64, 0): ncpu, (archmod.I386, 20): 2 * ncpu}
        assert lost == sum(range(ncpu))


class TestDecode:
    def test_kinds_keep_their_own_numbering(self) -> None:
        totals = [0] * coreobject.COUNTERS_WORDS
        totals[39] = 5  # x86_64 getpid
        totals[coreobject.NR_SLOTS + 39] = 6  # i386 39 is mkdir
        totals[2 * coreobject.NR_SLOTS + 39] = 7  # x32 getpid
        counts, lost = coreobject.decode_counters(totals, KINDS)
        assert counts == {(archmod.X86_64, 39): 5, (archmod.I386, 39): 6, (archmod.X32, 39): 7}
        assert lost == 0

    @pytest.mark.parametrize(
        "length", [0, 1, coreobject.COUNTERS_WORDS - 1, coreobject.COUNTERS_WORDS + 1, 10**6]
    )
    def test_rejects_wrong_block_sizes(self, length: int) -> None:
        with pytest.raises(RecorderError, match="counter block"):
            coreobject.decode_counters([0] * length, KINDS)

    def test_extra_keeps_negative_and_huge_numbers(self) -> None:
        key = coreobject.EXTRA_KEY.pack((1 << 64) - 1, 0, 0)
        assert coreobject.decode_extra(key, 3, KINDS) == ((archmod.X86_64, -1), 3)
        key = coreobject.EXTRA_KEY.pack(5000, 2, 0)
        assert coreobject.decode_extra(key, 1, KINDS) == ((archmod.X32, 5000), 1)

    @pytest.mark.parametrize("kind", [3, 255, 0xFFFFFFFF])
    def test_extra_rejects_unknown_kinds(self, kind: int) -> None:
        with pytest.raises(RecorderError, match="unknown kind"):
            coreobject.decode_extra(coreobject.EXTRA_KEY.pack(1, kind, 0), 1, KINDS)

    @pytest.mark.parametrize("key", [b"", b"\0" * 15, b"\0" * 17])
    def test_extra_rejects_malformed_keys(self, key: bytes) -> None:
        with pytest.raises(struct.error):
            coreobject.decode_extra(key, 1, KINDS)

    def test_merge_adds_and_skips_zero(self) -> None:
        into = {(archmod.X86_64, 1): 1}
        more = [((archmod.X86_64, 1), 2), ((archmod.I386, 1), 0), ((archmod.X32, 9), 4)]
        coreobject.merge_counts(into, more)
        assert into == {(archmod.X86_64, 1): 3, (archmod.X32, 9): 4}


class TestNames:
    def rec(self, counts: dict[tuple[archmod.Arch, int], int]) -> Recording:
        r = Recording(backend="test")
        r.counts = defaultdict(int, counts)
        return r

    def test_names_per_architecture(self) -> None:
        named = name_recording(
            self.rec(
                {(archmod.X86_64, 39): 1, (archmod.I386, 20): 1, (archmod.X32, 39): 1, (archmod.I386, 39): 1}
            )
        )
        assert named.by_arch[archmod.X86_64] == {"getpid"}
        assert named.by_arch[archmod.I386] == {"getpid", "mkdir"}
        assert named.by_arch[archmod.X32] == {"getpid"}
        assert named.names == {"getpid", "mkdir"}
        assert not named.unknown

    def test_unknown_numbers_are_kept_and_reported(self) -> None:
        named = name_recording(
            self.rec({(archmod.X86_64, 0): 1, (archmod.X86_64, 5000): 2, (archmod.X86_64, -1): 1,
                      (archmod.I386, 1 << 40): 1})
        )
        assert named.names == {"read"}
        assert named.unknown == {archmod.X86_64: {5000, -1}, archmod.I386: {1 << 40}}
        lines = named.warnings()
        assert len(lines) == 2
        assert "-1, 5000" in lines[1] and "x86_64" in lines[1]

    def test_zero_counts_are_not_calls(self) -> None:
        named = name_recording(self.rec({(archmod.X86_64, 0): 0}))
        assert named.names == frozenset()
        assert not named.by_arch and not named.unknown

    def test_result_is_read_only(self) -> None:
        named = name_recording(self.rec({(archmod.X86_64, 0): 1}))
        with pytest.raises(TypeError):
            named.by_arch[archmod.I386] = frozenset()  # type: ignore[index]

    @given(st.dictionaries(st.tuples(st.sampled_from(KINDS), st.integers(-(1 << 63), 1 << 64)),
                           st.integers(1, 1 << 64), max_size=50))
    def test_every_number_is_named_or_unknown(self, counts: dict[tuple[archmod.Arch, int], int]) -> None:
        named = name_recording(self.rec(counts))
        for a, nr in counts:
            unknown = nr in named.unknown.get(a, frozenset())
            assert unknown or named.by_arch[a]


class TestBccEncodings:
    def test_kernel_dev_encoding(self) -> None:
        assert bcc.kernel_dev(os.makedev(0, 4)) == 4
        assert bcc.kernel_dev(os.makedev(8, 1)) == (8 << 20) | 1
        assert bcc.kernel_dev(os.makedev(0, 300)) == 300

    def test_cflags_carry_the_target(self) -> None:
        target = Target(pid=1, mnt_ns=2, pid_ns_dev=os.makedev(0, 4), pid_ns_ino=4026531836)
        flags = bcc.cflags(target, True, 16)
        assert "-DPIDNS_DEV=4ULL" in flags and "-DPIDNS_INO=4026531836ULL" in flags
        assert "-DCOMPAT_X86=1" in flags and "-DTI_STATUS_OFFSET=16" in flags

    @pytest.mark.parametrize(("dev", "ino"), [(-1, 1), (0, 0), (0, -5), (1 << 64, 1), (0, 1 << 64)])
    def test_cflags_reject_hostile_targets(self, dev: int, ino: int) -> None:
        with pytest.raises(RecorderError, match="out of range"):
            bcc.cflags(Target(pid=1, mnt_ns=1, pid_ns_dev=dev, pid_ns_ino=ino), False, -1)

    def test_no_btf_means_no_offset(self, tmp_path: Path) -> None:
        assert bcc.status_offset(None) == bcc.NO_OFFSET
        assert bcc.status_offset(tmp_path / "missing") == bcc.NO_OFFSET

    def test_garbage_btf_means_no_offset(self, tmp_path: Path) -> None:
        junk = tmp_path / "vmlinux"
        junk.write_bytes(b"\x9f\xeb" + os.urandom(4096))
        assert bcc.status_offset(junk) == bcc.NO_OFFSET

    def test_bcc_program_reads_no_struct_by_header_offsets(self) -> None:
        # The trap: any `->` on a kernel struct would be compiled with the headers' offsets.
        assert "->nsproxy" not in bcc.PROGRAM and "task_struct" not in bcc.PROGRAM
        assert "bpf_get_ns_current_pid_tgid" in bcc.PROGRAM


class TestShellStatus:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [(0, 0), (3 << 8, 3), (255 << 8, 255), (signal.SIGKILL, 137), (signal.SIGTERM, 143)],
    )
    def test_like_a_shell(self, status: int, expected: int) -> None:
        assert shell_status(status) == expected



def test_core_import_path_stays_lean() -> None:
    """The container-start hook imports the core backend; it must not drag in click, yaml or bcc."""
    code = (
        "import sys, syscribe.recorder.coreobject\n"
        "heavy = {'click', 'yaml', 'bcc', 'kubernetes', 'orjson', 'watchdog', 'hypothesis'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
