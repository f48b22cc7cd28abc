"""One copy service: what to copy (:class:`CopySpec`), and find-or-create, tag, wait, rename.

The operators and the freeze-copy-thaw chain call :class:`CopyService`; it calls
:class:`~airflow_provider_skytap.hooks.skytap.SkytapHook` and nothing of Airflow's but the
context values it is handed. A copy found by its name is adopted only when it is provably
ours (:func:`~airflow_provider_skytap.consistency.not_ours_reason`); anything else under our
name fails the task (:class:`~airflow_provider_skytap.exceptions.NotOursError`), naming it,
and is never tagged, vouched for or deleted.
"""

from __future__ import annotations

import copy as copying
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_skytap.backups import (
    backup_name,
    check_tags,
    consistency,
    consistency_tag,
    run_stamp,
    source_tag,
    time_tag,
)
from airflow_provider_skytap.consistency import (
    FreezeWindow,
    marked_token,
    not_ours_reason,
    owner_of,
    window_tokens,
)
from airflow_provider_skytap.exceptions import (
    InvalidValueError,
    NotOursError,
    SkytapError,
    SkytapResourceFailedError,
)
from airflow_provider_skytap.hooks.api import (
    PROGRESS_LONGEST,
    Kind,
    check_description,
    check_id,
    check_name,
    check_vm_ids,
    describe,
    readiness,
    tag_values,
)

if TYPE_CHECKING:
    from airflow_provider_skytap.hooks.skytap import SkytapHook

TARGETS = ("template", "environment")


class CopySpec:
    """What to copy: a running environment, saved as a template or copied as an environment.

    Built once in the DAG and handed to every task that needs it; Airflow renders the
    attributes named in ``template_fields`` (a nested template field), and each task keeps
    its own copy. Nothing is checked until :meth:`checked` (in a task's ``execute``).

    :param environment_id: the running environment to copy
    :param target: ``template`` (a backup) or ``environment`` (a running copy)
    :param name: name of the copy; default ``<dag_id>-environment-<id>-<logical date>``
    :param description: description of the copy
    :param tags: extra tags; this provider's own tags are always added
    :param vm_ids: only these VMs (``target="environment"`` only)
    :param live: ask Skytap for a live clone (``live_copy``); False suspends running VMs
    """

    template_fields: Sequence[str] = (
        "environment_id",
        "target",
        "name",
        "description",
        "tags",
        "vm_ids",
    )

    def __init__(
        self,
        *,
        environment_id: str | int,
        target: str = "template",
        name: str | None = None,
        description: str | None = None,
        tags: Sequence[str] | None = None,
        vm_ids: Sequence[str | int] | None = None,
        live: bool = True,
    ) -> None:
        self.environment_id = environment_id
        self.target = target
        self.name = name
        self.description = description
        self.tags = tags
        self.vm_ids = vm_ids
        self.live = live

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in (*self.template_fields, "live"))
        return f"CopySpec({fields})"

    def own(self) -> CopySpec:
        """A copy for one task to render (rendering sets attributes on the object)."""
        return copying.deepcopy(self)

    def checked(self) -> CheckedCopy:
        """The rendered values, checked; an :class:`InvalidValueError` names field and value."""
        try:
            eid = check_id(self.environment_id, "environment_id")
            if self.target not in TARGETS:
                raise ValueError(f"target must be 'template' or 'environment', got {self.target!r}")
            if not isinstance(self.live, bool):
                raise ValueError(f"live must be True or False, got {self.live!r}")
            vm_ids = None
            if self.vm_ids is not None:
                if self.target == "template":
                    raise ValueError(
                        "vm_ids works with target='environment' only: Skytap saves a whole "
                        f"environment as a template (got vm_ids={self.vm_ids!r})"
                    )
                vm_ids = check_vm_ids(self.vm_ids)
            name = None if self.name is None else check_name(self.name)
            description = None if self.description is None else check_description(self.description)
            tags = tuple(check_tags(self.tags))
        except InvalidValueError:
            raise
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        kind: Kind = "template" if self.target == "template" else "environment"
        return CheckedCopy(eid, kind, name, description, tags, vm_ids, self.live)


@dataclass(frozen=True)
class CheckedCopy:
    """A :class:`CopySpec`'s values once rendered and checked."""

    environment_id: str
    kind: Kind
    name: str | None
    description: str | None
    tags: tuple[str, ...]
    vm_ids: list[str] | None
    live: bool


