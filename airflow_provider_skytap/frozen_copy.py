"""Freeze, live copy, wait, thaw: the chain every consistent Skytap copy needs, as a TaskGroup.

``frozen_copy()`` adds a task group of four tasks to the DAG being defined::

    <group>.freeze -> <group>.copy -> <group>.wait -> <group>.thaw (trigger_rule all_done)

Every second between the freeze and the release is the application's downtime, and starting
a task takes Airflow seconds, so no task starts inside that window: ``freeze`` freezes the
VMs, requests the copy (a plain call to :class:`~airflow_provider_skytap.copies.CopyService`),
polls it (0.5 s backing off to 1 s) and, the moment Skytap shows it complete, releases the
VMs over the SSH connections its :class:`~airflow_provider_skytap.quiesce.session.QuiesceSession`
still holds. ``copy`` then adopts that copy (ours, requested in this freeze window), waits
for it if it is not complete yet, and keeps its result; ``wait`` checks it; ``thaw`` runs
whatever happened (``all_done``): it releases whatever is still frozen (idempotent), reports
per VM and tags the copy with its verdict. No task runs another task's operator.

The settings are two spec objects built once in the DAG and handed to every task that needs
them (Airflow renders their ``template_fields``): a :class:`~airflow_provider_skytap.copies.
CopySpec` (what to copy) and a :class:`QuiesceChoice` (which VMs, which mounts, and which of
the DAG author's :class:`QuiescePreset` to use). The profile, its commands and the SSH
connection come only from the DAG's code: the trigger form picks among the names the DAG
author wrote, and the tasks refuse anything else, naming the field and the value.

The verdict (:func:`~airflow_provider_skytap.consistency.copy_verdict`):
``application-consistent`` only for a copy requested in this freeze window after every VM
was frozen, and complete before the first release. A copy of this DAG found from another
window (an earlier try, a cleared run) is adopted without freezing again, and vouched for at
best as ``crash-consistent``; one that is not provably this DAG's fails the run, named.

It answers the group; a DAG goes on from ``[chain.wait, chain.thaw]``: whatever follows runs
only when the copy completed *and* the VMs were released, and a failed copy still fails the
run::

    with DAG(..., params=quiesce_params(), render_template_as_native_obj=True):
        chain = frozen_copy(group_id="backup", target="template")
        [chain.wait, chain.thaw] >> copy_to_dr
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TaskGroup, TriggerRule, XComArg

from airflow_provider_skytap.copies import CopySpec
from airflow_provider_skytap.hooks.skytap import DEFAULT_CONN_ID
from airflow_provider_skytap.operators.frozen_copy import (
    COPY_KEY,
    FROZEN_MAX_POLL_SECONDS,
    FROZEN_POLL_SECONDS,
    AdoptCopyOperator,
    FreezeAndCopyOperator,
    ThawAndVouchOperator,
)
from airflow_provider_skytap.operators.quiesce import (
    DEFAULT_PRESETS,
    QuiesceChoice,
    QuiescePreset,
)
from airflow_provider_skytap.sensors.clone import CloneCompleteSensor

__all__ = [
    "COPY_KEY",
    "DEFAULT_PRESETS",
    "FROZEN_MAX_POLL_SECONDS",
    "FROZEN_POLL_SECONDS",
    "TASK_DOCS",
    "AdoptCopyOperator",
    "CopySpec",
    "FreezeAndCopyOperator",
    "FrozenCopyGroup",
    "QuiesceChoice",
    "QuiescePreset",
    "ThawAndVouchOperator",
    "choice_from_params",
    "frozen_copy",
    "quiesce_params",
]


def quiesce_params(
    *,
    environment_id: str = "1001",
    ssh_conn_ids: Sequence[str] = ("skytap_vm_ssh",),
    mounts: list[str] | dict[str, list[str]] | None = None,
    presets: Mapping[str, QuiescePreset] | None = None,
    profile: str = "fsfreeze",
    max_freeze_seconds: int = 600,
) -> dict[str, Param]:
    """The environment, how to reach its VMs, and what to freeze, as trigger-form Params.

    ``profile`` and ``ssh_conn_id`` are choices among the names the DAG's code gives
    (``presets``, ``ssh_conn_ids``): the form offers no free text that reaches a VM.
    """
    presets = dict(presets if presets is not None else DEFAULT_PRESETS)
    if profile not in presets:
        raise ValueError(f"profile {profile!r} is not one of presets ({', '.join(presets)})")
    return {
        "environment_id": Param(
            environment_id,
            type="string",
            pattern=r"^[0-9]+$",
            title="Skytap environment",
            description="Id of the environment (the number in its Skytap URL).",
        ),
        "ssh_conn_id": Param(
            ssh_conn_ids[0],
            type="string",
            enum=list(ssh_conn_ids),
            title="SSH connection",
            description="Airflow connection with the user and key for the VMs (one of the "
            "DAG's). Hosts and ports come from each VM's published SSH service (port 22).",
        ),
        "vm_names": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            title="VMs to freeze",
            description="Names of the VMs to freeze, one per line; empty: every VM.",
        ),
        "mounts": Param(
            mounts if mounts is not None else ["/srv/data"],
            type=["array", "object"],
            items={"type": "string", "pattern": "^/"},
            minItems=1,
            additionalProperties={"type": "array", "items": {"type": "string", "pattern": "^/"}},
            title="Mount points",
            description="Filesystems to freeze on each VM (for an app preset: the "
            "application's directories). A list for every VM, or an object from VM name to "
            "its list, with \"*\" for the others. '/' is refused.",
        ),
        "profile": Param(
            profile,
            type="string",
            enum=list(presets),
            title="How to quiesce",
            description="; ".join(f"{k}: {p.description or p.profile}" for k, p in presets.items())
            + ". The DAG's code defines these; the form cannot add one.",
        ),
        "max_freeze_seconds": Param(
            max_freeze_seconds,
            type="integer",
            minimum=10,
            maximum=7200,
            title="Longest freeze (seconds)",
            description="Each VM's guardian thaws by itself after this long, whatever happens "
            "to Airflow; the copy is then reported as not application-consistent. Size it to "
            "the copy's time plus a margin.",
        ),
    }


def choice_from_params(
    *,
    presets: Mapping[str, QuiescePreset] | None = None,
    ssh_conn_ids: Sequence[str] = ("skytap_vm_ssh",),
    skytap_conn_id: str = DEFAULT_CONN_ID,
) -> QuiesceChoice:
    """The :class:`QuiesceChoice` that reads :func:`quiesce_params` (with the same lists)."""
    return QuiesceChoice(
        environment_id="{{ params.environment_id }}",
        mounts="{{ params.mounts }}",
        max_freeze_seconds="{{ params.max_freeze_seconds }}",
        preset="{{ params.profile }}",
        ssh_conn_id="{{ params.ssh_conn_id }}",
        vm_names="{{ params.vm_names or None }}",
        presets=presets,
        ssh_conn_ids=ssh_conn_ids,
        skytap_conn_id=skytap_conn_id,
    )


#: Each task's ``doc_md`` (the task's page in the UI shows it).
TASK_DOCS = {
    "freeze": "Freezes the VMs' mounts over SSH (a guardian on each VM thaws by itself after "
    "the longest freeze), requests the Skytap copy, polls it every 0.5-1 s and releases the "
    "VMs the moment Skytap shows it complete. Retries only fail before the request.",
    "copy": "Adopts the copy the freeze requested (this DAG's tags, this freeze window) and "
    "publishes its id; waits for it if the freeze could not.",
    "wait": "Checks the copy is complete (pokes every 2 s backing off to 5 s).",
    "thaw": "Runs whatever happened upstream: releases whatever is still frozen, reports per "
    "VM how long it was frozen, and tags the copy with its verdict (application-consistent "
    "only when complete before the first release). Fails when a guardian released first.",
}


class FrozenCopyGroup(TaskGroup):
    """The task group :func:`frozen_copy` answers, with its four tasks by role."""

    freeze: FreezeAndCopyOperator
    copy: AdoptCopyOperator
    wait: CloneCompleteSensor
    thaw: ThawAndVouchOperator


def frozen_copy(
    *,
    group_id: str = "frozen_copy",
    copy: CopySpec | None = None,
    quiesce: QuiesceChoice | None = None,
    target: str = "template",
    skytap_conn_id: str = DEFAULT_CONN_ID,
) -> FrozenCopyGroup:
    """Add the task group freeze -> copy -> wait -> thaw to the DAG being defined.

    - ``freeze`` (:class:`FreezeAndCopyOperator`): freezes, requests the copy, and releases
      the VMs the moment it is complete; retries only fail before the request.
    - ``copy`` (:class:`AdoptCopyOperator`): adopts and publishes that copy (``copy.output``).
    - ``wait`` checks the copy is complete (pokes every 2 s backing off to 5 s).
    - ``thaw`` (:class:`ThawAndVouchOperator`, ``all_done``) releases what is still frozen,
      reports per VM and tags the verdict; it fails when a guardian released first.

    :param group_id: the group's id (two chains in one DAG need two)
    :param copy: what to copy; default: the environment of the DAG's ``environment_id``
        param, as ``target``
    :param quiesce: which VMs and how; default :func:`choice_from_params` (the DAG's params
        from :func:`quiesce_params`, with the default presets)
    :param target: ``"template"`` (a backup) or ``"environment"`` (a running copy), when
        ``copy`` is not given
    :param skytap_conn_id: the Skytap connection
    """
    copy = copy or CopySpec(environment_id="{{ params.environment_id }}", target=target)
    quiesce = quiesce or choice_from_params(skytap_conn_id=skytap_conn_id)
    group = FrozenCopyGroup(group_id=group_id)
    with group:
        # A failed freeze has released what it froze: its retry may come soon.
        freeze = FreezeAndCopyOperator(
            task_id="freeze",
            quiesce=quiesce,
            copy=copy,
            chain_id=group_id,
            retry_delay=timedelta(seconds=10),
            doc_md=TASK_DOCS["freeze"],
        )
        adopt = AdoptCopyOperator(
            task_id="copy",
            copy=copy,
            freeze_task_id=freeze.task_id,
            skytap_conn_id=skytap_conn_id,
            retry_delay=timedelta(seconds=5),
            doc_md=TASK_DOCS["copy"],
        )
        copy_id: Any = XComArg(adopt, key="id")
        wait = CloneCompleteSensor(
            task_id="wait",
            resource_id=copy_id,
            kind=copy.target,
            poke_interval=2,
            max_poll_interval=5,
            mode="poke",
            deferrable=False,
            timeout=4 * 3600,
            retry_delay=timedelta(seconds=5),
            skytap_conn_id=skytap_conn_id,
            doc_md=TASK_DOCS["wait"],
        )
        thaw = ThawAndVouchOperator(
            task_id="thaw",
            quiesce=quiesce,
            freeze_task_id=freeze.task_id,
            copy_task_id=adopt.task_id,
            trigger_rule=TriggerRule.ALL_DONE,
            retry_delay=timedelta(seconds=5),
            doc_md=TASK_DOCS["thaw"],
        )
        freeze >> adopt >> wait >> thaw
    group.freeze, group.copy, group.wait, group.thaw = freeze, adopt, wait, thaw
    return group
