"""Application-consistent backups of Skytap environments, with copies in DR regions: one DAG
per environment named in the config (``skytap_backups.yaml`` beside this file, or the file
``$SKYTAP_BACKUPS_CONFIG`` names; ``skytap_backups.example.yaml`` shows every field). Without
a config there is no backup DAG: nothing is frozen or copied in an environment nobody named.

dr_regions -> backup.freeze -> backup.copy -> backup.wait -> backup.thaw -> copy_to_dr -> prune

0. ``dr_regions``: checks the DR regions (Skytap's names, each once, not the environment's own
   region) before anything is frozen or copied, so a typo fails the run at once.
1. ``backup.freeze``: over SSH, a guardian on every VM freezes the mounts (after the
   preset's preparation, e.g. a PostgreSQL CHECKPOINT) and thaws by itself after
   ``max_freeze_seconds`` whatever happens to Airflow. Once every VM is frozen it requests
   the template (a Skytap live clone), polls it every 0.5-1 s and releases the VMs over the
   SSH connections it still holds the moment Skytap shows it complete: no task starts while
   the VMs are frozen. The template's name comes from the DAG, the environment and the
   logical date, marked with this freeze window; a retry or a re-run of the date finds the
   one an earlier try made (and does not freeze again), and anything under that name that
   is not provably this DAG's fails the run, named.
2. ``backup.copy``: adopts that template (this DAG's tags, made by the connection's user)
   and keeps its id (``chain.copy.output["id"]``); it waits for it if the freeze could not.
3. ``backup.wait``: checks the template is complete (it pokes; it does not defer).
4. ``backup.thaw``: runs whatever happened upstream (``all_done``), releases whatever is
   still frozen, reports per VM how long it was frozen, and tags the template
   ``application-consistent`` only if it was requested in this freeze window and complete
   before the first release. It fails when a guardian had to thaw on its own (the template
   is then tagged ``inconsistent``).
5. ``copy_to_dr``: copies the template to each DR region; these copies take hours on Skytap,
   so each waits deferred, on the triggerer, holding no worker slot.
6. ``announce``: one event of the Airflow asset ``skytap_backup`` per backup made (the
   template and each DR copy), carrying the environment, the template, its region and its
   verdict: the restore drill (``skytap_restore_drill``) runs on it.
7. ``prune``: keeps the newest ``keep`` backups per region made by this DAG for this
   environment; it never touches anything else. Only backups the thaw tagged consistent
   count: a torn or unfinished one never pushes a good one out (it is deleted once a newer
   good one exists).

If the copy fails, the VMs are thawed all the same, and the run fails: the DR copies and
the prune never run, and they are the run's leaves.

The config sets each environment's schedule, DR regions, keep, VMs, mounts, preset and SSH
connection (one of the presets and connections below: the config names them, this file
defines them), its deadline and who is mailed when a run fails. The trigger form (Trigger
DAG in the UI) changes only what a manual run may change: the DR regions, keep and the
longest freeze. The environment and what runs on its VMs come from the config alone.
Connections: ``skytap_default`` (Skytap API) and ``skytap_vm_ssh`` (SSH user and key for
the VMs; hosts and ports come from each VM's published SSH service in Skytap).
"""

from __future__ import annotations

from airflow_provider_skytap.factory import backup_dags
from airflow_provider_skytap.frozen_copy import DEFAULT_PRESETS, QuiescePreset

# How the VMs may be quiesced: the config names one of these per environment. Add your own
# here (DAG code and the config are reviewed; the trigger form offers no choice of them).
PRESETS = {
    **DEFAULT_PRESETS,
    # Profile app, no root: pause the application whose pid is in writer.pid in each of the
    # VM's directories (``mounts``), resume it after the copy. `make demo` without root uses it.
    "app-pidfile": QuiescePreset(
        "app",
        pre_freeze_command='for m in $SKYTAP_QUIESCE_MOUNTS; do kill -STOP "$(cat "$m/writer.pid")"'
        " || exit 1; done",
        post_thaw_command='for m in $SKYTAP_QUIESCE_MOUNTS; do kill -CONT "$(cat "$m/writer.pid")"'
        " || exit 1; done",
        description="pause the process in writer.pid of each directory (no root)",
    ),
}
# The SSH connections the config may name (the first is the default).
SSH_CONN_IDS = ("skytap_vm_ssh",)

globals().update(backup_dags(__file__, presets=PRESETS, ssh_conn_ids=SSH_CONN_IDS, doc_md=__doc__))
