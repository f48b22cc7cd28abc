"""Disk image copies: the source image is read progressively over the copy's whole duration.

Chunk ``i`` of ``CHUNKS`` is read at ``start + (i + 1) * duration / CHUNKS`` and covers the
fraction ``[i/CHUNKS, (i+1)/CHUNKS)`` of the source file's size *at that moment*. For a
fixed-size image (a disk) this is a block copy: blocks written during the copy land in it
if their turn has not come yet, so a write during the copy gives a torn copy. A file
that grows during the copy also comes out torn (neither the old nor the new version).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .state import ImageCopyRequest

CHUNKS = 64
log = logging.getLogger("skytap_simulator.disks")

DoneCallback = Callable[[ImageCopyRequest, "str | None"], None]


def copy_progressively(
    req: ImageCopyRequest,
    cancel: threading.Event,
    clock: Callable[[], float] = time.time,
) -> str | None:
    """Copy ``req.src`` to ``req.dst`` chunk by chunk on schedule; return an error or None."""
    src, dst = Path(req.src), Path(req.dst)
    duration = max(0.0, req.ready_at - req.start_at)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("wb") as out:
            for i in range(CHUNKS):
                due = req.start_at + (i + 1) * duration / CHUNKS
                if cancel.wait(max(0.0, due - clock())):
                    return "copy cancelled"
                out.write(_read_chunk(src, i))
    except OSError as exc:
        log.warning("disk image copy %s -> %s failed: %s", src, dst, exc)
        return "Disk copy failed: source disk image unreadable"
    return None


def _read_chunk(src: Path, index: int) -> bytes:
    """Bytes of chunk ``index`` of ``src`` as the file is right now (opened afresh)."""
    with src.open("rb") as fh:
        size = fh.seek(0, 2)
        lo, hi = index * size // CHUNKS, (index + 1) * size // CHUNKS
        fh.seek(lo)
        return fh.read(hi - lo)


class DiskCopier:
    """Runs each image copy in a daemon thread; never holds the state lock while sleeping."""

    def __init__(self, on_done: DoneCallback, clock: Callable[[], float] = time.time) -> None:
        self._on_done = on_done
        self._clock = clock
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, req: ImageCopyRequest) -> None:
        """Start copying ``req`` in the background."""
        with self._lock:
            cancel = self._cancel
        thread = threading.Thread(
            target=self._run, args=(req, cancel), name=f"disk-copy-{req.vm_id}", daemon=True
        )
        thread.start()

    def cancel_all(self) -> None:
        """Stop every running copy (used on reset); later copies get a fresh token."""
        with self._lock:
            self._cancel.set()
            self._cancel = threading.Event()

    def _run(self, req: ImageCopyRequest, cancel: threading.Event) -> None:
        error = copy_progressively(req, cancel, self._clock)
        if not cancel.is_set():
            self._on_done(req, error)
