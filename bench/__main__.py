"""All benchmarks, one after the other: `python -m bench` (or `make bench`).

Each prints its own table; run one alone with `python -m bench.recorder`, `bench.enricher`, ...
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

BENCHES = (
    "recorder",
    "resident",
    "enricher",
    "enricher_floor",
    "hook",
    "proctrack",
    "netlink",
    "following",
    "controller",
)


def main() -> int:
    failed = []
    for name in BENCHES:
        module = f"bench.{name}"
        if importlib.util.find_spec(module) is None:
            continue
        print(f"\n=== {module} ===", flush=True)
        if subprocess.run([sys.executable, "-m", module], check=False).returncode != 0:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
