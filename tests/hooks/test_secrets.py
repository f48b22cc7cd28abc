"""The API token never reaches a log line, an exception or a repr."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import SkytapError
from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook
from tests.conftest import FAST, set_connection


def test_token_absent_from_logs_errors_and_reprs(
    sim: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 and httpx debug logging included
    texts: list[str] = []
    sim.admin.faults(
        seed=5, error_rates={"423": 0.2, "429": 0.2, "503": 0.2}, retry_after_s=0, drop_rate=0.1
    )
    set_connection(monkeypatch, "secret_ok", sim.url, sim.username, sim.token)
    hook = SkytapHook("secret_ok", retry_policy=FAST)
    copy = hook.copy_environment("1001", name="secret check")
    hook.wait_until_ready("environment", copy["id"], timeout=30, poll_interval=0.1)
    texts += [repr(hook.settings), repr(hook.api), str(hook.__dict__)]

    wrong = "wrong-token-0e9d8c7b"
    set_connection(monkeypatch, "secret_bad", sim.url, sim.username, wrong)
    bad = SkytapHook("secret_bad", retry_policy=FAST)
    with pytest.raises(SkytapError) as caught:
        bad.get_environment("1001")
    texts += [str(caught.value), repr(caught.value)]
    ok, message = bad.test_connection()
    assert not ok
    texts.append(message)
    with pytest.raises(SkytapError) as caught:
        asyncio.run(SkytapAsyncHook("secret_bad", retry_policy=FAST).get_resource("template", 1))
    texts.append(str(caught.value))

    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    assert len(caplog.records) > 5  # urllib3 and httpx debug lines
    printed = capsys.readouterr()  # the hook's own log (Airflow's structlog) goes here
    assert "retry" in printed.out  # the storm above was logged
    texts += [printed.out, printed.err]
    for secret in (sim.token, wrong):
        leaks = [t for t in texts if secret in t]
        assert leaks == [], f"token found in: {leaks[:3]}"
