"""Every error the provider raises, and the one rule for what Airflow retries.

The rule: **a bad value is never retried; a transient failure is.**

- *Final* (subclasses of :class:`~airflow.sdk.exceptions.AirflowFailException`: the task
  fails at once, whatever its ``retries``): a value the task was given is wrong
  (:class:`InvalidValueError`); Skytap refused the request with a 4xx that the same request
  would meet again (:class:`SkytapRefusedError`, :class:`SkytapNotFoundError`,
  :class:`SkytapAuthError`, :class:`SkytapScopeError`), or answered with a shape the
  provider cannot use (:class:`SkytapResponseError`); a resource found by name is not
  provably ours (:class:`NotOursError`); a guardian thawed before the release
  (:class:`GuardianFiredError`: a retry would read the same records).
- *Retried* (plain :class:`~airflow.sdk.exceptions.AirflowException`): Skytap busy past the
  hook's own retries, no answer, a 5xx, a wait that timed out, an SSH step that failed.

:func:`is_final` answers which side an exception is on. This module imports nothing of the
provider, so every layer can use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_provider_skytap.quiesce.report import Answer

__all__ = [
    "CloneFailedError",
    "GuardianFiredError",
    "HostStepError",
    "InvalidValueError",
    "NotOursError",
    "QuiesceError",
    "SkytapAPIError",
    "SkytapAuthError",
    "SkytapBusyError",
    "SkytapError",
    "SkytapNotFoundError",
    "SkytapRefusedError",
    "SkytapResourceFailedError",
    "SkytapResponseError",
    "SkytapScopeError",
    "SkytapWaitTimeoutError",
    "is_final",
]


def is_final(exc: BaseException) -> bool:
    """Whether Airflow fails the task at once on ``exc`` (no retry): the rule above."""
    return isinstance(exc, AirflowFailException)


# --------------------------------------------------------------------------- values


class InvalidValueError(AirflowFailException, ValueError):
    """A value the task was given is wrong: the task fails without retrying (a retry would
    meet the same value). The message names the field and the value."""


# --------------------------------------------------------------------------- Skytap


class SkytapError(AirflowException):
    """Base class of every error the provider raises about Skytap."""


class SkytapAPIError(SkytapError):
    """Skytap answered with an error, or could not be reached within the retry deadline.

    :param action: what was being done, e.g. ``copy environment 1001``
    :param status: the HTTP status, or None when no response arrived
    :param messages: Skytap's own error messages
    :param request_id: Skytap's ``X-Request-ID`` for the failing request, for their support
    :param detail: what the provider adds (the likely cause, what to do)
    """

    def __init__(
        self,
        action: str,
        status: int | None,
        messages: Iterable[str] = (),
        request_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.action = action
        self.status = status
        self.messages = list(messages)
        self.request_id = request_id
        self.detail = detail
        super().__init__(self.render())

    def render(self) -> str:
        """The message: action, status, Skytap's messages, the detail and the request id."""
        head = f"{self.action}: " + (f"HTTP {self.status}" if self.status else "no response")
        parts = [head]
        if self.messages:
            parts.append("; ".join(self.messages))
        if self.detail:
            parts.append(self.detail)
        text = ": ".join(parts)
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    def __reduce__(self) -> Any:
        return (
            type(self),
            (self.action, self.status, self.messages, self.request_id, self.detail),
        )


class SkytapRefusedError(SkytapAPIError, AirflowFailException):
    """Skytap refused the request with a 4xx that does not change on retry (400, 422 not
    saying busy, ...): final."""


class SkytapNotFoundError(SkytapAPIError, AirflowFailException):
    """The resource does not exist (HTTP 404): final."""


class SkytapAuthError(SkytapAPIError, AirflowFailException):
    """Skytap refused the credentials (HTTP 401/403): final."""


class SkytapBusyError(SkytapAPIError):
    """Skytap refused because the resource or a copy's source is busy (423, or 409/422
    saying busy), and the call was asked not to retry that (``retry_busy=False``)."""


class SkytapResourceFailedError(SkytapError):
    """A copy, save or change ended with Skytap's ``error`` field filled in."""


class SkytapWaitTimeoutError(SkytapError):
    """A resource was still busy when the wait's timeout ran out."""


class SkytapResponseError(SkytapAPIError, AirflowFailException):
    """Skytap's answer does not have the shape the provider relies on (or is too big).

    Final: the same request would get the same answer. Nothing is created after it.
    """


class SkytapScopeError(SkytapAuthError):
    """Skytap refused ``scope=company`` for the connection's user (not a company admin)."""


class NotOursError(SkytapError, AirflowFailException):
    """A resource found by this task's name carries no proof that this DAG made it (its tags,
    made by the connection's user): never adopted, tagged, vouched for or deleted. Final."""


class SkytapIsolationError(SkytapError, AirflowFailException):
    """An environment is not isolated as asked: it may reach the internet, route between its
    networks, or be attached to a VPN or another environment. Final: never retried."""


class CloneFailedError(RuntimeError):
    """The copy failed or disappeared. Not an AirflowException, so ``soft_fail`` (which
    Airflow applies to any AirflowException of a deferred sensor) does not turn it into a
    skip: ``soft_fail`` covers the timeout only, in every mode."""


# --------------------------------------------------------------------------- quiesce


class ReportError(ValueError):
    """A guardian report line that breaks the protocol (a control or line-separator
    character). The session turns it into a :class:`HostStepError` for the host."""


class QuiesceError(AirflowException):
    """A freeze or release failed; ``result`` holds the report (XCom form) when there is one."""

    def __init__(self, message: str, *, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


class GuardianFiredError(QuiesceError, AirflowFailException):
    """The release found every host thawed, but a guardian had thawed before it: the copy is
    not application-consistent. Final: a retry would read the same records."""


class HostStepError(QuiesceError):
    """One step failed on one host: names the host, the step, the exit code and remote stderr."""

    def __init__(
        self,
        host: str,
        step: str,
        message: str,
        *,
        exit_code: int | None = None,
        stderr: str = "",
        answer: Answer | None = None,
    ) -> None:
        text = f"{host}: {step} failed"
        if exit_code is not None:
            text += f" (exit {exit_code})"
        text += f": {message}"
        if stderr and stderr not in message:
            text += f"; remote stderr: {stderr}"
        super().__init__(text)
        self.host = host
        self.step = step
        self.exit_code = exit_code
        self.answer = answer