@dataclass(frozen=True)
class Target:
    """One copy to find or make: kind, base name, region and the tags it must carry."""

    kind: Kind
    name: str
    region: str
    source_tag: str
    time_tags: tuple[str, ...]
    user_tags: tuple[str, ...] = ()
    window: FreezeWindow | None = None

    @property
    def requested_name(self) -> str:
        """The name the POST asks for: the base name, marked with the window when there is one."""
        return self.window.mark(self.name) if self.window else self.name

    @property
    def tags(self) -> tuple[str, ...]:
        own = (self.window.tag,) if self.window else ()
        return (self.source_tag, *self.time_tags, *own, *self.user_tags)


@dataclass
class Found:
    """A copy that is ours, and the windows it was requested in (empty: none known)."""

    resource: dict[str, Any]
    windows: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return str(self.resource["id"])


class CopyService:
    """Find-or-create, tag, wait for and rename copies, through one :class:`SkytapHook`.

    :param hook: the hook of the task's Skytap connection
    :param log: where progress goes (a task's ``self.log``)
    """

    def __init__(self, hook: SkytapHook, log: Any = None) -> None:
        self.hook = hook
        self.log = log or logging.getLogger(__name__)

    # ---- what to make

    def live_clone_target(
        self,
        spec: CheckedCopy,
        *,
        dag_id: str,
        context: Mapping[str, Any],
        source: Mapping[str, Any],
        window: FreezeWindow | None = None,
    ) -> Target:
        """The copy of ``spec``'s environment this run makes (its name from the run's date)."""
        stamp, when = run_stamp(context)
        eid = spec.environment_id
        return Target(
            kind=spec.kind,
            name=spec.name or backup_name(dag_id, "environment", eid, stamp),
            region=str(source.get("region") or ""),
            source_tag=source_tag(dag_id, "environment", eid),
            time_tags=(time_tag(when),),
            user_tags=spec.tags,
            window=window,
        )

    # ---- finding

    def find(self, target: Target) -> Found | None:
        """The copy of ``target`` an earlier try (or task) made, or None.

        Everything named like it (the base name, or the base name with any window's mark) or
        carrying its source and time tags must be provably ours, or this raises
        :class:`NotOursError` naming it. Two of ours is an error too (delete the extra one).
        """
        matches = self.hook.list_resources(
            target.kind, name_prefix=target.name, region=target.region
        )
        named = [
            m
            for m in matches
            if m.get("name") == target.name or marked_token(str(m.get("name")), target.name)
        ]
        if not named:
            # Skytap may not apply the name a copy asks for (its Go SDK renames afterwards);
            # until the copy is renamed, its tags identify it.
            named = self.hook.list_resources(
                target.kind, region=target.region, tags=[target.source_tag, *target.time_tags]
            )
        user = self.hook.connection_user
        ours: list[dict[str, Any]] = []
        for match in named:
            why = not_ours_reason(match, target.source_tag, user)
            if why is not None:
                raise NotOursError(
                    f"{describe(target.kind, str(match['id']), match)} in {target.region} has "
                    f"this task's name (or tags), but {why}: it is not this DAG's, so it is "
                    "neither adopted nor tagged. Rename or delete it, or give this task "
                    "another name"
                )
            ours.append(match)
        if len(ours) > 1:
            ids = ", ".join(str(m["id"]) for m in ours)
            raise SkytapError(
                f"{len(ours)} {target.kind}s of this DAG in {target.region} are named "
                f"{target.name!r} (ids {ids}); delete the extra ones so the backup is unambiguous"
            )
        if not ours:
            return None
        found = Found(ours[0], window_tokens(ours[0], target.name))
        self.log.info(
            "Found %s, made by this DAG (an earlier try or task requested it)",
            describe(target.kind, found.id, found.resource),
        )
        return found

    def prove_ours(self, target: Target, resource: Mapping[str, Any]) -> None:
        """Raise :class:`NotOursError` unless ``resource`` is provably this DAG's."""
        why = not_ours_reason(resource, target.source_tag, self.hook.connection_user)
        if why is not None:
            raise NotOursError(
                f"{describe(target.kind, str(resource.get('id')), resource)} is not this DAG's "
                f"copy: {why}"
            )

    # ---- making

    def create(
        self, target: Target, spec: CheckedCopy, *, retry_busy: bool = True
    ) -> dict[str, Any]:
        """POST the copy under its (window-marked) name, then tag it; answers the copy."""
        made = self.request(target, spec, retry_busy=retry_busy)
        self.ensure_tags(target, made)
        return made

    def request(
        self, target: Target, spec: CheckedCopy, *, retry_busy: bool = True
    ) -> dict[str, Any]:
        """POST the copy under its (window-marked) name only; answers the copy (untagged).

        The hook never sends the POST twice: after an ambiguous failure only a resource with
        this name and an id it had not seen before counts as the one this POST made.
        """
        eid = spec.environment_id
        name = target.requested_name
        if target.kind == "template":
            made = self.hook.save_as_template(
                eid, name=name, description=spec.description, live=spec.live, retry_busy=retry_busy
            )
        else:
            made = self.hook.copy_environment(
                eid, name=name, vm_ids=spec.vm_ids, live=spec.live, retry_busy=retry_busy
            )
        return made

    def claim(self, target: Target, resource: Mapping[str, Any], token: str) -> None:
        """Tag a copy this run requested whose tagging failed (its id came from this run's own
        XCom): only when its name carries this window's mark and the connection's user made
        it; then it must pass :meth:`prove_ours` like any other."""
        owner = owner_of(resource)
        if (
            token
            and marked_token(str(resource.get("name") or ""), target.name) == token
            and owner is not None
            and owner.casefold() == self.hook.connection_user.casefold()
        ):
            self.ensure_tags(target, resource)

    def source_ready(self, kind: Kind, source_id: str, source: Mapping[str, Any]) -> str | None:
        """None when ``source`` may be copied now; the reason it is busy otherwise.

        :raises SkytapResourceFailedError: the source reports an error
        """
        state = readiness(kind, source)
        if state.state == "failed":
            raise SkytapResourceFailedError(
                f"{describe(kind, source_id, source)} reports an error ({state.detail}); "
                "not copying it"
            )
        return state.detail if state.state == "busy" else None

    def ensure_tags(self, target: Target, resource: Mapping[str, Any]) -> None:
        """Add whichever of the target's tags ``resource`` lacks."""
        have = tag_values(resource)
        missing = [t for t in target.tags if t.lower() not in have]
        if missing:
            self.hook.add_tags(target.kind, resource["id"], missing)

    # ---- waiting and finishing

    def wait(
        self,
        kind: Kind,
        resource_id: str,
        *,
        timeout: float,
        poll_interval: float,
        max_poll_interval: float,
        log_every: float = PROGRESS_LONGEST,
    ) -> dict[str, Any]:
        """Poll until Skytap shows the copy complete (raises if it failed or timed out)."""
        return self.hook.wait_until_ready(
            kind,
            resource_id,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            log_every=log_every,
        )

    def finish(
        self,
        kind: Kind,
        resource_id: str,
        *,
        name: str,
        description: str | None,
        resource: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Once ready: give the copy the name and description asked for, if Skytap did not.

        Skytap takes a description in the POST only when saving a template, may not apply the
        name a copy asks for, and refuses changes while a copy is busy: both are set now.
        """
        if resource is None:
            resource = self.hook.get_resource(kind, resource_id)
        new_name = name if resource.get("name") != name else None
        new_description = (
            description
            if description is not None and resource.get("description") != description
            else None
        )
        if new_name is not None or new_description is not None:
            if new_name is not None:
                self.log.info("Renaming %s to %r", describe(kind, resource_id, resource), new_name)
            return self.hook.update(kind, resource_id, name=new_name, description=new_description)
        return dict(resource)

    def tag_verdict(self, kind: Kind, resource_id: str, verdict: str) -> bool:
        """Tag a complete copy with ``verdict``; False (and nothing tagged) if it is not ready."""
        resource = self.hook.get_resource(kind, resource_id)
        label = describe(kind, resource_id, resource)
        state = readiness(kind, resource)
        if state.state != "ready":
            self.log.warning(
                "Not tagging %s %s: it is %s (%s); retention will not count it as a backup",
                label,
                verdict,
                state.state,
                state.detail,
            )
            return False
        if consistency(resource) == verdict:
            self.log.info("%s is tagged %s already", label, consistency_tag(verdict))
        else:
            self.hook.add_tags(kind, resource_id, [consistency_tag(verdict)])
            self.log.info("Tagged %s %s", label, consistency_tag(verdict))
        return True
