"""Every code the enricher reports (Reporter: counted, and printed as one line on stderr), in one place.

A Problem is something that went wrong or may have cost records: each is counted in
`syscribe_enricher_problems_total{kind}`, and every kind is exported (at 0) from the start, so that an
alert can be written for one that never happened yet. A Notice is a normal happening worth a line
(a rotation followed, a recovery): printed, not counted as a problem.

The codes are plain strings (StrEnum) where they are reported; `tests/test_enricher_problems.py` checks
that every code the enricher's source reports is named here, and that every problem is exported.
"""

from __future__ import annotations

from enum import StrEnum


class Problem(StrEnum):
    # the input file (follow.py, sources.py)
    UNREADABLE = "unreadable"
    NOT_REGULAR = "not_regular"
    SYMLINK = "symlink"
    OPEN_ERROR = "open_error"
    READ_ERROR = "read_error"
    STAT_ERROR = "stat_error"
    MISSING = "missing"
    OVERSIZED_LINE = "oversized_line"
    TRUNCATED = "truncated"  # copytruncate with no copy that holds the rest: lines may be lost
    CHECKPOINT_GONE = "checkpoint_gone"  # what the checkpoint read is in no file any more
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # the checkpoint names a line the file does not hold there
    CHECKPOINT_RELOCATED = "checkpoint_relocated"  # its line found elsewhere in the file: resumed after it
    # kmsg and netlink (sources.py)
    KMSG_LOST = "kmsg_lost"
    RATELIMITED = "ratelimited"
    NETLINK_OVERRUN = "netlink_overrun"
    FOREIGN = "foreign"  # an audit-looking line written to /dev/kmsg by userspace
    # the pipeline (pipeline.py)
    OUTPUT_FULL = "output_full"
    RESOLVER_ERROR = "resolver_error"
    CHECKPOINT_ERROR = "checkpoint_error"  # the checkpoint could not be written
    CHECKPOINT_OTHER_SOURCE = "checkpoint_other_source"
    OUTPUT_MISMATCH = "output_mismatch"  # the output's recorded end is no line it wrote: lines may repeat
    TEXTFILE_ERROR = "textfile_error"
    # the process tracker (proctrack.py)
    PROCTRACK_ERROR = "proctrack_error"
    PROCTRACK_OVERRUN = "proctrack_overrun"
    # the Kubernetes API (kube.py)
    KUBE_UNREACHABLE = "kube_unreachable"


class Notice(StrEnum):
    ROTATED = "rotated"
    RESUMED_ROTATED = "resumed_rotated"
    NO_CHECKPOINT = "no_checkpoint"
    NEW_BOOT = "new_boot"
    OUTPUT_ROLLED_BACK = "output_rolled_back"  # lines after the last checkpoint cut, written again
    KUBE_RECOVERED = "kube_recovered"


PROBLEMS: frozenset[str] = frozenset(Problem)
NOTICES: frozenset[str] = frozenset(Notice)
