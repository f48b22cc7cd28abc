"""Trigger-form params for the freeze settings of a DAG that freezes a Skytap environment.

``quiesce_params()`` gives the Params (each with a title, a description and a JSON-schema
type, so the UI's Trigger form shows and checks them); ``QUIESCE_FROM_PARAMS`` gives both
QuiesceOperator tasks (freeze and thaw) the same values from them, templated::

    with DAG(..., params=quiesce_params(), render_template_as_native_obj=True):
        freeze = QuiesceOperator(task_id="freeze", action="freeze",
                                 max_freeze_seconds="{{ params.max_freeze_seconds }}",
                                 **QUIESCE_FROM_PARAMS)

``render_template_as_native_obj=True`` is needed: lists and mappings stay lists and mappings.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

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
