"""Join ``bench/results/<name>.md`` into ``bench/REPORT.md``, in the issue's order."""

from __future__ import annotations

import sys

from bench.common import ORDER, RESULTS, ROOT

INTRO = """# Benchmarks and the reliability soak: the last report

Made by `make bench` (every section, then this file) or `make bench BENCH="fanout soak"` (those
sections again; the others are kept as they were). Each section names the command that produced
it, the commit and the machine it ran on, and how busy that machine was. The machines here are
noisy (2 shared cores): times are medians of several runs, and two methods are compared by a
ratio measured side by side in one run. The raw figures are in `bench/results/<name>.json`.
No test in `make test` asserts a time.
"""


def assemble() -> str:
    parts = [INTRO]
    for name in ORDER:
        md = RESULTS / f"{name}.md"
        if md.exists():
            parts.append(md.read_text().strip())
        else:
            parts.append(f"## {name}\n\nNot measured yet: `.venv/bin/python -m bench.{name}`.")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    out = ROOT / "bench" / "REPORT.md"
    out.write_text(assemble())
    print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
