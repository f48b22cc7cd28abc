"""Verdicts, the freeze window's identity, and the proof that a copy is ours.

A copy made between a freeze and a release is *application-consistent* only when this run
can show all of it: it was requested after every VM was frozen, and Skytap reported it
complete before the first VM was released, in one freeze window. Every copy the chain makes
carries the identity of the window it was requested in from the moment it is requested:

- in its **name**, which the POST sets on both kinds (``<name>-w<token>``); Skytap's POST
  takes a name for environments and templates alike, but a description only when saving a
  template, and tags only afterwards (a separate call a killed task may never send);
- and in a **window tag** ``airflow-skytap-window/<token>``, put on right after the POST.

The token is a hash of the DAG, the run, the try and the chain (task group): one freeze per
try, so one window per token. A copy found with another token was requested in another
window (an earlier try, a cleared run): this run never saw it requested and completed while
its VMs were frozen, so it vouches for nothing about it.

*Ours* means: the copy carries this DAG's source tag (:func:`carries_source_tag`, the one
place that reads it) and Skytap says the connection's user made it (``owner_name``;
[CODE] skytap-sdk-go ``environment.go`` shows ``owner_id``, ``owner_name`` and
``owner_url`` on environments; [ASSUMED] templates show the same fields, and
``owner_name`` is the user's login name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from airflow_provider_skytap.backups import (
    CONSISTENCY_TAG_PREFIX,
    MAX_NAME,
    WINDOW_TAG_PREFIX,
    consistency,
    consistency_tag,
    legacy_source_tag,
    provider_source_tags,
    source_tag,
    tag_source,
)
from airflow_provider_skytap.hooks.api import Kind, tag_values
from airflow_provider_skytap.quiesce.report import (
    APPLICATION_CONSISTENT,
    CRASH_CONSISTENT,
    INCONSISTENT,
)

__all__ = [
    "APPLICATION_CONSISTENT",
    "CONFIRMED",
    "CONSISTENCY_TAG_PREFIX",
    "CRASH_CONSISTENT",
    "INCONSISTENT",
    "WINDOW_TAG_PREFIX",
    "FreezeWindow",
    "carries_source_tag",
    "consistency",
    "consistency_tag",
    "copy_verdict",
    "dag_source_tags",
    "marked_token",
    "not_ours_reason",
    "owner_of",
    "owner_reason",
    "window_tokens",
]

# The verdicts of a thaw that held (crash-consistent: the DAG asked to go on without a host).
CONFIRMED = (APPLICATION_CONSISTENT, CRASH_CONSISTENT)
_MARK = "-w"
_TOKEN_LENGTH = 12
_ORDER = {APPLICATION_CONSISTENT: 0, CRASH_CONSISTENT: 1, INCONSISTENT: 2}


@dataclass(frozen=True)
class FreezeWindow:
    """Which freeze a copy was requested in: DAG, run, try and chain (task group).

    :param dag_id: the DAG
    :param run_id: the DAG run
    :param try_number: the freeze task's try
    :param chain: the chain's task group id ("" outside a group)
    """

    dag_id: str
    run_id: str
    try_number: int
    chain: str = ""

    @property
    def token(self) -> str:
        """12 hex digits naming the window (in copy names and the window tag)."""
        text = "\n".join((self.dag_id, self.run_id, str(self.try_number), self.chain))
        return hashlib.sha256(text.encode()).hexdigest()[:_TOKEN_LENGTH]

    @property
    def tag(self) -> str:
        """The window tag a copy requested in this window carries."""
        return f"{WINDOW_TAG_PREFIX}{self.token}"

    def mark(self, name: str) -> str:
        """``name`` with this window's mark at its end (cut to fit Skytap's 255 characters)."""
        tail = f"{_MARK}{self.token}"
        return f"{name[: MAX_NAME - len(tail)]}{tail}"

    def to_xcom(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "try_number": self.try_number,
            "chain": self.chain,
        }

    @classmethod
    def from_xcom(cls, value: Any) -> FreezeWindow | None:
        """The window a task's XCom names, or None when it names none (or is malformed)."""
        if not isinstance(value, Mapping):
            return None
        try:
            window = cls(
                str(value["dag_id"]),
                str(value["run_id"]),
                int(value["try_number"]),
                str(value.get("chain") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return window if window.token == value.get("token") else None


def window_tokens(resource: Mapping[str, Any], base_name: str | None = None) -> set[str]:
    """The window tokens a copy carries: from its window tags, and from its name's mark when
    the name is ``base_name`` plus a mark."""
    found = {
        t[len(WINDOW_TAG_PREFIX) :] for t in tag_values(resource) if t.startswith(WINDOW_TAG_PREFIX)
    }
    token = None if base_name is None else marked_token(str(resource.get("name") or ""), base_name)
    if token is not None:
        found.add(token)
    return found


def marked_token(name: str, base_name: str) -> str | None:
    """The window token of ``name`` when it is ``base_name`` with a window's mark, else None."""
    stem = base_name[: MAX_NAME - len(_MARK) - _TOKEN_LENGTH] + _MARK
    token = name[len(stem) :]
    if name.startswith(stem) and len(token) == _TOKEN_LENGTH and _hex(token):
        return token
    return None


def carries_source_tag(resource: Mapping[str, Any], tag: str) -> bool:
    """Whether ``resource`` carries the source tag ``tag`` (made by this provider for this DAG
    and source). The one place the provider reads a source tag off a resource."""
    return tag.lower() in provider_source_tags(resource)


def dag_source_tags(resource: Mapping[str, Any], dag_id: str) -> list[str]:
    """The source tags of this DAG (any source) that ``resource`` carries: what a region copy
    of a backup inherits. Reads source tags the way :func:`carries_source_tag` does."""
    found = []
    for tag in provider_source_tags(resource):
        named = tag_source(tag)
        if named is None:
            continue
        kind, _, source_id = named[1].partition("-")
        if kind in ("environment", "template") and tag in (
            source_tag(dag_id, cast(Kind, kind), source_id).lower(),
            legacy_source_tag(dag_id, cast(Kind, kind), source_id),
        ):
            found.append(tag)
    return sorted(found)


def owner_of(resource: Mapping[str, Any]) -> str | None:
    """Who Skytap says made ``resource`` (``owner_name``), or None when it does not say."""
    owner = resource.get("owner_name")
    return owner if isinstance(owner, str) and owner else None


def not_ours_reason(resource: Mapping[str, Any], source_tag: str, user: str) -> str | None:
    """Why ``resource`` cannot be shown to be this DAG's, or None when it is ours.

    :param resource: an environment or template as Skytap shows it
    :param source_tag: this DAG's source tag for the source copied
    :param user: the Skytap connection's user (its login)
    """
    if not carries_source_tag(resource, source_tag):
        return f"it does not carry this DAG's tag {source_tag!r}"
    return owner_reason(resource, user)


def owner_reason(resource: Mapping[str, Any], user: str) -> str | None:
    """Why ``resource`` cannot be shown to be made by ``user``, or None when Skytap says it was.

    :param resource: an environment or template as Skytap shows it
    :param user: the Skytap connection's user (its login)
    """
    owner = owner_of(resource)
    if owner is None:
        return "Skytap shows no owner for it"
    if owner.casefold() != user.casefold():
        return f"it was made by {owner!r}, not by the connection's user {user!r}"
    return None


def copy_verdict(
    thaw_verdict: str,
    *,
    same_window: bool,
    complete_before_release: bool,
    earlier_verdict: str | None = None,
) -> tuple[str, str]:
    """What a copy is, given what the release found: ``(verdict, note)``.

    :param thaw_verdict: the release's own verdict (every guardian held: application-)
    :param same_window: the copy was requested in this window, after every VM was frozen
    :param complete_before_release: Skytap showed it complete before the first release
    :param earlier_verdict: the verdict the copy carries already (another window's)
    """
    if not same_window:
        if earlier_verdict in CONFIRMED:
            verdict = worse(earlier_verdict, CRASH_CONSISTENT)
            return verdict, (
                "requested in another freeze window (an earlier try or a cleared run), not this "
                f"one; that window found it {earlier_verdict}: at best {CRASH_CONSISTENT} here"
            )
        return INCONSISTENT, (
            "requested in another freeze window (an earlier try or a cleared run) that never "
            "vouched for it: this run cannot show the VMs stayed frozen until it was complete, "
            "so it may be torn. Delete it and clear the run for a consistent copy"
        )
    if not complete_before_release:
        return INCONSISTENT, (
            "the VMs were released before Skytap showed the copy complete: it may be torn"
        )
    if thaw_verdict == APPLICATION_CONSISTENT:
        return thaw_verdict, (
            "requested after every VM was frozen and complete before the first release, "
            "in this freeze window"
        )
    return thaw_verdict, f"the release found the freeze {thaw_verdict}"


def worse(a: str, b: str) -> str:
    """The less consistent of two verdicts."""
    return max(a, b, key=lambda v: _ORDER.get(v, len(_ORDER)))


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
