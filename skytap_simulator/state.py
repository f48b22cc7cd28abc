"""The simulated Skytap account: resources, copies, busy rules. Pure Python, no HTTP.

Every timed change (a copy, a runstate change, a deletion) is stored as timestamps and
applied lazily by :meth:`SimState._settle` on the next access, so the state survives a
restart from a state file. Only the disk image copies run in threads (see ``disks.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import (
    CONFIGURATION,
    ENV_RUNSTATES,
    REGIONS,
    TEMPLATE,
    VM,
    Config,
    ImageTask,
    Interface,
    Job,
    Kind,
    Resource,
    Service,
    StateDoc,
    Suspension,
    Tag,
)

LABELS: dict[str, str] = {CONFIGURATION: "Configuration", TEMPLATE: "Template"}
#: The environment fields ``PUT /v2/configurations/{id}`` changes besides name and runstate.
NETWORK_FLAGS = ("outbound_traffic", "routable")


class SimError(Exception):
    """An API error with an HTTP status."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SimError):
    """404: unknown or deleted resource."""

    status = 404


class Forbidden(SimError):
    """403: the user may not do this (e.g. ``scope=company`` as a non-admin)."""

    status = 403


class Busy(SimError):
    """423: the resource is busy or locked by a copy."""

    status = 423


class Invalid(SimError):
    """422: semantic errors, reported as ``{"errors": [...]}``."""

    status = 422

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class ImageCopyRequest:
    """What a disk copier needs: read ``src`` into ``dst`` between ``start_at`` and ``ready_at``."""

    job_id: str
    vm_id: str
    src: str
    dst: str
    start_at: float
    ready_at: float
    generation: int


ImageRunner = Callable[[ImageCopyRequest], None]
FailureLookup = Callable[[str], "str | None"]


def _no_failure(_name: str) -> str | None:
    return None


def lockversion_of(res: Resource) -> str:
    """Skytap-like opaque lockversion string, changing with every modification."""
    return hashlib.sha1(
        f"{res.kind}:{res.id}:{res.lockversion}".encode(), usedforsecurity=False
    ).hexdigest()


def storage_of(res: Resource) -> int:
    """Total disk size of a resource in MB."""
    return sum(d.size for vm in res.vms for d in vm.hardware.disks)


