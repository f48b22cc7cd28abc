"""The mysql profile's two locks side by side on a private MariaDB: FLUSH TABLES WITH READ LOCK
against ``BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT``, with a 3 s ``UPDATE`` running when
the lock is asked for, and an InnoDB ``INSERT`` issued 0.2 s after the request.

Each repetition: the ``UPDATE`` starts; 0.3 s later a session asks for the lock (the statements
the profile sends, then a marker query); 0.2 s later another session's ``INSERT`` starts; once
the lock is held an Aria ``INSERT`` starts 0.1 s later; the lock is held 0.5 s, then released
(``UNLOCK TABLES`` / ``BACKUP STAGE END``). Times are from the lock request, on this process's
monotonic clock. The two locks alternate, so load changes fall on both.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.common import fmt, machine, summary, table, write_section

LOCKS = {
    "ftwrl": ("FLUSH TABLES WITH READ LOCK;", "UNLOCK TABLES;"),
    "backup_stage": ("BACKUP STAGE START; BACKUP STAGE BLOCK_COMMIT;", "BACKUP STAGE END;"),
}
HOLD = 0.5


def _tool(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise SystemExit(f"{name} is missing (make system-deps installs mariadb-server)")
    return found


class Server:
    """A throwaway mariadbd (datadir in a temp dir, socket only)."""

    def __init__(self, root: Path) -> None:
        self.data, self.sock = root / "data", root / "s.sock"
        self.data.mkdir()
        shutil.chown(root, "mysql")
        shutil.chown(self.data, "mysql")
        common = ["--no-defaults", "--user=mysql", f"--datadir={self.data}"]
        subprocess.run(
            [_tool("mariadb-install-db"), *common, "--auth-root-authentication-method=socket",
             "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [_tool("mariadbd"), *common, f"--socket={self.sock}", "--skip-networking",
             f"--pid-file={root / 'p.pid'}", f"--log-error={root / 'err'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while subprocess.run(self.args("SELECT 1"), capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"mariadbd did not start: {(root / 'err').read_text()[-2000:]}")
            time.sleep(0.1)

    def args(self, query: str | None = None) -> list[str]:
        base = [_tool("mariadb"), "--no-defaults", f"--socket={self.sock}", "--batch", "-N"]
        return base + (["-e", query] if query else ["--unbuffered"])

    def sql(self, query: str) -> str:
        return subprocess.run(self.args(query), capture_output=True, text=True, check=True).stdout

    def timed(self, query: str, out: dict[str, float], key: str) -> threading.Thread:
        """Run ``query`` in its own session in a thread; ``out[key]``: when it returned."""

        def run() -> None:
            subprocess.run(self.args(query), capture_output=True, check=True, timeout=120)
            out[key] = time.monotonic()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def one(server: Server, lock: str, n: int) -> dict[str, float]:
    take, release = LOCKS[lock]
    ends: dict[str, float] = {}
    update = server.timed("UPDATE app.t SET v = v + SLEEP(3) WHERE id = 1", ends, "update")
    time.sleep(0.3)
    session = subprocess.Popen(
        server.args(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert session.stdin is not None
    assert session.stdout is not None
    asked = time.monotonic()
    session.stdin.write(f"{take}\nSELECT 'locked';\n")
    session.stdin.flush()
    marker: list[str] = []

    def read_marker() -> None:
        assert session.stdout is not None
        marker.append(session.stdout.readline().strip())
        ends["held"] = time.monotonic()

    reader = threading.Thread(target=read_marker)
    reader.start()
    time.sleep(0.2)
    insert_at = time.monotonic()
    insert = server.timed(f"INSERT INTO app.t VALUES ({1000 + n}, 0)", ends, "insert")  # noqa: S608
    reader.join(timeout=120)
    assert marker == ["locked"], marker
    held = ends["held"]
    time.sleep(0.1)
    aria_at = time.monotonic()
    aria = server.timed(f"INSERT INTO app.a VALUES ({n})", ends, "aria")  # noqa: S608
    time.sleep(max(0.0, held + HOLD - time.monotonic()))
    session.stdin.write(f"{release}\nSELECT 'released';\n")
    session.stdin.flush()
    assert session.stdout.readline().strip() == "released"
    released = time.monotonic()
    session.stdin.close()
    session.wait(timeout=30)
    for thread in (update, insert, aria):
        thread.join(timeout=60)
    return {
        "lock_wait_s": held - asked,
        "insert_wait_s": ends["insert"] - insert_at,
        "aria_insert_wait_s": ends["aria"] - aria_at,
        "update_done_s": ends["update"] - asked,
        "released_s": released - asked,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    started = machine()
    root = Path(tempfile.mkdtemp(prefix="bench-mysql-lock-"))
    server = Server(root)
    try:
        version = server.sql("SELECT @@version").strip()
        server.sql(
            "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;"
            " INSERT INTO app.t VALUES (1, 0); CREATE TABLE app.a (n INT) ENGINE=Aria"
        )
        runs: dict[str, list[dict[str, float]]] = {lock: [] for lock in LOCKS}
        n = 0
        for rep in range(args.reps):
            order = list(LOCKS) if rep % 2 == 0 else list(reversed(LOCKS))
            for lock in order:
                n += 1  # each INSERT its own key
                runs[lock].append(one(server, lock, n))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    keys = ("lock_wait_s", "insert_wait_s", "update_done_s", "aria_insert_wait_s", "released_s")
    stats = {lock: {k: summary([r[k] for r in rs]) for k in keys} for lock, rs in runs.items()}
    rows = [[lock, *(fmt(stats[lock][k]) for k in keys)] for lock in LOCKS]
    body = (
        f"MariaDB {version}, a throwaway `mariadbd` (data on the local disk, no freeze). "
        + (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").strip()
        + "\n\n"
        + table(
            [
                "lock",
                "lock held after",
                "InnoDB INSERT (issued at 0.2 s) took",
                "3 s UPDATE (started at -0.3 s) done at",
                "Aria INSERT (issued while held) took",
                "released at",
            ],
            rows,
        )
        + "\n\nThe profile uses BACKUP STAGE where the server has it (`lock=auto`): FTWRL waits "
        "for the running statement while already blocking new writes, BACKUP STAGE is held at "
        "once; with either, commits and the Aria table wait for the release."
    )
    write_section(
        "mysql_lock",
        "The mysql profile's lock: FTWRL and BACKUP STAGE",
        f"PYTHONPATH=$PWD .venv/bin/python -m bench.mysql_lock --reps {args.reps}",
        body,
        {"version": version, "runs": runs, "stats": stats},
        started=started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
