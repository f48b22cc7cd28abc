"""``make ui`` (``python -m demo.ui``) as a user runs it: the printed address answers with every
component healthy, the example DAGs are listed with both connections set, and Ctrl-C pressed
while a backup holds the VMs frozen stops everything, with no VM left frozen and nothing
left listening."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from demo import airflow_cli, lab
from tests.system import stack_services

pytestmark = [pytest.mark.slow, pytest.mark.vm, pytest.mark.timeout(300)]
BACKUP = "skytap_live_clone_backup"


class Output:
    """The lines a process prints, read on a thread, with a wait for one that matches."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if found := re.search(pattern, line):
                    return found
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                text = "\n".join(self.lines)
                raise AssertionError(f"make ui never printed /{pattern}/:\n{text}")
            self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_make_ui_serves_the_dags_and_ctrl_c_during_a_freeze_stops_it_all_nothing_frozen() -> None:
    if not hasattr(os, "killpg"):
        pytest.skip("needs POSIX process groups")
    reason = stack_services.unavailable()
    if reason:
        pytest.skip(f"make ui needs PostgreSQL and Redis: {reason}")
    if lab.unavailable() and lab.unavailable(rootless=True):
        pytest.skip(f"make ui needs the demo's VMs: {lab.unavailable(rootless=True)}")
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.ui"],
        cwd=airflow_cli.REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the test's SIGINT reaches it as a terminal's Ctrl-C would
    )
    out = Output(proc)
    try:
        url = out.wait_for(r"Airflow UI: (http://\S+)", timeout=180).group(1)
        user, password = out.wait_for(r"login: (\S+) / (\S+)", timeout=5).groups()
        out.wait_for(r"Ctrl-C stops everything", timeout=30)
        ports = [int(p) for p in re.findall(r"ssh 127\.0\.0\.1:(\d+)", out.text())]
        sim_url = out.wait_for(r"Skytap simulator: (http://\S+)", timeout=1).group(1)
        up = time.monotonic() - began
        with httpx.Client(base_url=url, timeout=30) as http:
            health = http.get("/api/v2/monitor/health").json()
            for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
                assert health[component]["status"] == "healthy", health
            token = http.post("/auth/token", json={"username": user, "password": password})
            assert token.status_code == 201, token.text
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
            dags = http.get("/api/v2/dags", headers=auth).json()["dags"]
            files = {Path(d["fileloc"]).name for d in dags}
            assert files == {p.name for p in airflow_cli.DAGS.glob("*.py")}, dags
            assert http.get("/api/v2/importErrors", headers=auth).json()["total_entries"] == 0
            conns = http.get("/api/v2/connections", headers=auth).json()["connections"]
            assert {"skytap_default", "skytap_vm_ssh"} <= {c["connection_id"] for c in conns}
            # A backup from the UI's Trigger button's request, with the defaults (the config
            # make ui wrote names what a rootless lab needs); Ctrl-C once the freeze task runs.
            conf: dict[str, object] = {}
            http.patch(f"/api/v2/dags/{BACKUP}", headers=auth, json={"is_paused": False})
            run = http.post(
                f"/api/v2/dags/{BACKUP}/dagRuns",
                headers=auth,
                json={"logical_date": None, "conf": conf},
            )
            assert run.status_code == 200, run.text
            run_id = run.json()["dag_run_id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ti = http.get(
                    f"/api/v2/dags/{BACKUP}/dagRuns/{run_id}/taskInstances/backup.freeze",
                    headers=auth,
                ).json()
                if ti.get("state") in ("running", "success", "failed"):
                    break
                time.sleep(0.3)
            assert ti.get("state") == "running", f"the freeze task never ran: {ti}"
        stop_began = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 0, out.text()
        stopped = time.monotonic() - stop_began
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out.wait_for(r"stopped: Airflow, the simulator and the VMs", timeout=5)
    assert "VMs frozen or paused when Airflow stopped: none" in out.text(), out.text()
    for port in [int(url.rsplit(":", 1)[1]), int(sim_url.rsplit(":", 1)[1]), *ports]:
        assert refuses(port), f"port {port} still answers after make ui stopped"
    print(out.text())
    print(f"make ui: up in {up:.0f} s, stopped in {stopped:.0f} s after Ctrl-C")
