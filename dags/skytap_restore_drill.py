"""Weekly restore drills: prove the newest backup restores, and say how long it took. One DAG
per environment of the backup config (the same file as the backup DAGs') with a ``drill``
section; without a config there is no drill.

pick -> restore -> start -> reach -> check -> vouch -> delete (teardown) -> report

1. ``pick``: the newest ``application-consistent`` backup of the environment (made by its
   backup DAG) in ``region`` (the config's drill region, by default the first DR region).
2. ``restore``: a new environment from that template, in its region, isolated:
   ``outbound_traffic`` and ``routable`` false, no VPN attachment or tunnel, each read back
   from the environment itself. The request time starts the recovery time.
3. ``start``: runs it; the log shows each VM's runstate and the time spent.
4. ``reach``: each VM's SSH address. SSH is published (and unpublished by the teardown) only
   when the config's ``allow_publish_ssh`` is true; otherwise the interface IPs, reachable only from
   inside the environment's network.
5. ``check``: over SSH on each VM: reachable, each mount's filesystem clean (``e2fsck -n``,
   read-only), the application's own ``app_check`` (the config's) passing. The recovery
   time ends here.
6. ``vouch``: tags the template ``airflow-skytap-verified/<when>/rto-<seconds>s``.
7. ``delete``: a teardown: the drill environment is deleted on every path, failed or not.
8. ``report``: the recovery time, each VM's verdict, what was deleted; fails the run when
   the backup did not pass (a broken backup gets no verified tag).

Scheduled weekly, and on every update of the backup asset (``skytap_backup``). A deadline
alert fires when a run has not verified a backup within the config's ``rpo_hours`` of being
queued: the newest verified backup is then older than the recovery point objective
(``SKYTAP_DEADLINE_ALERTS=off`` leaves it out: ``airflow dags test`` on 3.3.2 crashes after
a successful run of a DAG with a deadline). The trigger form holds the region and timeouts.
Connections: ``skytap_default`` and ``skytap_vm_ssh`` (the user and key the VMs let in).
"""

from __future__ import annotations

from airflow_provider_skytap.factory import drill_dags

# The SSH connections the config may name (the drill logs in with the backup's).
SSH_CONN_IDS = ("skytap_vm_ssh",)

globals().update(drill_dags(__file__, ssh_conn_ids=SSH_CONN_IDS, doc_md=__doc__))
