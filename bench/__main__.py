"""``make bench``: run the benchmarks named in BENCH (default: all, in the report's order), each
in its own process so one failure does not stop the rest, then rewrite ``bench/REPORT.md``."""

from __future__ import annotations

import os
import subprocess
import sys

from bench import report
from bench.common import ORDER, ROOT


def main(argv: list[str]) -> int:
    names = argv or os.environ.get("BENCH", "").split() or list(ORDER)
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        print(f"BENCH: unknown benchmark {unknown}; known: {' '.join(ORDER)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"=== bench.{name}", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, check=False)
        if done.returncode:
            failed.append(f"{name} (exit {done.returncode})")
    report.main([])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
