"""A failed backup run mails the config's address through Airflow's SMTP notifier: a real
`airflow dags test` run, a real SMTP server on loopback (aiosmtpd), and the mail read back.

The run fails at its first task (a misspelt conf key, refused before anything is frozen or
copied; the thaw then finds nothing to release on the simulator). The connections hold
secrets, and no mail may carry any of them.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo import airflow_cli
from tests.conftest import Sim
from tests.system.conftest import skytap_conn
from tests.system.stack_services import free_ports

pytestmark = pytest.mark.timeout(300)
BACKUP = "skytap_live_clone_backup"
SECRETS = ["vm-ssh-password-91c4"]  # and the simulator's API token


class Inbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            {"to": list(envelope.rcpt_tos), "from": envelope.mail_from, "data": envelope.content}
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    try:
        from aiosmtpd.controller import Controller
    except ImportError as exc:  # the test extra brings it
        pytest.skip(f"aiosmtpd is not installed: {exc}")
    inbox = Inbox()
    [port] = free_ports(1)
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_a_failed_backup_run_mails_the_config_address_and_no_secret(
    tmp_path: Path, smtp: tuple[Inbox, int], sim: Sim
) -> None:
    inbox, port = smtp
    secrets = [*SECRETS, sim.token]
    config = airflow_cli.write_config(
        tmp_path / "skytap_backups.yaml",
        {"notify": {"to": ["ops@example.com"], "from_email": "airflow@example.com"}},
    )
    home = tmp_path / "airflow"
    env = airflow_cli.airflow_env(
        home,
        {
            "skytap_default": skytap_conn(sim),
            "skytap_vm_ssh": {"conn_type": "ssh", "login": "root", "password": SECRETS[0]},
            # The notifier's connection (smtp_default): the local server, no TLS, no login.
            "smtp_default": {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10},
            },
        },
    )
    env[airflow_cli.CONFIG_ENV] = str(config)
    airflow_cli.migrate(env)
    done = airflow_cli.dags_test(env, BACKUP, "2026-11-20", {"max_freeze_second": 30})
    out = done.stdout + done.stderr
    assert not airflow_cli.succeeded(done), out[-3000:]
    assert "conf: 'max_freeze_second' is not a param of this DAG" in out, out[-3000:]
    deadline = time.monotonic() + 30
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.2)
    # One mail per task that failed after its last try: dr_regions refused the conf.
    subjects: dict[str, tuple[str, str]] = {}
    for sent in inbox.messages:
        assert sent["to"] == ["ops@example.com"] and sent["from"] == "airflow@example.com"
        message = email.message_from_bytes(sent["data"], policy=email.policy.default)
        subject = str(message["Subject"])
        body = "".join(
            part.get_content() for part in message.walk() if part.get_content_type() == "text/html"
        )
        raw = sent["data"].decode(errors="replace") + subject + body
        for secret in secrets:
            assert secret not in raw, f"the mail carries a secret: {subject}"
        subjects[subject.rsplit(" task ", 1)[-1]] = (subject, body)
    assert "dr_regions" in subjects, (inbox.messages, out[-3000:])
    subject, body = subjects["dr_regions"]
    assert subject.startswith("[skytap] backup of environment 1001 failed: " + BACKUP), subject
    run_id = re.search(r"DagRun Finished: .*?run_id=([^,]+),", out)
    assert run_id and run_id.group(1) in subject, (subject, out[-2000:])  # names the run
    assert "max_freeze_second" in body  # the error: what to fix
    assert "dr_regions" in body and "log" in body
    print(f"mails: {sorted(subjects)}; dr_regions: {subject!r}; body: {json.dumps(body)[:400]}")
