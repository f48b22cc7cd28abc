"""What to quiesce and how: the targets and the validated settings of a quiesce session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_skytap import checks
from airflow_provider_skytap.quiesce import commands as qc

FAILURE_POLICIES = ("fail", "continue_crash_consistent")
# Hosts worked on at once by default: each is a thread waiting on its SSH session, cheap on
# the worker; bounding it lower made 32 hosts take four rounds of every step.
MAX_PARALLEL = 64
# How long a release waits for a guardian to answer before unfreezing in its place (only the
# mounts whose owner record still names that guardian).
GUARDIAN_WAIT = 30


@dataclass(frozen=True)
class QuiesceTarget:
    """One VM to quiesce: its stable key (part of the guardian's name) and how to reach it.

    :param key: stable across the tasks of a run (the guardian's name derives from it)
    :param name: what ``mounts`` may be keyed by: the SSH connection id, or the VM's name
    :param label: how logs and errors name it
    :param ssh_conn_id: the Airflow SSH connection (user, key; host and port unless given)
    :param host: the address, overriding the connection's
    :param port: the port, overriding the connection's
    """

    key: str
    name: str
    label: str
    ssh_conn_id: str
    host: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class QuiesceSpec:
    """The validated settings of a session; build one with :meth:`build`."""

    mounts: dict[str, list[str]]  # target name (or "*") -> mounts
    profile: str
    options: dict[str, str]
    max_seconds: int | None
    failure_policy: str = "fail"
    allow_root_fs: bool = False
    max_parallel: int = MAX_PARALLEL
    step_timeout: int = 120
    probe_timeout: int = 10
    use_sudo: bool | None = None
    connect_attempts: int = 3
    guardian_wait: int = GUARDIAN_WAIT

    @classmethod
    def build(
        cls,
        *,
        mounts: Any,
        max_freeze_seconds: Any = None,
        profile: Any = "fsfreeze",
        profile_options: Mapping[str, Any] | None = None,
        pre_freeze_command: str | None = None,
        post_thaw_command: str | None = None,
        allow_root_fs: bool = False,
        failure_policy: Any = "fail",
        max_parallel: Any = MAX_PARALLEL,
        step_timeout: Any = 120,
        probe_timeout: Any = 10,
        use_sudo: bool | None = None,
        ssh_connect_attempts: Any = 3,
        guardian_wait: Any = None,
    ) -> QuiesceSpec:
        """Validate rendered values; a ValueError names the field and the value.

        :param mounts: a list for every target, or a mapping target name -> list (``"*"``: the rest)
        :param max_freeze_seconds: the guardians' deadline (None: a release only)
        :param profile: fsfreeze, postgres, mysql, custom or app
        :param profile_options: the profile's options
        :param pre_freeze_command: custom / app: the command before the freeze (app: the pause)
        :param post_thaw_command: custom / app: the command after the thaw (app: the resume)
        :param allow_root_fs: allow the system mounts (``commands.SYSTEM_MOUNTS``)
        :param failure_policy: ``fail`` or ``continue_crash_consistent``
        :param max_parallel: hosts worked on at once
        :param step_timeout: seconds a profile step may take on a VM
        :param probe_timeout: seconds a release's write check may take per mount
        :param use_sudo: run the VM side through ``sudo -n`` (default: unless root, or app)
        :param ssh_connect_attempts: attempts to open each SSH connection
        :param guardian_wait: seconds a release waits for a guardian before acting in its place
            (default :data:`GUARDIAN_WAIT`)
        """
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(
                f"failure_policy must be one of {', '.join(FAILURE_POLICIES)}, "
                f"got {failure_policy!r}"
            )
        return cls(
            mounts=qc.validate_mount_map(
                mounts, allow_root_fs=bool(allow_root_fs), profile=str(profile)
            ),
            profile=str(profile),
            options=qc.validate_profile(
                profile,
                profile_options,
                pre_freeze_command=pre_freeze_command,
                post_thaw_command=post_thaw_command,
            ),
            max_seconds=(
                None
                if max_freeze_seconds is None
                else checks.whole_seconds("max_freeze_seconds", max_freeze_seconds)
            ),
            failure_policy=str(failure_policy),
            allow_root_fs=bool(allow_root_fs),
            max_parallel=checks.positive_int("max_parallel", max_parallel),
            step_timeout=checks.whole_seconds("step_timeout", step_timeout),
            probe_timeout=checks.whole_seconds("probe_timeout", probe_timeout),
            use_sudo=use_sudo,
            connect_attempts=checks.positive_int("ssh_connect_attempts", ssh_connect_attempts),
            guardian_wait=checks.whole_seconds(
                "guardian_wait", GUARDIAN_WAIT if guardian_wait is None else guardian_wait
            ),
        )

    def mounts_for(self, targets: Sequence[QuiesceTarget]) -> dict[str, list[str]]:
        """Each target's mounts by target name; a ValueError for a key naming no target."""
        return qc.mounts_per_target(self.mounts, [t.name for t in targets])
