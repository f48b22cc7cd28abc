"""Fault injection and rate limiting for the API routes (never for ``/_sim/*``)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
Action = Literal["none", "error", "drop", "delay"]


class FaultRule(BaseModel):
    """A targeted fault for matching requests, used ``count`` times (null: forever)."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = None
    path: str = "*"
    action: Literal["error", "drop", "delay"] = "error"
    status: int = Field(default=503, ge=400, le=599)
    seconds: float = Field(default=0.0, ge=0)
    after: bool = False
    count: int | None = Field(default=1, ge=1)

    def matches(self, method: str, path: str) -> bool:
        """Method (any when unset) and path (exact, or prefix with a trailing ``*``)."""
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


class FailCopy(BaseModel):
    """Copies whose new resource's name starts with ``name_prefix`` end with ``message``."""

    model_config = ConfigDict(extra="forbid")

    name_prefix: str = ""
    message: str = "Disk copy failed"


class FaultSettings(BaseModel):
    """The whole fault configuration (``POST /_sim/faults`` replaces it)."""

    model_config = ConfigDict(extra="forbid")

    error_rates: dict[int, float] = Field(default_factory=dict)
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    latency_ms: float = Field(default=0.0, ge=0)
    ambiguous_fraction: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: int = Field(default=1, ge=0)
    rules: list[FaultRule] = Field(default_factory=list)
    fail_copies: list[FailCopy] = Field(default_factory=list)
    fail_next_copy: str | None = None
    seed: int | None = None

    @field_validator("error_rates")
    @classmethod
    def _check_rates(cls, rates: dict[int, float]) -> dict[int, float]:
        for status, rate in rates.items():
            if not 400 <= status <= 599:
                raise ValueError(f"error_rates: {status} is not a 4xx/5xx status")
            if not 0 <= rate <= 1:
                raise ValueError(f"error_rates: rate for {status} must be within 0..1")
        return rates

    @model_validator(mode="after")
    def _check_total(self) -> FaultSettings:
        if self.drop_rate + sum(self.error_rates.values()) > 1.0 + 1e-9:
            raise ValueError("drop_rate plus error_rates must not exceed 1")
        return self


@dataclass(frozen=True)
class Decision:
    """What to do with one request."""

    action: Action = "none"
    status: int = 0
    seconds: float = 0.0
    after: bool = False
    latency_s: float = 0.0

    @property
    def label(self) -> str | None:
        """Short text for logs, e.g. ``error:503:after`` or ``latency:100ms``; None if clean."""
        parts = []
        if self.latency_s:
            parts.append(f"latency:{round(self.latency_s * 1000)}ms")
        if self.action == "error":
            parts.append(f"error:{self.status}")
        elif self.action == "drop":
            parts.append("drop")
        elif self.action == "delay":
            parts.append(f"delay:{self.seconds:g}s")
        if self.after and self.action != "none":
            parts[-1] += ":after"
        return ",".join(parts) or None


class FaultEngine:
    """Draws faults per request from the current settings (thread-safe, seedable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = FaultSettings()
        self._rng = random.Random()

    @property
    def settings(self) -> FaultSettings:
        """A copy of the current settings (rule counts show what is left)."""
        with self._lock:
            return self._settings.model_copy(deep=True)

    @property
    def retry_after_s(self) -> int:
        """Retry-After seconds for injected 429s."""
        with self._lock:
            return self._settings.retry_after_s

    def replace(self, settings: FaultSettings) -> None:
        """Install new settings; reseed the RNG when ``seed`` is given."""
        with self._lock:
            self._settings = settings.model_copy(deep=True)
            self._rng = random.Random(settings.seed)

    def decide(self, method: str, path: str) -> Decision:
        """The fault (if any) for a request; one-shot rules are consumed here."""
        with self._lock:
            latency = self._settings.latency_ms / 1000.0
            rule = self._take_rule(method, path)
            if rule is not None:
                return Decision(
                    rule.action, rule.status, rule.seconds, rule.after, latency_s=latency
                )
            return self._random(method, latency)

    def _take_rule(self, method: str, path: str) -> FaultRule | None:
        for rule in self._settings.rules:
            if rule.matches(method, path):
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        self._settings.rules.remove(rule)
                return rule
        return None

    def _random(self, method: str, latency: float) -> Decision:
        s = self._settings
        draw = self._rng.random()
        choice: tuple[Action, int] | None = None
        if draw < s.drop_rate:
            choice = ("drop", 0)
        else:
            edge = s.drop_rate
            for status in sorted(s.error_rates):
                edge += s.error_rates[status]
                if draw < edge:
                    choice = ("error", status)
                    break
        if choice is None:
            return Decision(latency_s=latency)
        action, status = choice
        ambiguous = method.upper() in WRITE_METHODS and (action == "drop" or status >= 500)
        after = ambiguous and self._rng.random() < s.ambiguous_fraction
        return Decision(action, status, after=after, latency_s=latency)

    def copy_failure(self, name: str) -> str | None:
        """The error a new copy named ``name`` will end with, or None (consumes fail_next_copy)."""
        with self._lock:
            if self._settings.fail_next_copy:
                message = self._settings.fail_next_copy
                self._settings.fail_next_copy = None
                return message
            for fail in self._settings.fail_copies:
                if name.startswith(fail.name_prefix):
                    return fail.message
            return None


class RateLimiter:
    """Per-user token bucket: ``rate`` requests per second, bursts up to ``max(1, rate)``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, user: str, rate: float | None) -> int | None:
        """None when allowed, else the whole seconds to wait (for ``Retry-After``)."""
        if rate is None:
            return None
        capacity = max(1.0, rate)
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(user, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[user] = (tokens - 1.0, now)
                return None
            self._buckets[user] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / rate))

    def reset(self) -> None:
        """Forget every bucket."""
        with self._lock:
            self._buckets.clear()
