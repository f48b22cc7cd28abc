"""What every benchmark shares: the machine it ran on, medians, and its section of the report.

Each benchmark is a module ``bench/<name>.py`` with ``main(argv) -> int``, run as
``.venv/bin/python -m bench.<name>`` from the repository's root (``make bench`` runs them all).
It writes its section with :func:`write_section`: ``bench/results/<name>.md`` (the prose and
tables a reader wants) and ``bench/results/<name>.json`` (the raw figures), both committed.
``bench/report.py`` joins the sections, in :data:`ORDER`, into ``bench/REPORT.md``.

The machines here are noisy (2 cores, shared): a section reports medians of several runs, and
compares two methods by a ratio measured side by side in one run, never by single times.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# The report's sections in the order; a module named here is run by `make bench`.
ORDER = (
    "freeze_window",  # 1. freeze window overhead, dags test and the real scheduler
    "fanout",  # 2. freeze + thaw wall time for 1, 4, 16, 32 hosts
    "seed_method",  # 3. the seed's controller script against ours, 16 hosts
    "api_cost",  # 4. requests per completed wait; worker slots while deferred
    "many_envs",  # 5. 20 backups at once under a rate limit
    "parse_import",  # 6. DAG parse time, provider import time
    "soak",  # reliability: 50 runs under 20% faults and a SIGKILL
    "faults",  # reliability: workers, triggerers, scheduler, Redis, PostgreSQL killed/restarted
    "bad_inputs",  # reliability: the catalogue of bad inputs
    "mysql_lock",  # issue 16, 4: the mysql profile's lock, FTWRL and BACKUP STAGE
)


def machine() -> dict[str, Any]:
    """The machine and software a figure was measured on, and how busy it was."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        from importlib.metadata import version

        airflow = version("apache-airflow")
    except Exception:  # only a label
        airflow = "?"
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "airflow": airflow,
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "commit": _commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _commit() -> str:
    """The short commit id, with ``+changes`` when tracked files differ from it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+changes" if dirty else "")


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip()


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of ``values`` (rounded to ms)."""
    vals = list(values)
    if not vals:
        return {"n": 0}
    return {
        "median": round(statistics.median(vals), 3),
        "min": round(min(vals), 3),
        "max": round(max(vals), 3),
        "n": len(vals),
    }


def fmt(stats: dict[str, float | int], unit: str = "s") -> str:
    """``1.234 s (1.1 to 1.5, n=5)`` for a :func:`summary`."""
    if not stats.get("n"):
        return "n/a"
    return (
        f"{stats['median']:.3f} {unit} ({stats['min']:.3f} to {stats['max']:.3f}, n={stats['n']})"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (monotonic)."""

    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._t0


def write_section(
    name: str,
    title: str,
    command: str,
    body: str,
    data: dict[str, Any],
    *,
    started: dict[str, Any] | None = None,
) -> Path:
    """Write ``bench/results/<name>.md`` and ``.json``: the section as the report shows it.

    :param name: the module's name (one of :data:`ORDER`)
    :param title: the section's heading
    :param command: the command that produced it, as a reader would type it
    :param body: the section's Markdown (figures, tables, what it means, what was found)
    :param data: the raw figures
    :param started: :func:`machine` taken when the run started (its load average is the one
        that matters); the end's is taken here
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = started or machine()
    end = machine()
    m = start
    head = (
        f"## {title}\n\n"
        f"Command: `{command}`  \n"
        f"Ran {m['date']} at commit {m['commit']} on {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, Airflow "
        f"{m['airflow']}; load average (1/5/15 min) {_load(start)} at the start, "
        f"{_load(end)} at the end.\n\n"
    )
    md = RESULTS / f"{name}.md"
    md.write_text(head + body.strip() + "\n")
    payload = {"name": name, "command": command, "machine": start, "machine_end": end, **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"wrote {md.relative_to(ROOT)}", file=sys.stderr)
    return md


def _load(m: dict[str, Any]) -> str:
    return "/".join(f"{x:.2f}" for x in m["load_1_5_15"])