def name_matches(name: str, pattern: str) -> bool:
    """Skytap ``name:`` query: a trailing ``*`` is a prefix wildcard, otherwise exact."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


class SimState:
    """Thread-safe account state; one lock guards everything."""

    def __init__(
        self,
        doc: StateDoc,
        *,
        data_dir: Path,
        clock: Callable[[], float] = time.time,
        image_runner: ImageRunner | None = None,
        state_file: Path | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._doc = doc
        self._data_dir = data_dir
        self._clock = clock
        self._runner = image_runner
        self._state_file = state_file
        self._generation = 0
        self._dirty = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Resume image copies of jobs in flight (after a load from a state file)."""
        with self._txn():
            for job in self._doc.jobs.values():
                if not job.done:
                    self._launch_images(job)
            self._dirty = True

    def replace(self, doc: StateDoc) -> None:
        """Swap in a new state (reset); copies in flight from the old one are forgotten."""
        with self._lock:
            self._generation += 1
            self._doc = doc
        self.start()

    @property
    def generation(self) -> int:
        """Bumped on every reset; image copiers of an older generation are stale."""
        return self._generation

    @property
    def config(self) -> Config:
        """The current account settings."""
        with self._lock:
            return self._doc.config.model_copy()

    def set_config(self, config: Config) -> Config:
        """Replace the account settings (new durations apply to new operations)."""
        with self._txn():
            self._doc.config = config
            self._dirty = True
            return config.model_copy()

    def authenticate(self, username: str, token: str) -> bool:
        """True when ``username:token`` is a known user (constant-time token compare)."""
        with self._lock:
            users = {u.username: u.token for u in self._doc.users}
        known = users.get(username)
        return known is not None and hmac.compare_digest(known.encode(), token.encode())

    @contextmanager
    def _txn(self) -> Iterator[float]:
        """Hold the lock, settle timed changes, save the state file if anything changed."""
        with self._lock:
            if self._settle():
                self._dirty = True
            try:
                yield self._clock()
            finally:
                if self._dirty:
                    self._dirty = False
                    self._save()

    def _save(self) -> None:
        if self._state_file is None:
            return
        save_state_file(self._state_file, self._doc)

    # ----------------------------------------------------------------- settling

    def _settle(self) -> bool:
        """Apply every timed change whose time has come; True if anything changed."""
        now = self._clock()
        changed = False
        for job in sorted(self._active_jobs(), key=lambda j: j.ready_at):
            if now >= job.ready_at and all(i.done for i in job.images):
                self._finish_job(job, now)
                changed = True
        for res in self._all_resources():
            if (
                res.transition_until is not None
                and now >= res.transition_until
                and not self._waits_for_boot(res)
            ):
                self._land_transition(res)
                changed = True
            if res.delete_until is not None and not res.deleted and now >= res.delete_until:
                res.deleted = True
                res.lockversion += 1
                changed = True
        return changed

    def _finish_job(self, job: Job, now: float) -> None:
        job.done = True
        job.finished_at = now
        target = self._table(job.target_kind).get(job.target_id)
        if target is not None:
            image_errors = [i.error for i in job.images if i.error]
            target.error = job.fail_message or (image_errors[0] if image_errors else None)
            target.lockversion += 1
        source = self._table(job.source_kind).get(job.source_id)
        if source is not None and not source.deleted:
            # VMs a non-live copy suspended stay suspended (Skytap resumes nothing).
            source.lockversion += 1

    def _waits_for_boot(self, res: Resource) -> bool:
        """With a hypervisor, an environment made from a template runs once its VMs booted."""
        return (
            self._doc.config.hypervisor
            and res.from_template is not None
            and res.transition_to == "running"
            and any(vm.booted_ssh_port is None for vm in res.vms)
        )

    @staticmethod
    def _land_transition(res: Resource) -> None:
        target = res.transition_to or res.runstate
        res.runstate = target
        for vm in res.vms:
            vm.runstate = target
        res.transition_to = None
        res.transition_until = None
        res.lockversion += 1

    # ----------------------------------------------------------------- lookups

    def _table(self, kind: str) -> dict[str, Resource]:
        return self._doc.environments if kind == CONFIGURATION else self._doc.templates

    def _all_resources(self) -> Iterator[Resource]:
        yield from self._doc.environments.values()
        yield from self._doc.templates.values()

    def _get(self, kind: str, rid: str) -> Resource:
        res = self._table(kind).get(str(rid))
        if res is None or res.deleted:
            raise NotFound(f"{LABELS[kind]} {rid} not found")
        return res

    def _active_jobs(self) -> list[Job]:
        return [j for j in self._doc.jobs.values() if not j.done]

    def _is_copy_source(self, res: Resource) -> bool:
        return any(j.source_kind == res.kind and j.source_id == res.id for j in self._active_jobs())

    def _is_creating(self, res: Resource) -> bool:
        job = self._doc.jobs.get(res.job_id) if res.job_id else None
        return job is not None and not job.done

    def busy_reason(self, res: Resource) -> str | None:
        """Why ``res`` refuses changes right now, or None when it is idle."""
        if res.delete_until is not None:
            return "being deleted"
        if self._is_creating(res):
            return "being created"
        if res.transition_until is not None:
            return f"changing runstate to {res.transition_to}"
        if self._doc.config.source_lock and self._is_copy_source(res):
            return "locked by a copy in progress"
        return None

    def runstate_of(self, res: Resource) -> str:
        """The environment runstate the API shows (``busy`` while anything is under way)."""
        return "busy" if self.busy_reason(res) else res.runstate

    def vm_runstate_of(self, res: Resource, vm_runstate: str | None) -> str:
        """A VM's runstate: busy while its environment is created, changed or deleted."""
        reason = self.busy_reason(res)
        if reason and not reason.startswith("locked"):
            return "busy"
        return vm_runstate or "stopped"

    def _check_idle(self, res: Resource) -> None:
        reason = self.busy_reason(res)
        if reason:
            raise Busy(f"{LABELS[res.kind]} {res.id} is busy ({reason}); retry shortly")

    # ----------------------------------------------------------------- reads

    def read(self, fn: Callable[[SimState], Any]) -> Any:
        """Run ``fn`` under the lock on settled state (views use this to stay consistent)."""
        with self._txn():
            return fn(self)

    def find(self, kind: str, rid: str) -> Resource:
        """Settled resource object (call only inside :meth:`read`)."""
        return self._get(kind, rid)

    def query(
        self, kind: str, *, owner: str | None, name: str | None, region: str | None
    ) -> list[Resource]:
        """Visible resources of ``kind`` sorted by id (call only inside :meth:`read`)."""
        found = [
            r
            for r in self._table(kind).values()
            if not r.deleted
            and (owner is None or r.owner == owner)
            and (name is None or name_matches(r.name, name))
            and (region is None or r.region == region)
        ]
        return sorted(found, key=lambda r: int(r.id) if r.id.isdigit() else 0)

    def quotas(self) -> list[dict[str, Any]]:
        """Company quotas with computed usage."""
        with self._txn():
            envs = [r for r in self._doc.environments.values() if not r.deleted]
            running = sum(
                1
                for env in envs
                for vm in env.vms
                if self.vm_runstate_of(env, vm.runstate) == "running"
            )
            storage = sum(storage_of(r) for r in self._all_resources() if not r.deleted)
            usage = {"concurrent_vms": running, "concurrent_storage_size": storage}
            return [
                {
                    "quota_type": q.quota_type,
                    "units": q.units,
                    "limit": q.limit,
                    "usage": usage.get(q.quota_type, 0),
                }
                for q in self._doc.quotas
            ]

    # ----------------------------------------------------------------- writes

    def update(self, kind: str, rid: str, body: dict[str, Any]) -> None:
        """PUT: rename/describe; for environments also change the runstate."""
        errors = _check_text_fields(body)
        runstate = body.get("runstate")
        if kind == CONFIGURATION and runstate is not None and runstate not in ENV_RUNSTATES:
            errors.append(f"runstate '{runstate}' is not one of {', '.join(ENV_RUNSTATES)}")
        for flag in NETWORK_FLAGS:
            if flag in body and not isinstance(body[flag], bool):
                errors.append(f"{flag} must be true or false")
        if errors:
            raise Invalid(errors)
        with self._txn() as now:
            res = self._get(kind, rid)
            self._check_idle(res)
            if body.get("name") is not None:
                res.name = body["name"]
            if body.get("description") is not None:
                res.description = body["description"]
            if kind == CONFIGURATION:
                for flag in NETWORK_FLAGS:
                    if flag in body:
                        setattr(res, flag, body[flag])
            if kind == CONFIGURATION and runstate and runstate != res.runstate:
                res.transition_to = runstate
                res.transition_until = now + self._scaled(self._doc.config.transition_seconds)
            self._touch(res)

    def delete(self, kind: str, rid: str) -> None:
        """DELETE: busy for ``delete_seconds``, then gone; repeated while deleting: no-op."""
        with self._txn() as now:
            res = self._get(kind, rid)
            if res.delete_until is not None:
                return
            self._check_idle(res)
            res.delete_until = now + self._scaled(self._doc.config.delete_seconds)
            self._touch(res)

    def add_tags(self, kind: str, rid: str, values: list[str]) -> list[Tag]:
        """Add tags (duplicates ignored); allowed even while the resource is busy."""
        with self._txn():
            res = self._get(kind, rid)
            existing = {t.value for t in res.tags}
            for value in values:
                if value not in existing:
                    res.tags.append(Tag(id=self._new_id(), value=value))
                    existing.add(value)
            self._touch(res)
            return [t.model_copy() for t in res.tags]

    def tags(self, kind: str, rid: str) -> list[Tag]:
        """The tags of a resource."""
        with self._txn():
            return [t.model_copy() for t in self._get(kind, rid).tags]

    def remove_tag(self, kind: str, rid: str, tag_id: str) -> None:
        """Remove one tag by id, or NotFound."""
        with self._txn():
            res = self._get(kind, rid)
            kept = [t for t in res.tags if t.id != tag_id]
            if len(kept) == len(res.tags):
                raise NotFound(f"Tag {tag_id} not found on {LABELS[kind]} {rid}")
            res.tags = kept
            self._touch(res)

    def _touch(self, res: Resource) -> None:
        res.lockversion += 1
        self._dirty = True

    def _scaled(self, seconds: float) -> float:
        return seconds * self._doc.config.time_scale

    def _new_id(self) -> str:
        self._doc.next_id += 1
        return str(self._doc.next_id)

    def _new_port(self) -> int:
        self._doc.next_port += 1
        return self._doc.next_port

    # ----------------------------------------------------------------- copies

    def start_copy(
        self,
        target_kind: Kind,
        body: dict[str, Any],
        *,
        owner: str,
        fail_for: FailureLookup = _no_failure,
    ) -> str:
        """POST /configurations or /templates: start a copy and return the new resource id."""
        source_kind, source_id = _copy_source_of(body)
        errors = _check_copy_body(body)
        if errors:
            raise Invalid(errors)
        with self._txn() as now:
            source = self._get(source_kind, source_id)
            self._check_idle(source)
            self._check_region_override(source, target_kind, body)
            vms = _select_vms(source, body.get("vm_ids"))
            wanted = body.get("name") if self._doc.config.copy_names else None
            name = wanted or f"{source.name} - Copy"
            region = body.get("target_region") or source.region
            target = self._clone(source, target_kind, vms, name, region, owner, now)
            target.description = body.get("description") or source.description
            if target_kind == CONFIGURATION and source.kind == TEMPLATE:
                target.from_template = source.id
            target.from_running_vms = source.from_running_vms or (
                source.kind == CONFIGURATION and any(vm.runstate == "running" for vm in vms)
            )
            live = self._doc.config.live_clone and body.get("live_copy") is True
            job = self._new_job(source, target, vms, now, fail_for(name), live)
            self._table(target_kind)[target.id] = target
            self._doc.jobs[job.id] = job
            self._launch_images(job)
            self._touch(source)
            return target.id

    def _check_region_override(
        self, source: Resource, target_kind: str, body: dict[str, Any]
    ) -> None:
        """[ASSUMED] Skytap refuses a region copy of a template saved from running VMs unless
        the request sends ``copy_to_region_vm_status_override`` (Skytap's own script does)."""
        region = body.get("target_region")
        if (
            self._doc.config.region_copy_needs_override
            and source.kind == TEMPLATE
            and target_kind == TEMPLATE
            and region not in (None, source.region)
            and source.from_running_vms
            and body.get("copy_to_region_vm_status_override") is not True
        ):
            raise Invalid(
                [
                    "All VMs in the template are required to be Suspended or Powered Off in "
                    "order to copy to another region (send copy_to_region_vm_status_override)"
                ]
            )

    def suspended_by_copy(self) -> list[dict[str, Any]]:
        """Every VM a copy or save without ``live_copy`` suspended, oldest first."""
        with self._txn():
            return [s.model_dump() for s in self._doc.suspended_by_copy]

    def _new_job(
        self,
        source: Resource,
        target: Resource,
        vms: list[VM],
        now: float,
        fail: str | None,
        live: bool,
    ) -> Job:
        config = self._doc.config
        region_copy = target.region != source.region
        if region_copy:
            start = max(now, self._doc.region_free_at.get(target.region, now))
            ready = start + self._scaled(config.region_copy_seconds)
            self._doc.region_free_at[target.region] = ready
        else:
            start, ready = now, now + self._scaled(config.copy_seconds)
        job = Job(
            id=self._new_id(),
            source_kind=source.kind,
            source_id=source.id,
            target_kind=target.kind,
            target_id=target.id,
            region=target.region,
            region_copy=region_copy,
            live=live,
            requested_at=now,
            start_at=start,
            ready_at=ready,
            fail_message=fail,
            images=self._image_tasks(vms, target),
        )
        target.job_id = job.id
        if source.kind == CONFIGURATION and not job.live:
            self._suspend_for_copy(source, job, now)
        return job

    def _suspend_for_copy(self, source: Resource, job: Job, now: float) -> None:
        """Without live clone, the source's running VMs are suspended (Skytap's help: "VMs
        are automatically suspended"), and stay so until someone resumes them."""
        for vm in source.vms:
            if vm.runstate == "running":
                vm.runstate = "suspended"
                job.suspended_vm_ids.append(vm.id)
                self._doc.suspended_by_copy.append(
                    Suspension(environment_id=source.id, vm_id=vm.id, job_id=job.id, at=now)
                )
        if source.runstate == "running":
            job.restore_runstate = "running"
            source.runstate = "suspended"

    def _image_tasks(self, vms: list[VM], target: Resource) -> list[ImageTask]:
        tasks = []
        for src_vm, new_vm in zip(vms, target.vms, strict=True):
            if src_vm.disk_image:
                dst = self._data_dir / f"{target.kind}-{target.id}-vm-{new_vm.id}.img"
                new_vm.disk_image = str(dst)
                tasks.append(ImageTask(vm_id=new_vm.id, src=src_vm.disk_image, dst=str(dst)))
        return tasks

    def _clone(
        self,
        source: Resource,
        kind: Kind,
        vms: list[VM],
        name: str,
        region: str,
        owner: str,
        now: float,
    ) -> Resource:
        """A new resource copying ``vms`` of ``source`` with fresh ids; tags are not copied."""
        target = Resource(
            kind=kind,
            id=self._new_id(),
            name=name,
            region=region,
            owner=owner,
            runstate="stopped",
            created_at=now,
        )
        net_map: dict[str, str] = {}
        for net in source.networks:
            new_net = net.model_copy(deep=True, update={"id": self._new_id()})
            net_map[net.id] = new_net.id
            target.networks.append(new_net)
        for vm in vms:
            target.vms.append(self._clone_vm(vm, net_map))
        return target

    def _clone_vm(self, vm: VM, net_map: dict[str, str]) -> VM:
        new_vm = vm.model_copy(deep=True)
        new_vm.id = self._new_id()
        new_vm.runstate = "stopped"
        new_vm.error = None
        new_vm.disk_image = None
        new_vm.booted_ssh_port = None
        for disk in new_vm.hardware.disks:
            disk.id = self._new_id()
        new_vm.interfaces = [self._clone_interface(i, net_map) for i in new_vm.interfaces]
        return new_vm

    def _clone_interface(self, iface: Interface, net_map: dict[str, str]) -> Interface:
        new = iface.model_copy(deep=True)
        new.id = self._new_id()
        new.network_id = net_map.get(iface.network_id, iface.network_id)
        for svc in new.services:
            svc.id = self._new_id()
            svc.external_port = self._new_port()
        return new

    def _launch_images(self, job: Job) -> None:
        if self._runner is None:
            for task in job.images:
                task.done = True
            return
        for task in job.images:
            if not task.done:
                self._runner(
                    ImageCopyRequest(
                        job_id=job.id,
                        vm_id=task.vm_id,
                        src=task.src,
                        dst=task.dst,
                        start_at=job.start_at,
                        ready_at=job.ready_at,
                        generation=self._generation,
                    )
                )

    def image_done(self, req: ImageCopyRequest, error: str | None) -> None:
        """Called by a disk copier when its image is complete (or failed)."""
        with self._txn():
            if req.generation != self._generation:
                return
            job = self._doc.jobs.get(req.job_id)
            if job is None:
                return
            for task in job.images:
                if task.vm_id == req.vm_id:
                    task.done = True
                    task.error = error
            self._dirty = True

    # ----------------------------------------------------------------- published services

    def _interface(self, env_id: str, vm_id: str, iface_id: str) -> tuple[Resource, VM, Interface]:
        env = self._get(CONFIGURATION, env_id)
        vm = next((v for v in env.vms if v.id == str(vm_id)), None)
        if vm is None:
            raise NotFound(f"VM {vm_id} not found in Configuration {env_id}")
        iface = next((i for i in vm.interfaces if i.id == str(iface_id)), None)
        if iface is None:
            raise NotFound(f"Interface {iface_id} not found on VM {vm_id}")
        return env, vm, iface

    def services(self, env_id: str, vm_id: str, iface_id: str) -> list[Service]:
        """The services published on one VM interface."""
        with self._txn():
            _, _, iface = self._interface(env_id, vm_id, iface_id)
            return [s.model_copy() for s in iface.services]

    def publish(self, env_id: str, vm_id: str, iface_id: str, body: dict[str, Any]) -> Service:
        """POST .../services ``{"internal_port": N}``: answers ``external_ip``/``external_port``.

        [ASSUMED] a port already published on the interface is refused (422), and a busy
        environment refuses (423) as for any other change.
        """
        port = body.get("internal_port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise Invalid([f"internal_port must be a TCP port 1-65535, got {port!r}"])
        with self._txn():
            env, vm, iface = self._interface(env_id, vm_id, iface_id)
            self._check_idle(env)
            if any(s.internal_port == port for s in iface.services):
                raise Invalid([f"port {port} is already published on interface {iface_id}"])
            booted = vm.booted_ssh_port if port == 22 else None
            service = Service(
                id=self._new_id(),
                internal_port=port,
                external_ip="127.0.0.1",
                external_port=booted or self._new_port(),
            )
            iface.services.append(service)
            self._touch(env)
            return service.model_copy()

    def unpublish(self, env_id: str, vm_id: str, iface_id: str, service_id: str) -> None:
        """DELETE .../services/{id}; NotFound when it is not there (any more)."""
        with self._txn():
            env, _, iface = self._interface(env_id, vm_id, iface_id)
            kept = [s for s in iface.services if s.id != str(service_id)]
            if len(kept) == len(iface.services):
                raise NotFound(f"Published service {service_id} not found")
            iface.services = kept
            self._touch(env)

    # ----------------------------------------------------------------- admin

    def restored(self) -> list[dict[str, Any]]:
        """Every environment made from a template: id, template, runstate, deleted, deleting."""
        with self._txn():
            return [
                {
                    "id": env.id,
                    "name": env.name,
                    "template_id": env.from_template,
                    "runstate": self.runstate_of(env) if not env.deleted else "deleted",
                    "deleted": env.deleted,
                    "deleting": env.delete_until is not None and not env.deleted,
                }
                for env in self._doc.environments.values()
                if env.from_template is not None
            ]

    def booted(self, env_id: str, ports: dict[str, int]) -> None:
        """A hypervisor booted these VMs (id -> SSH port); their port 22 services answer it."""
        with self._txn():
            env = self._get(CONFIGURATION, env_id)
            for vm in env.vms:
                if vm.id in ports:
                    vm.booted_ssh_port = int(ports[vm.id])
                    for iface in vm.interfaces:
                        for svc in iface.services:
                            if svc.internal_port == 22:
                                svc.external_port = vm.booted_ssh_port
            self._touch(env)

    def snapshot(self) -> dict[str, Any]:
        """Everything, for ``GET /_sim/state``: deleted resources, image paths, timestamps.

        ``environments``, ``templates`` and ``jobs`` are lists sorted by id; each resource
        carries ``busy_reason`` (null when idle) and ``deleted``; users show no tokens.
        """
        with self._txn() as now:
            doc = self._doc.model_dump(mode="json", exclude={"users", "environments"})
            doc.pop("templates")
            doc["now"] = now
            doc["users"] = [u.username for u in self._doc.users]
            doc["environments"] = self._dump_table(self._doc.environments)
            doc["templates"] = self._dump_table(self._doc.templates)
            doc["jobs"] = sorted(doc["jobs"].values(), key=lambda j: int(j["id"]))
            return doc

    def _dump_table(self, table: dict[str, Resource]) -> list[dict[str, Any]]:
        out = []
        for res in sorted(table.values(), key=lambda r: int(r.id) if r.id.isdigit() else 0):
            item = res.model_dump(mode="json")
            item["busy_reason"] = self.busy_reason(res)
            item["lockversion"] = lockversion_of(res)
            out.append(item)
        return out


def _copy_source_of(body: dict[str, Any]) -> tuple[Kind, str]:
    if body.get("configuration_id") not in (None, ""):
        return CONFIGURATION, str(body["configuration_id"])
    if body.get("template_id") not in (None, ""):
        return TEMPLATE, str(body["template_id"])
    raise Invalid(["configuration_id or template_id is required"])


def _check_text_fields(body: dict[str, Any]) -> list[str]:
    errors = []
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        errors.append("name must be a non-empty string")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        errors.append("description must be a string")
    return errors


def _check_copy_body(body: dict[str, Any]) -> list[str]:
    errors = _check_text_fields(body)
    region = body.get("target_region")
    if region is not None and region not in REGIONS:
        errors.append(f"target_region '{region}' is not a Skytap region")
    for flag in ("live_copy", "copy_to_region_vm_status_override"):
        if flag in body and not isinstance(body[flag], bool):
            errors.append(f"{flag} must be true or false")
    vm_ids = body.get("vm_ids")
    if vm_ids is not None and (not isinstance(vm_ids, list) or not vm_ids):
        errors.append("vm_ids must be a non-empty list of VM ids")
    return errors


def _select_vms(source: Resource, vm_ids: list[Any] | None) -> list[VM]:
    if vm_ids is None:
        return list(source.vms)
    wanted = [str(v) for v in vm_ids]
    known = {vm.id for vm in source.vms}
    unknown = [v for v in wanted if v not in known]
    if unknown:
        raise Invalid([f"vm_ids not in {LABELS[source.kind]} {source.id}: {', '.join(unknown)}"])
    return [vm for vm in source.vms if vm.id in wanted]


def save_state_file(path: Path, doc: StateDoc) -> None:
    """Write the state atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(doc.model_dump_json())
    os.replace(tmp, path)


def load_state_file(path: Path) -> StateDoc:
    """Read a state file written by :func:`save_state_file`."""
    return StateDoc.model_validate_json(path.read_text(encoding="utf-8"))
