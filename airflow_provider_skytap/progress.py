"""When a long wait logs its progress, and how it writes a duration: one schedule for every
wait of the provider (the hooks', the trigger's, the sensor's, the restore's, the drill's SSH
wait). Pure functions; imports nothing of the provider, so ``hooks`` and ``quiesce`` share it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The progress lines of every wait: (until this many seconds have passed, one line every).
PROGRESS_STEPS: tuple[tuple[float, float], ...] = ((120.0, 10.0), (600.0, 30.0))
#: After the steps, one line per poll pause, but at least this many seconds apart ...
PROGRESS_SHORTEST_LATE = 30.0
#: ... and at most this many (the default ``log_every`` of every wait).
PROGRESS_LONGEST = 300.0


def progress_gap(elapsed: float, pause: float, longest: float = PROGRESS_LONGEST) -> float:
    """Seconds from a progress line logged at ``elapsed`` to the next one: every 10 s in the
    first 2 min, every 30 s to 10 min, then every poll pause (at least 30 s), never more than
    ``longest`` apart. The one schedule of every wait: the hooks', the trigger's (deferred),
    the sensor's, the restore's and the quiesce waits'.

    :param elapsed: seconds since the wait began, when the line was due
    :param pause: the wait's current pause between polls, seconds
    :param longest: the longest gap between two lines, seconds (a wait's ``log_every``)
    """
    longest = max(0.05, float(longest))
    for until, gap in PROGRESS_STEPS:
        if elapsed < until:
            return min(gap, longest)
    return min(max(float(pause), PROGRESS_SHORTEST_LATE), longest)


@dataclass
class Progress:
    """When a wait logs: :func:`progress_gap`'s schedule, kept by elapsed time.

    ``due(elapsed)`` says whether to log now (and moves the schedule on past ``elapsed``);
    ``next_at`` is when the next line is due, so a wait whose polls are further apart than
    the schedule logs in between (the state of its last poll, and how old it is).

    :param longest: the longest gap between two lines, seconds
    """

    longest: float = PROGRESS_LONGEST
    next_at: float = 0.0
    current_pause: float = 0.0

    def due(self, elapsed: float, pause: float | None = None) -> bool:
        """Whether to log a line at ``elapsed`` seconds; if so the next one is scheduled.

        :param elapsed: seconds since the wait began
        :param pause: the wait's current poll pause (None: the last one given)
        """
        if pause is not None:
            self.current_pause = pause
        if elapsed < self.next_at:
            return False
        while self.next_at <= elapsed:
            self.next_at += progress_gap(self.next_at, self.current_pause, self.longest)
        return True


def ago(elapsed: float) -> str:
    """A duration for a log line: ``42 s``, ``2 min 30 s``, ``2 h 5 min``.

    :param elapsed: seconds
    """
    if elapsed < 10:
        return f"{max(0.0, elapsed):.1f} s"
    seconds = round(elapsed)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min" + (f" {seconds % 60} s" if seconds % 60 else "")
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
