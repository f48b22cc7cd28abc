"""The Skytap boundary over real HTTP: the simulator's Skytap rules met by the hook (live clone,
override, tags=true, scope), and a hostile server (a huge body, a wrong shape) refused with an
error naming the field, before anything is created."""

from __future__ import annotations

import asyncio
import http.server
import json
import socketserver
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import SkytapResponseError, SkytapScopeError
from airflow_provider_skytap.hooks.skytap import SkytapAsyncHook, SkytapHook
from tests.conftest import FAST, set_connection
from tests.helpers import api_requests, live_named

# Some tests meet a hostile HTTP server of their own instead of the simulator.
pytestmark = pytest.mark.integration

ENV = "1001"
HUGE = 400 * 1024 * 1024


def test_a_backup_and_its_dr_copy_leave_the_source_running(hook: SkytapHook, sim: Any) -> None:
    saved = hook.save_as_template(ENV, name="nightly")
    env = hook.get_environment(ENV)
    assert {vm["runstate"] for vm in env["vms"]} == {"running"}
    hook.wait_until_ready("template", saved["id"], timeout=30, poll_interval=0.1)
    dr = hook.copy_template(saved["id"], name="nightly", target_region="IE-Dublin-M-1")
    dr = hook.wait_until_ready("template", dr["id"], timeout=30, poll_interval=0.1)
    assert dr["region"] == "IE-Dublin-M-1"
    posts = [r for r in sim.admin.requests() if r["method"] == "POST"]
    assert len(posts) == 2
    assert sim.admin.suspended_count() == 0


def test_lists_find_copies_by_their_tags(hook: SkytapHook, sim: Any) -> None:
    hook.add_tags("template", "5001", ["keep-me"])
    found = hook.list_resources("template", tags=["keep-me"])
    assert [t["id"] for t in found] == ["5001"]
    lists = [r for r in sim.admin.requests() if r["path"] == "/v2/templates"]
    assert lists  # the simulator leaves tags out of lists not asked with tags=true


def test_a_non_admin_refused_company_scope_gets_an_error_saying_what_to_do(
    hook: SkytapHook, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.admin.config(admin=False)
    before = len(sim.admin.state()["templates"])
    with pytest.raises(SkytapScopeError) as caught:
        hook.save_as_template(ENV, name="scope test")
    text = str(caught.value)
    assert "HTTP 403" in text and "not a company admin" in text and "list_scope" in text
    assert len(sim.admin.state()["templates"]) == before  # nothing created
    set_connection(monkeypatch, "skytap_me", sim.url, sim.username, sim.token, list_scope="me")
    with SkytapHook("skytap_me", retry_policy=FAST) as mine:
        made = mine.save_as_template(ENV, name="scope test")
        mine.wait_until_ready("template", made["id"], timeout=30, poll_interval=0.1)
    assert len(live_named(sim, "scope test")) == 1


# ---- a hostile server


class _Hostile(http.server.BaseHTTPRequestHandler):
    """Answers every GET with whatever the test put in ``server.answer``."""

    def do_GET(self) -> None:
        kind, payload = self.server.answer  # type: ignore[attr-defined]
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if kind == "stream":  # no Content-Length: the body just goes on
            self.end_headers()
            chunk = b"[" + b" " * 65535
            sent = 0
            try:
                while sent < payload:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            return
        body = json.dumps(payload).encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    server.answer = ("json", {})  # type: ignore[attr-defined]
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    set_connection(monkeypatch, "skytap_hostile", url, "jane", "tok-hostile-1")
    yield server
    server.shutdown()
    server.server_close()


def test_a_body_past_the_cap_is_refused_without_reading_it(hostile: Any) -> None:
    hostile.answer = ("stream", HUGE)
    tracemalloc.start()
    try:
        with pytest.raises(SkytapResponseError, match="larger than 16777216 bytes") as caught:
            SkytapHook("skytap_hostile", retry_policy=FAST).get_environment(ENV)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "get environment 1001" in str(caught.value)
    assert peak < 64 * 1024 * 1024, f"peak {peak} bytes while refusing a 400 MB body"
    with pytest.raises(SkytapResponseError, match="larger than"):
        asyncio.run(
            SkytapAsyncHook("skytap_hostile", retry_policy=FAST).get_resource("environment", ENV)
        )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([{"id": "1001"}], "the environment"),
        ({"id": "1001", "vms": "all of them"}, "vms"),
        ({"id": "1001", "runstate": ["busy"]}, "runstate"),
        ({"id": "1001 OR 1=1"}, "id"),
    ],
)
def test_a_wrong_shape_over_http_names_the_field(hostile: Any, payload: Any, field: str) -> None:
    hostile.answer = ("json", payload)
    with pytest.raises(SkytapResponseError, match=f"Skytap answered {field} ="):
        SkytapHook("skytap_hostile", retry_policy=FAST).get_environment(ENV)


def test_a_copy_answered_with_a_wrong_shape_fails_naming_the_field(hostile: Any) -> None:
    hostile.answer = ("json", [])  # lists are empty, and so is the POST's answer
    with pytest.raises(SkytapResponseError, match="save environment 1001 as a template"):
        SkytapHook("skytap_hostile", retry_policy=FAST).save_as_template(ENV, name="x")


def test_a_template_busy_with_a_string_is_refused_at_once(hostile: Any) -> None:
    hostile.answer = ("json", {"id": "5001", "name": "t", "region": "US-West", "busy": "maybe"})
    hook = SkytapHook("skytap_hostile", retry_policy=FAST)
    with pytest.raises(SkytapResponseError, match="busy = 'maybe'; expected true, false or null"):
        hook.wait_until_ready("template", "5001", timeout=3600, poll_interval=0.05)
    assert hostile.hits == 1  # refused at the first look, never waited on
    hostile.answer = ("json", {"id": "5001", "name": "t", "region": "US-West", "busy": "false"})
    assert hook.wait_until_ready("template", "5001", timeout=5)["busy"] is False


def test_nothing_is_sent_for_bad_values(hook: SkytapHook, sim: Any) -> None:
    sim.admin.clear_requests()
    for bad in ("EMEA\n", " EMEA", "Mars-1"):
        with pytest.raises(ValueError, match="target_region"):
            hook.copy_template("5001", name="x", target_region=bad)
    with pytest.raises(ValueError, match="name must not"):
        hook.save_as_template(ENV, name="nightly\n ")
    with pytest.raises(ValueError, match="environment_id must be a Skytap id"):
        hook.save_as_template("1001\n", name="x")
    with pytest.raises(ValueError, match="tag must not"):
        hook.add_tags("template", "5001", ["ok", "bad\x00tag"])
    assert api_requests(sim) == []
