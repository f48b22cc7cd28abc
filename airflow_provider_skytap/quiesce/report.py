"""What a quiesce session reports: one typed record per host, and the summaries as XCom.

Times on a VM are that VM's own clock; durations are differences on one clock only: a host's
``seconds_frozen`` on its own clock, the whole freeze window on the controller's monotonic
clock (each host's freeze and thaw placed on it by the host's own measure of how long before
its answer they happened). A VM clock far from the controller's is logged, never subtracted.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from airflow_provider_skytap.quiesce import commands as qc

APPLICATION_CONSISTENT = "application-consistent"
CRASH_CONSISTENT = "crash-consistent"
INCONSISTENT = "inconsistent"
_WORST = {APPLICATION_CONSISTENT: 0, CRASH_CONSISTENT: 1, INCONSISTENT: 2}
# A VM clock further than this from the controller's is logged as a warning.
CLOCK_TOLERANCE = 1.0

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def boot_id() -> str:
    """This machine's boot id: monotonic readings compare only within one boot of one machine."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"pid-{id(boot_id)}"  # no boot id: readings compare within this process only


@dataclass(frozen=True)
class Answer:
    """One guardian command's answer and when it came, on the controller's clocks."""

    report: dict[str, Any]
    sent_wall: float
    received_wall: float
    received_mono: float

    @property
    def host_now(self) -> float | None:
        return epoch(self.report.get("now"))

    def ago(self, moment: float | None) -> float | None:
        """Seconds between ``moment`` (this host's clock) and the answer, on this host's clock."""
        now = self.host_now
        if moment is None or now is None:
            return None
        return max(0.0, now - moment)

    def clock_offset(self) -> float | None:
        """This host's clock minus the controller's, 0 when within the round trip's span."""
        now = self.host_now
        if now is None:
            return None
        if self.sent_wall - CLOCK_TOLERANCE <= now <= self.received_wall + CLOCK_TOLERANCE:
            return 0.0
        mid = (self.sent_wall + self.received_wall) / 2
        return round(now - mid, 3)


@dataclass
class HostReport:
    """One host's part of a freeze or a release; :meth:`to_xcom` is its JSON form.

    :param host: the target's label (as in log lines and errors)
    :param target: the target's stable key
    :param guardian_id: the guardian's name on the VM
    :param profile: the quiesce profile
    """

    host: str
    target: str
    guardian_id: str
    profile: str
    status: str = "not-frozen"
    guardian: str | None = None
    fired_by: str | None = None
    pid: int | None = None
    frozen_at: float | None = None  # this host's clock
    deadline_at: float | None = None
    thawed_at: float | None = None
    mounts: dict[str, str] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    consistency: str = CRASH_CONSISTENT
    error: str | None = None
    clock_offset: float | None = None
    # When the freeze and the thaw happened on the controller's monotonic clock, and its boot.
    frozen_mono: float | None = None
    thawed_mono: float | None = None
    mono_boot: str | None = None

    @property
    def guardian_fired(self) -> bool:
        return self.fired_by in qc.GUARDIAN_FIRED

    @property
    def seconds_frozen(self) -> float | None:
        return seconds(self.frozen_at, self.thawed_at)

    def note_clock(self, answer: Answer) -> None:
        """Keep the host's clock offset; warn when it is more than a second off."""
        offset = answer.clock_offset()
        self.clock_offset = offset
        if offset:
            log.warning(
                "%s: the VM's clock is %+.1f s off the controller's; durations are measured on "
                "one clock each, never across the two",
                self.host,
                offset,
            )

    def freeze_xcom(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "target": self.target,
            "guardian_id": self.guardian_id,
            "profile": self.profile,
            "status": self.status,
            "frozen_at": iso(self.frozen_at),
            "deadline_at": iso(self.deadline_at),
            "pid": self.pid,
            "mounts": dict(self.mounts),
            "exit_codes": dict(self.exit_codes),
            "consistency": self.consistency,
            "error": self.error,
            "clock_offset": self.clock_offset,
            "controller": {"boot_id": self.mono_boot, "frozen_at_monotonic": self.frozen_mono},
        }

    def thaw_xcom(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "target": self.target,
            "guardian_id": self.guardian_id,
            "profile": self.profile,
            "guardian": self.guardian,
            "fired_by": self.fired_by,
            "guardian_fired": self.guardian_fired,
            "frozen_at": iso(self.frozen_at),
            "thawed_at": iso(self.thawed_at),
            "seconds_frozen": self.seconds_frozen,
            "mounts": dict(self.mounts),
            "exit_codes": dict(self.exit_codes),
            "consistency": self.consistency,
            "error": self.error,
            "clock_offset": self.clock_offset,
        }


