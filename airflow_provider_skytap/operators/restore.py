"""Restore a backup in isolation, start it, reach it, check it, delete it: a restore drill.

Each operator is thin: it checks its (rendered) values, makes one hook or ``quiesce.verify``
call, and returns what the next task needs. :class:`DeleteRestoredEnvironmentOperator` is the
drill's teardown: idempotent, it runs on every path (``.as_teardown(setups=restore)``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_skytap import checks
from airflow_provider_skytap.backups import backup_name, run_stamp
from airflow_provider_skytap.hooks.api import (
    PROGRESS_LONGEST,
    check_id,
    check_name,
    check_port,
    check_region,
    vm_runstates,
)
from airflow_provider_skytap.hooks.skytap import SkytapHook, SkytapIsolationError
from airflow_provider_skytap.links import SkytapResourceLink, persist

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_CONN_ID = "skytap_default"
#: The XCom key under which the restore pushes the environment's id as soon as it exists, so
#: the teardown deletes it even when the restore task fails afterwards.
ENVIRONMENT_ID_KEY = "environment_id"


def _invalid(exc: ValueError) -> checks.InvalidValueError:
    return checks.InvalidValueError(str(exc))


def _optional_id(value: Any) -> str | None:
    """A rendered id that may be missing: None, "" and "None" (a Jinja pull of nothing)."""
    return None if value in (None, "", "None") else str(value)


class _RestoreOperator(BaseOperator):
    """Connection and hook of every operator here."""

    ui_color = "#d5f5e3"

    def __init__(self, *, skytap_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skytap_conn_id = skytap_conn_id

    @cached_property
    def hook(self) -> SkytapHook:
        return SkytapHook(self.skytap_conn_id)


class RestoreEnvironmentOperator(_RestoreOperator):
    """Make an isolated environment from a template (a backup), in the template's region.

    Isolated: ``outbound_traffic`` and ``routable`` false, no VPN attachment or tunnel, each
    read back from the environment itself; an environment that is not is deleted and the task
    fails. A retry finds the environment an earlier try made by its name. Returns ``id``,
    ``name``, ``region``, ``template_id``, ``requested_at`` (epoch seconds of the first
    request: the start of the recovery time), ``url`` and ``vms``.

    :param template_id: the template to restore (templated)
    :param name: the environment's name (default ``restore-<dag>-template-<id>-<run stamp>``)
    :param region: the region the template must be in (None: wherever it is)
    :param outbound_traffic: let the VMs reach the internet (default False)
    :param routable: let its networks route to each other (default False)
    :param timeout: seconds to wait for Skytap to make the environment
    :param poll_interval: the first pause between polls, seconds
    :param log_every: the longest gap between two progress lines, seconds
    :param skytap_conn_id: the ``skytap`` connection
    """

    template_fields: Sequence[str] = (
        "template_id",
        "name",
        "region",
        "outbound_traffic",
        "routable",
        "timeout",
    )
    operator_extra_links = (SkytapResourceLink(),)

    def __init__(
        self,
        *,
        template_id: Any,
        name: str | None = None,
        region: str | None = None,
        outbound_traffic: Any = False,
        routable: Any = False,
        timeout: Any = 3600,
        poll_interval: float = 10.0,
        log_every: float = PROGRESS_LONGEST,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.template_id = template_id
        self.name = name
        self.region = region
        self.outbound_traffic = outbound_traffic
        self.routable = routable
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.log_every = log_every

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            tid = check_id(self.template_id, "template_id")
            region = (
                None
                if self.region in (None, "")
                else check_region(self.region, self.hook.settings.regions, what="region")
            )
            outbound = checks.flag("outbound_traffic", self.outbound_traffic)
            routable = checks.flag("routable", self.routable)
            timeout = checks.positive_seconds("timeout", self.timeout)
            stamp, _ = run_stamp(context)
            default = "restore-" + backup_name(self.dag_id, "template", tid, stamp)
            name = check_name(self.name or default[:255], "name")
        except ValueError as exc:
            raise _invalid(exc) from None

        def created(env: dict[str, Any]) -> None:
            url = self.hook.ui_url("environment", env["id"])
            persist(context, "environment", str(env["id"]), url)
            context["ti"].xcom_push(key=ENVIRONMENT_ID_KEY, value=str(env["id"]))
            self.log.info("Restoring template %s as environment %s: %s", tid, env["id"], url)

        try:
            env = self.hook.restore_environment(
                tid,
                name=name,
                region=region,
                outbound_traffic=outbound,
                routable=routable,
                timeout=timeout,
                poll_interval=self.poll_interval,
                log_every=self.log_every,
                on_created=created,
            )
        except SkytapIsolationError as exc:
            raise AirflowFailException(str(exc)) from None  # a retry meets the same template
        except ValueError as exc:
            raise _invalid(exc) from None
        return {
            "id": str(env["id"]),
            "name": env.get("name"),
            "region": env.get("region"),
            "template_id": tid,
            "requested_at": env["requested_at"],
            "url": self.hook.ui_url("environment", env["id"]),
            "outbound_traffic": env.get("outbound_traffic"),
            "routable": env.get("routable"),
            "vms": [{"id": str(vm.get("id")), "name": vm.get("name")} for vm in env["vms"]],
        }


class StartEnvironmentOperator(_RestoreOperator):
    """Start an environment and wait until it and every VM run, logging their runstates.

    Returns ``id``, ``runstate``, ``vms`` (name -> runstate) and ``running_at`` (epoch).

    :param environment_id: the environment (templated)
    :param timeout: seconds before the task fails
    :param log_every: the longest gap between two progress lines (runstates and time
        spent), seconds: ``hooks.api.progress_gap``
    :param poll_interval: the first pause between polls (growing to 10 s at most)
    :param skytap_conn_id: the ``skytap`` connection
    """

    template_fields: Sequence[str] = ("environment_id", "timeout", "log_every")

    def __init__(
        self,
        *,
        environment_id: Any,
        timeout: Any = 1800,
        log_every: Any = PROGRESS_LONGEST,
        poll_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment_id = environment_id
        self.timeout = timeout
        self.log_every = log_every
        self.poll_interval = poll_interval

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            eid = check_id(self.environment_id, "environment_id")
            timeout = checks.positive_seconds("timeout", self.timeout)
            log_every = checks.positive_seconds("log_every", self.log_every)
        except ValueError as exc:
            raise _invalid(exc) from None
        env = self.hook.start_environment(
            eid, timeout=timeout, log_every=log_every, poll_interval=self.poll_interval
        )
        return {
            "id": eid,
            "runstate": env.get("runstate"),
            "vms": vm_runstates(env),
            "running_at": time.time(),
        }


class PublishSshOperator(_RestoreOperator):
    """Find each VM's SSH address; publish SSH first only when ``allow_publish`` is true.

    An isolated environment's VMs are reachable from outside only through a published
    service. Without ``allow_publish`` nothing is published and the addresses are the VMs'
    interface IPs, reachable only from inside the environment's network. Returns
    ``endpoints`` (``vm_id``, ``vm_name``, ``host``, ``port``, ``via``) and ``published`` (what
    the teardown unpublishes).

    :param environment_id: the environment (templated)
    :param allow_publish: publish ``ssh_port`` on each VM (templated; default False)
    :param ssh_port: the VMs' SSH port
    :param vm_names: only these VMs (default all)
    :param skytap_conn_id: the ``skytap`` connection
    """

    template_fields: Sequence[str] = ("environment_id", "allow_publish", "vm_names")

    def __init__(
        self,
        *,
        environment_id: Any,
        allow_publish: Any = False,
        ssh_port: int = 22,
        vm_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment_id = environment_id
        self.allow_publish = allow_publish
        self.ssh_port = ssh_port
        self.vm_names = vm_names

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            eid = check_id(self.environment_id, "environment_id")
            allow = checks.flag("allow_publish", self.allow_publish)
            port = check_port(self.ssh_port, "ssh_port")
        except ValueError as exc:
            raise _invalid(exc) from None
        published: list[dict[str, Any]] = []
        if allow:
            published = self.hook.publish_ssh(eid, vm_names=self.vm_names, ssh_port=port)
        else:
            self.log.info(
                "allow_publish is false: nothing published; the VMs' interface IPs are "
                "reachable only from inside the environment's network"
            )
        try:
            endpoints = self.hook.get_ssh_endpoints(eid, self.vm_names, ssh_port=port)
        except ValueError as exc:
            raise _invalid(exc) from None
        return {
            "id": eid,
            "endpoints": [
                {
                    "vm_id": e.vm_id,
                    "vm_name": e.vm_name,
                    "host": e.host,
                    "port": e.port,
                    "via": e.via,
                }
                for e in endpoints
            ],
            "published": published,
        }


class CheckRestoredVMsOperator(BaseOperator):
    """Check each restored VM over SSH: reachable, each mount's filesystem clean
    (``e2fsck -n``, read-only), the application's own check command passing.

    Fails, naming each VM and check that failed, unless every check passed. Returns the
    report (``ok``, ``vms``, ``problems``, ``finished_at``) and, given ``requested_at``, the
    ``recovery_seconds`` from the restore request to every check passing.

    :param endpoints: the VMs' SSH endpoints (``PublishSshOperator``'s ``endpoints``; templated)
    :param ssh_conn_id: the SSH connection (user and key) the VMs let in
    :param mounts: the filesystems to check: a list for every VM, or VM name -> list
    :param app_check: the application's check command, e.g. ``pg_isready && psql -c 'select 1'``
    :param requested_at: epoch seconds of the restore request (templated), for the recovery time
    :param use_sudo: run the fsck through ``sudo -n`` (None: for users other than root)
    :param boot_timeout: seconds to wait for each VM's SSH server
    :param step_timeout: seconds each VM's checks may take
    """

    template_fields: Sequence[str] = (
        "endpoints",
        "mounts",
        "app_check",
        "requested_at",
        "boot_timeout",
        "step_timeout",
    )
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        endpoints: Any,
        ssh_conn_id: str,
        mounts: Any = None,
        app_check: str | None = None,
        requested_at: Any = None,
        use_sudo: bool | None = None,
        boot_timeout: Any = 300,
        step_timeout: Any = 600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoints = endpoints
        self.ssh_conn_id = ssh_conn_id
        self.mounts = mounts
        self.app_check = app_check
        self.requested_at = requested_at
        self.use_sudo = use_sudo
        self.boot_timeout = boot_timeout
        self.step_timeout = step_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_skytap.quiesce import verify

        try:
            spec = verify.VerifySpec.build(
                mounts=self.mounts,
                app_check=self.app_check or None,
                use_sudo=self.use_sudo,
                boot_timeout=self.boot_timeout,
                step_timeout=self.step_timeout,
            )
            endpoints = self.endpoints
            if isinstance(endpoints, Mapping):
                endpoints = endpoints.get("endpoints")
            if not isinstance(endpoints, list) or not endpoints:
                raise ValueError(f"endpoints must be a non-empty list, got {endpoints!r}")
            targets = verify.targets_from_endpoints(endpoints, self.ssh_conn_id)
            requested = (
                None
                if self.requested_at in (None, "", "None")
                else checks.positive_seconds("requested_at", self.requested_at)
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _invalid(ValueError(str(exc))) from None
        report = verify.verify_targets(spec, targets, logger=self.log)
        result = report.to_xcom()
        if requested is not None:
            result["recovery_seconds"] = round(report.finished_at - requested, 3)
        context["ti"].xcom_push(key="report", value=result)  # kept when the task fails
        if not report.ok:
            raise AirflowFailException(
                "the restored VMs failed their checks: " + " | ".join(report.problems())
            )
        if requested is not None:
            self.log.info(
                "Every check passed on %d VMs: recovery time %.1f s from the restore request",
                len(report.vms),
                result["recovery_seconds"],
            )
        return result


class DeleteRestoredEnvironmentOperator(_RestoreOperator):
    """Delete what a restore made (its published services, then the environment), waiting
    until Skytap answers 404. Idempotent: nothing made, or already gone, is a success.

    Use it as the drill's teardown, so it runs on every path:
    ``DeleteRestoredEnvironmentOperator(...).as_teardown(setups=restore)``.

    :param environment_id: the environment (templated; empty or "None": find it by ``name``)
    :param name: the restore's environment name, to find one whose id never reached XCom
    :param published: the services to unpublish first (``PublishSshOperator``'s ``published``)
    :param timeout: seconds to wait for the deletion
    :param skytap_conn_id: the ``skytap`` connection
    """

    template_fields: Sequence[str] = ("environment_id", "name", "published")

    def __init__(
        self,
        *,
        environment_id: Any = None,
        name: str | None = None,
        published: Any = None,
        timeout: float = 600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment_id = environment_id
        self.name = name
        self.published = published
        self.timeout = timeout

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            eid = _optional_id(self.environment_id)
            if eid is not None:
                eid = check_id(eid, "environment_id")
            name = None if self.name in (None, "", "None") else check_name(self.name, "name")
            published = self.published if isinstance(self.published, list) else []
            for svc in published:
                if not isinstance(svc, Mapping) or not {
                    "vm_id",
                    "interface_id",
                    "service_id",
                } <= set(svc):
                    raise ValueError(f"published: {svc!r} is not a published service")
        except ValueError as exc:
            raise _invalid(exc) from None
        deleted = self.hook.delete_restored(
            eid, name=name, published=published, timeout=self.timeout
        )
        return {"id": deleted, "deleted": deleted is not None}


__all__ = [
    "ENVIRONMENT_ID_KEY",
    "CheckRestoredVMsOperator",
    "DeleteRestoredEnvironmentOperator",
    "PublishSshOperator",
    "RestoreEnvironmentOperator",
    "StartEnvironmentOperator",
]
