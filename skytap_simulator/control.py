"""Start and drive a simulator from tests, demos and benchmarks (stdlib only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

PACKAGE_PARENT = Path(__file__).resolve().parent.parent


class SimulatorError(RuntimeError):
    """The simulator did not start, or an admin call failed."""


class SimulatorAdmin:
    """Client of the ``/_sim/*`` admin API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        url = f"{self.url}/_sim/{path}"
        if not url.startswith(("http://", "https://")):
            raise SimulatorError(f"not an http URL: {url}")
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise SimulatorError(f"{method} /_sim/{path}: {exc.code} {detail}") from exc

    def health(self) -> bool:
        """True when the simulator answers."""
        return bool(self._call("GET", "health").get("ok"))

    def reset(self, seed: dict[str, Any] | None = None) -> None:
        """Reset state, faults, request log and config (``seed`` or the built-in one)."""
        self._call("POST", "reset", seed)

    def config(self, **changes: Any) -> dict[str, Any]:
        """Change settings (none given: just read them); returns the full config."""
        if not changes:
            result: dict[str, Any] = self._call("GET", "config")
            return result
        result = self._call("POST", "config", changes)
        return result

    def faults(self, **settings: Any) -> dict[str, Any]:
        """Replace the fault settings; returns them."""
        result: dict[str, Any] = self._call("POST", "faults", settings)
        return result

    def get_faults(self) -> dict[str, Any]:
        """The current fault settings (rule counts show what is left)."""
        result: dict[str, Any] = self._call("GET", "faults")
        return result

    def clear_faults(self) -> None:
        """No faults."""
        self._call("POST", "faults", {})

    def state(self) -> dict[str, Any]:
        """Everything, including deleted resources and disk image paths."""
        result: dict[str, Any] = self._call("GET", "state")
        return result

    def suspended(self) -> list[dict[str, Any]]:
        """Every VM a copy or save suspended because it did not ask for a live clone."""
        result: dict[str, Any] = self._call("GET", "suspended")
        vms: list[dict[str, Any]] = result["vms"]
        return vms

    def suspended_count(self) -> int:
        """How many VMs copies suspended (0 when every copy was a live clone)."""
        return len(self.suspended())

    def restored(self) -> list[dict[str, Any]]:
        """Every environment made from a template (deleted ones too): id, template_id,
        runstate, deleted, deleting."""
        result: dict[str, Any] = self._call("GET", "restored")
        envs: list[dict[str, Any]] = result["environments"]
        return envs

    def restored_left(self) -> list[dict[str, Any]]:
        """Environments made from a template that are still there and not being deleted."""
        return [e for e in self.restored() if not e["deleted"] and not e["deleting"]]

    def booted(self, environment_id: str, ports: dict[str, int]) -> None:
        """Tell the simulator a hypervisor booted these VMs (VM id -> its SSH port)."""
        self._call("POST", f"configurations/{environment_id}/booted", {"vms": ports})

    def requests(self) -> list[dict[str, Any]]:
        """The API request log."""
        result: list[dict[str, Any]] = self._call("GET", "requests")
        return result

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._call("DELETE", "requests")


class SimulatorProcess:
    """``python -m skytap_simulator`` in a subprocess on a free loopback port."""

    def __init__(
        self,
        *,
        seed: Path | None = None,
        state_file: Path | None = None,
        data_dir: Path | None = None,
        time_scale: float | None = None,
        faults: dict[str, Any] | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 20.0,
        python: str = sys.executable,
    ) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="skytap-simproc-"))
        self.log_path = self._workdir / "simulator.log"
        self._port_file = self._workdir / "port"
        self.host = host
        self.startup_timeout = startup_timeout
        self._args = [python, "-m", "skytap_simulator", "--host", host, "--port", "0"]
        self._args += ["--port-file", str(self._port_file)]
        for flag, value in (("--seed", seed), ("--state-file", state_file)):
            if value is not None:
                self._args += [flag, str(value)]
        self._args += ["--data-dir", str(data_dir or self._workdir / "data")]
        if time_scale is not None:
            self._args += ["--time-scale", str(time_scale)]
        if faults is not None:
            self._args += ["--faults", json.dumps(faults)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None
        self.url = ""

    @property
    def admin(self) -> SimulatorAdmin:
        """Admin client for this process."""
        return SimulatorAdmin(self.url)

    def start(self) -> SimulatorProcess:
        """Start and wait until ``/_sim/health`` answers."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._port_file.unlink(missing_ok=True)
        self._final_log = None
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self._args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise SimulatorError(
                    f"simulator exited with {self._proc.returncode}:\n{self.read_log()}"
                )
            if self._port_file.exists() and self._healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise SimulatorError(
            f"simulator not healthy after {self.startup_timeout}s:\n{self.read_log()}"
        )

    def _healthy(self) -> bool:
        port = self._port_file.read_text().strip()
        if not port:
            return False
        self.url = f"http://{self.host}:{port}"
        try:
            return SimulatorAdmin(self.url, timeout=2).health()
        except (OSError, SimulatorError, ValueError):
            return False

    def read_log(self) -> str:
        """The simulator's stderr so far (kept in memory once stopped)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate (then kill after 5 s); remove the private work dir (log kept in memory)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._final_log is None and self._workdir.exists():
            self._final_log = self.read_log()
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