@dataclass
class FreezeReport:
    """A session's freeze: every host's record (frozen or not) and the overall verdict."""

    hosts: list[HostReport]
    max_seconds: int | None

    @property
    def consistency(self) -> str:
        return worst(h.consistency for h in self.hosts)

    @property
    def frozen_hosts(self) -> int:
        return sum(h.status == "frozen" for h in self.hosts)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "action": "freeze",
            "consistency": self.consistency,
            "frozen_hosts": self.frozen_hosts,
            "max_freeze_seconds": self.max_seconds,
            "hosts": [h.freeze_xcom() for h in self.hosts],
        }


@dataclass
class ThawReport:
    """A session's release: every host's record, the verdict and the freeze window."""

    hosts: list[HostReport]

    @property
    def consistency(self) -> str:
        return worst(h.consistency for h in self.hosts)

    def window(self) -> dict[str, Any]:
        """The freeze window: first freeze to last thaw on the controller's monotonic clock
        when every frozen host's freeze and thaw are placed on it (same machine and boot);
        else the longest single host's, on that host's own clock (a lower bound)."""
        per_host = [h.seconds_frozen for h in self.hosts if h.seconds_frozen is not None]
        longest = max(per_host) if per_host else None
        frozen = [h for h in self.hosts if h.frozen_at is not None]
        placed = frozen and all(
            h.frozen_mono is not None and h.thawed_mono is not None and h.mono_boot == boot_id()
            for h in frozen
        )
        if placed:
            first = min(h.frozen_mono for h in frozen if h.frozen_mono is not None)
            last = max(h.thawed_mono for h in frozen if h.thawed_mono is not None)
            whole = round(max(last - first, longest or 0.0), 3)
            return {"seconds": whole, "clock": "controller", "longest_host_seconds": longest}
        return {"seconds": longest, "clock": "per-host", "longest_host_seconds": longest}

    def to_xcom(self) -> dict[str, Any]:
        return {
            "action": "thaw",
            "consistency": self.consistency,
            "freeze_window": self.window(),
            "hosts": [h.thaw_xcom() for h in self.hosts],
        }


def controller_freezes(freeze_xcom: Mapping[str, Any] | None) -> dict[str, tuple[str, float]]:
    """guardian id -> (boot id, freeze instant on that boot's monotonic clock), from a freeze
    report's XCom (what a release in another task knows of the freeze); bad entries skipped."""
    found: dict[str, tuple[str, float]] = {}
    hosts = freeze_xcom.get("hosts") if isinstance(freeze_xcom, Mapping) else None
    for host in hosts if isinstance(hosts, Sequence) else []:
        if not isinstance(host, Mapping):
            continue
        ctl = host.get("controller")
        if not isinstance(ctl, Mapping):
            continue
        boot, mono = ctl.get("boot_id"), ctl.get("frozen_at_monotonic")
        if isinstance(boot, str) and isinstance(mono, (int, float)):
            found[str(host.get("guardian_id"))] = (boot, float(mono))
    return found


def worst(levels: Iterable[str]) -> str:
    """The least consistent of ``levels`` (crash-consistent when there are none)."""
    return max(levels, key=_WORST.__getitem__, default=CRASH_CONSISTENT)


def epoch(value: Any) -> float | None:
    """A report's epoch seconds as a float, or None."""
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def iso(value: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds."""
    if value is None:
        return None
    moment = datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def seconds(start: float | None, end: float | None) -> float | None:
    """``end - start`` rounded to ms (two readings of one clock), or None."""
    if start is None or end is None:
        return None
    return round(end - start, 3)


def integer(value: Any) -> int | None:
    """A report's whole number, or None."""
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def monotonic() -> float:
    """The controller's monotonic clock (a function, so that a session reads one clock)."""
    return time.monotonic()
