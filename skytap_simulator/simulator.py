"""The running simulator: state, faults, rate limiter, disk copier and request log together."""

from __future__ import annotations

import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .disks import DiskCopier
from .faults import FaultEngine, FaultSettings, RateLimiter
from .seed import build_state, default_seed
from .state import ImageCopyRequest, SimState, load_state_file

REQUEST_LOG_LIMIT = 10_000


class RequestLog:
    """The last requests seen (``GET /_sim/requests``), oldest first."""

    def __init__(self, limit: int = REQUEST_LOG_LIMIT) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)

    def add(self, entry: dict[str, Any]) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)

    def update(self, entry: dict[str, Any], **changes: Any) -> None:
        """Fill in an entry once its request is answered."""
        with self._lock:
            entry.update(changes)

    def entries(self) -> list[dict[str, Any]]:
        """All recorded requests (copies)."""
        with self._lock:
            return [dict(e) for e in self._entries]

    def clear(self) -> None:
        """Forget every request."""
        with self._lock:
            self._entries.clear()


class Simulator:
    """One simulated Skytap account and its fault settings."""

    def __init__(
        self,
        *,
        seed: dict[str, Any] | None = None,
        data_dir: Path | None = None,
        state_file: Path | None = None,
        config_overrides: dict[str, Any] | None = None,
        faults: FaultSettings | None = None,
    ) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="skytap-sim-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_overrides = dict(config_overrides or {})
        self.faults = FaultEngine()
        self.limiter = RateLimiter()
        self.requests = RequestLog()
        self.copier = DiskCopier(self._image_done, clock=time.time)
        if state_file is not None and state_file.exists():
            doc = load_state_file(state_file)
            doc.config = doc.config.model_copy(update=self.config_overrides)
        else:
            doc = build_state(seed or default_seed(), self.config_overrides)
        self.state = SimState(
            doc, data_dir=self.data_dir, image_runner=self.copier, state_file=state_file
        )
        self.state.start()
        if faults is not None:
            self.faults.replace(faults)

    def _image_done(self, req: ImageCopyRequest, error: str | None) -> None:
        self.state.image_done(req, error)

    def reset(self, seed: dict[str, Any] | None = None) -> None:
        """New state from ``seed`` (default: built-in), no faults, empty log, startup config."""
        doc = build_state(seed or default_seed(), self.config_overrides)
        self.copier.cancel_all()
        self.state.replace(doc)
        self.faults.replace(FaultSettings())
        self.limiter.reset()
        self.requests.clear()
