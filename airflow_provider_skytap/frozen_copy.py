"""Freeze, live copy, wait, thaw: the chain every consistent Skytap copy needs, and its params.

``frozen_copy()`` adds the four tasks to the DAG being defined, wired the one safe way::

    freeze -> copy -> wait -> thaw (trigger_rule all_done)

and answers them, so a DAG goes on from ``[chain.wait, chain.thaw]``: whatever follows runs
only when the copy completed *and* the VMs were thawed, and a failed copy still fails the run
(put the DAG's leaves downstream of ``chain.wait``). ``quiesce_params()`` gives the trigger-form
Params it reads (each with a title, a description and a JSON-schema type)::

    with DAG(..., params=quiesce_params(), render_template_as_native_obj=True):
        chain = frozen_copy(target="template")
        [chain.wait, chain.thaw] >> copy_to_dr

``render_template_as_native_obj=True`` is needed: lists and mappings stay lists and mappings.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

from airflow.sdk import Param, TriggerRule, XComArg

from airflow_provider_skytap.operators.clone import LiveCloneOperator
from airflow_provider_skytap.operators.quiesce import QuiesceOperator
from airflow_provider_skytap.sensors.clone import CloneCompleteSensor

# QuiesceOperator keyword -> the template reading it from the params below.
QUIESCE_FROM_PARAMS: dict[str, Any] = {
    "environment_id": "{{ params.environment_id }}",
    "vm_names": "{{ params.vm_names or None }}",
    "ssh_conn_id": "{{ params.ssh_conn_id }}",
    "mounts": "{{ params.mounts }}",
    "profile": "{{ params.profile }}",
    "pre_freeze_command": "{{ params.pre_freeze_command or None }}",
    "post_thaw_command": "{{ params.post_thaw_command or None }}",
}


def quiesce_params(
    *,
    environment_id: str = "1001",
    ssh_conn_id: str = "skytap_vm_ssh",
    mounts: list[str] | dict[str, list[str]] | None = None,
    profile: str = "fsfreeze",
    max_freeze_seconds: int = 600,
) -> dict[str, Param]:
    """The environment, how to reach its VMs, and what to freeze, as trigger-form Params."""
    return {
        "environment_id": Param(
            environment_id,
            type="string",
            pattern=r"^[0-9]+$",
            title="Skytap environment",
            description="Id of the environment (the number in its Skytap URL).",
        ),
        "ssh_conn_id": Param(
            ssh_conn_id,
            type="string",
            minLength=1,
            title="SSH connection",
            description="Airflow connection with the user and key for the VMs. Hosts and ports "
            "come from each VM's published SSH service (port 22) in Skytap.",
        ),
        "vm_names": Param(
            [],
            type="array",
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
            description="Filesystems to freeze on each VM (for profile app: the application's "
            "directories). A list for every VM, or an object from VM name to its list, with "
            "\"*\" for the others. '/' is refused.",
        ),
        "profile": Param(
            profile,
            type="string",
            enum=["fsfreeze", "postgres", "mysql", "app", "custom"],
            title="Freeze profile",
            description="fsfreeze: filesystems only; postgres: CHECKPOINT, then freeze; mysql: "
            "FLUSH TABLES WITH READ LOCK held until the thaw; app: the commands below pause and "
            "resume the application, nothing frozen, no root needed; custom: the commands, "
            "then fsfreeze.",
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
        "pre_freeze_command": Param(
            "",
            type="string",
            title="Pause command (app, custom)",
            description="Shell command run on each VM before the freeze (profile app: pauses "
            "the application). It sees SKYTAP_QUIESCE_MOUNTS, that VM's mounts.",
            section="Advanced",
        ),
        "post_thaw_command": Param(
            "",
            type="string",
            title="Resume command (app, custom)",
            description="Shell command run on each VM after the thaw (profile app: resumes the "
            "application); it may run twice, so it must be harmless on a running application.",
            section="Advanced",
        ),
    }


class FrozenCopy(NamedTuple):
    """The four tasks of :func:`frozen_copy`."""

    freeze: QuiesceOperator
    copy: LiveCloneOperator
    wait: CloneCompleteSensor
    thaw: QuiesceOperator


def frozen_copy(
    *,
    target: str = "template",
    copy_task_id: str = "clone",
    wait_task_id: str = "wait_for_clone",
) -> FrozenCopy:
    """Add freeze -> copy -> wait -> thaw to the DAG being defined (settings from its params).

    - ``freeze`` retries twice after 10 s: a failed try has thawed what it froze (a retry first
      releases a guardian an earlier try left), and nothing is copied until it succeeds, so a
      Skytap or SSH outage before the freeze does not cost the night's backup.
    - the copy (:class:`LiveCloneOperator`, ``target`` template or environment) retries after
      5 s, not the DAG's delay: the VMs are frozen meanwhile.
    - ``wait`` pokes every 2 s backing off to 5 s instead of deferring: a deferral's round trip
      through the triggerer and the scheduler would be downtime.
    - ``thaw`` runs whatever happened upstream (``all_done``) and fails when a guardian had to
      thaw first (the copy is then not application-consistent).

    :param target: ``"template"`` (a backup) or ``"environment"`` (a running copy)
    :param copy_task_id: the copy task's id
    :param wait_task_id: the wait task's id
    """
    freeze = QuiesceOperator(
        task_id="freeze",
        action="freeze",
        max_freeze_seconds="{{ params.max_freeze_seconds }}",
        retries=2,
        retry_delay=timedelta(seconds=10),
        **QUIESCE_FROM_PARAMS,
    )
    copy = LiveCloneOperator(
        task_id=copy_task_id,
        environment_id="{{ params.environment_id }}",
        target=target,
        wait_for_completion=False,
        retry_delay=timedelta(seconds=5),
    )
    copy_id: Any = XComArg(copy, key="id")  # the copy's id, pushed as its own XCom
    wait = CloneCompleteSensor(
        task_id=wait_task_id,
        resource_id=copy_id,
        kind=target,
        poke_interval=2,
        max_poll_interval=5,
        mode="poke",
        deferrable=False,
        timeout=4 * 3600,
        retry_delay=timedelta(seconds=5),
    )
    thaw = QuiesceOperator(
        task_id="thaw",
        action="thaw",
        trigger_rule=TriggerRule.ALL_DONE,
        retry_delay=timedelta(seconds=5),
        **QUIESCE_FROM_PARAMS,
    )
    freeze >> copy >> wait >> thaw
    return FrozenCopy(freeze, copy, wait, thaw)
