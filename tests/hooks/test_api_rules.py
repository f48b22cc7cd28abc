"""The retry, error, pagination and readiness rules of hooks/api.py, which need no server."""

from __future__ import annotations

import json
import pickle
import random
from itertools import islice, pairwise
from typing import Any

import pytest

from airflow_provider_skytap.hooks.api import (
    Request,
    Response,
    RetryPolicy,
    SkytapApi,
    SkytapAPIError,
    SkytapAuthError,
    SkytapBusyError,
    SkytapNotFoundError,
    Sleep,
    SshEndpoint,
    TransportError,
    api_error,
    check_id,
    check_region,
    check_vm_ids,
    classify,
    error_messages,
    parse_retry_after,
    poll_pauses,
    readiness,
    ssh_endpoints,
)

GET = Request("GET", "/v2/configurations/1", "get environment 1")
POST = Request("POST", "/configurations", "copy environment 1", body={"configuration_id": "1"})


def answer(status: int, body: bytes = b"", **headers: str) -> Response:
    return Response(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


@pytest.mark.parametrize(
    ("status", "body", "retry"),
    [
        (423, b'{"error": "Environment is busy"}', True),
        (429, b'{"error": "Too many requests"}', True),
        (409, b'{"error": "The resource is busy, try again"}', True),
        (422, b'{"errors": ["Configuration 1 is busy"]}', True),
        (409, b'{"error": "Name already taken"}', False),
        (422, b'{"errors": ["Region Mars is not valid"]}', False),
        (500, b'{"error": "Internal"}', True),
        (503, b"Service Unavailable", True),
        (401, b'{"error": "Unauthorized"}', False),
        (404, b'{"error": "Not found"}', False),
        (400, b'{"error": "Bad"}', False),
    ],
)
def test_which_answers_are_retried(status: int, body: bytes, retry: bool) -> None:
    verdict = classify(GET, answer(status, body))
    assert verdict is not None
    assert verdict.retry is retry


def test_success_needs_no_verdict() -> None:
    assert classify(GET, answer(200, b"{}")) is None
    assert classify(POST, answer(201, b"{}")) is None


def test_only_a_post_that_may_have_run_is_ambiguous() -> None:
    assert classify(POST, answer(503)).ambiguous  # type: ignore[union-attr]
    assert classify(POST, TransportError("reset", sent=True)).ambiguous  # type: ignore[union-attr]
    assert not classify(POST, TransportError("refused", sent=False)).ambiguous  # type: ignore[union-attr]
    assert not classify(POST, answer(423)).ambiguous  # type: ignore[union-attr]
    assert not classify(GET, answer(503)).ambiguous  # type: ignore[union-attr]


def test_retry_after_is_read_from_a_429() -> None:
    verdict = classify(GET, answer(429, Retry_After="7"))
    assert verdict is not None and verdict.retry_after == 7.0


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 25 Nov 2026 10:00:10 GMT", now=1795600800.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0


def test_backoff_grows_is_capped_jittered_and_never_undercuts_retry_after() -> None:
    policy = RetryPolicy(base=1.0, cap=8.0, rng=random.Random(7))
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(step / 2 <= d <= step for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered
    assert all(policy.delay(1, retry_after=5.0) >= 5.0 for _ in range(20))


def test_error_messages_read_both_skytap_shapes() -> None:
    assert error_messages(answer(422, b'{"errors": ["a", "b"]}')) == ["a", "b"]
    assert error_messages(answer(423, b'{"error": "busy"}')) == ["busy"]
    assert error_messages(answer(502, b"<html>Bad Gateway</html>")) == ["<html>Bad Gateway</html>"]


def test_api_error_names_action_status_message_and_request_id() -> None:
    err = api_error(
        POST, answer(422, b'{"errors": ["Region Mars is not valid"]}', X_Request_ID="req-42")
    )
    assert str(err) == (
        "copy environment 1: HTTP 422: Region Mars is not valid (request id req-42)"
    )
    assert isinstance(api_error(GET, answer(404, b"{}")), SkytapNotFoundError)
    auth = api_error(GET, answer(401, b'{"error": "Unauthorized"}'))
    assert isinstance(auth, SkytapAuthError)
    assert "API security token" in str(auth)
    # Airflow pickles exceptions between processes: the details must survive.
    again = pickle.loads(pickle.dumps(err))
    assert (again.status, again.request_id, str(again)) == (422, "req-42", str(err))


@pytest.mark.parametrize(
    ("kind", "resource", "state"),
    [
        ("environment", {"runstate": "busy"}, "busy"),
        ("environment", {"runstate": "stopped"}, "ready"),
        ("environment", {"runstate": "running", "error": "disk copy failed"}, "failed"),
        ("environment", {"runstate": "stopped", "errors": ["x"]}, "failed"),
        ("template", {"busy": True}, "busy"),
        ("template", {"busy": None}, "ready"),
        ("template", {"busy": False}, "ready"),
        ("template", {"busy": False, "error": "copy failed"}, "failed"),
    ],
)
def test_readiness(kind: str, resource: dict, state: str) -> None:
    assert readiness(kind, resource).state == state  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", ["", "abc", "12; rm -rf /", "../1", None, True, "1 2", "1" * 21, " 1001 ", "1001\n"]
)
def test_ids_are_checked_and_the_error_names_field_and_value(bad: object) -> None:
    with pytest.raises(ValueError, match=r"environment_id must be a Skytap id .*got"):
        check_id(bad, "environment_id")


def test_good_ids_and_regions_pass() -> None:
    assert check_id(1001, "environment_id") == "1001"
    assert check_id("1001", "environment_id") == "1001"
    assert check_region("US-East-2") == "US-East-2"
    assert check_vm_ids(["1", 2]) == ["1", "2"]


@pytest.mark.parametrize("bad", ["", "EMEA;ls", "us west", None, 5, "EMEA\n", " EMEA"])
def test_bad_regions_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="target_region must be a Skytap region name"):
        check_region(bad)


def test_vm_ids_must_be_a_non_empty_list() -> None:
    with pytest.raises(ValueError, match="vm_ids must be a list"):
        check_vm_ids("2001")
    with pytest.raises(ValueError, match="at least one VM"):
        check_vm_ids([])


def test_a_call_gives_up_at_its_deadline_with_the_last_error() -> None:
    ticks = iter(range(0, 1000, 10))  # each look at the clock: 10 s later
    api = SkytapApi(policy=RetryPolicy(deadline=25, base=1, cap=1), clock=lambda: next(ticks))
    plan = api.call(GET)
    assert next(plan) == GET
    failing = answer(503, b'{"error": "Service Unavailable"}')
    for _ in range(2):  # at 10 s and 20 s the deadline still allows a retry
        assert isinstance(plan.send(failing), Sleep)
        assert plan.send(None) == GET
    with pytest.raises(
        SkytapAPIError,
        match=r"^get environment 1: HTTP 503: Service Unavailable: gave up after 3 attempts in 30",
    ):
        plan.send(failing)  # at 30 s it does not


def test_giving_up_on_a_lost_connection_says_so() -> None:
    ticks = iter(range(0, 1000, 10))
    api = SkytapApi(policy=RetryPolicy(deadline=5, base=1, cap=1), clock=lambda: next(ticks))
    plan = api.call(GET)
    next(plan)
    with pytest.raises(SkytapAPIError, match=r"^get environment 1: no response: could not conn"):
        plan.send(TransportError("could not connect (ConnectError)", sent=False))


def _vm(vm_id: str, name: str, *interfaces: dict[str, Any]) -> dict[str, Any]:
    return {"id": vm_id, "name": name, "interfaces": list(interfaces)}


def test_ssh_endpoints_prefer_the_published_ssh_service_then_the_interface_ip() -> None:
    env = {
        "id": "7",
        "name": "erp",
        "vms": [
            _vm(
                "1",
                "app",
                {"ip": "10.0.0.1", "services": [{"internal_port": 80, "external_ip": "x"}]},
                {
                    "ip": "10.0.1.1",
                    "services": [
                        {"internal_port": 22, "external_ip": "203.0.113.5", "external_port": 26}
                    ],
                },
            ),
            _vm("2", "db", {"ip": "10.0.0.2", "services": []}),
        ],
    }
    assert ssh_endpoints(env) == [
        SshEndpoint("1", "app", "203.0.113.5", 26, "published_service"),
        SshEndpoint("2", "db", "10.0.0.2", 22, "interface_ip"),
    ]
    assert [e.vm_name for e in ssh_endpoints(env, ["db"])] == ["db"]


def test_ssh_endpoints_name_what_is_missing() -> None:
    env = {"id": "7", "name": "erp", "vms": [_vm("1", "app"), _vm("2", "db", {"ip": "10.0.0.2"})]}
    with pytest.raises(
        ValueError,
        match=r"vm_names \['web'\] match no VM of environment 7 \('erp'\); its VMs are "
        r"\['app', 'db'\]",
    ):
        ssh_endpoints(env, ["db", "web"])
    with pytest.raises(ValueError, match=r"VM 1 \('app'\) of environment 7 .* cannot be reached"):
        ssh_endpoints(env)
    with pytest.raises(ValueError, match="must be a list of VM names, got the string 'db'"):
        ssh_endpoints(env, "db")
    with pytest.raises(ValueError, match="has no VMs"):
        ssh_endpoints({"id": "8", "name": "empty", "vms": []})


def polls_until_ready(copy_seconds: float, first: float, longest: float) -> int:
    """GETs one wait_until_ready plan makes for a copy that is busy for ``copy_seconds``,
    on a clock that moves only when the plan sleeps (no request takes time)."""
    now = [0.0]
    api = SkytapApi(clock=lambda: now[0])
    plan = api.wait_until_ready(
        "template", "5001", timeout=24 * 3600, poll_interval=first, max_poll_interval=longest
    )
    gets = 0
    step = next(plan)
    try:
        while True:
            if isinstance(step, Sleep):
                now[0] += step.seconds
                step = plan.send(None)
            else:
                gets += 1
                busy = now[0] < copy_seconds
                body = json.dumps({"id": "5001", "busy": busy}).encode()
                step = plan.send(answer(200, body))
    except StopIteration:
        return gets


@pytest.mark.parametrize(
    ("first", "longest", "copy_seconds", "most"),
    [
        (60, 600, 3 * 3600, 25),  # a region copy deferred from the nightly DAG: 3 h
        (60, 600, 600, 6),
        (5, 60, 3 * 3600, 190),  # the hook's defaults
        (2, 5, 600, 125),  # frozen_copy's wait: 2 s growing to 5 s
    ],
)
def test_a_wait_backs_off_so_a_long_copy_costs_tens_of_requests(
    first: float, longest: float, copy_seconds: float, most: int
) -> None:
    assert polls_until_ready(copy_seconds, first, longest) <= most
    pauses = list(islice(poll_pauses(first, longest), 12))
    assert pauses[0] == first and max(pauses) == longest
    assert all(b == min(longest, a * 1.5) for a, b in pairwise(pauses))


def test_a_call_told_not_to_retry_busy_raises_at_once_and_retries_the_rest() -> None:
    busy = answer(423, b'{"error": "Template is busy"}')
    plan = SkytapApi().call(POST, retry_busy=False)
    assert next(plan) == POST
    with pytest.raises(SkytapBusyError, match=r"^copy environment 1: HTTP 423: Template is busy"):
        plan.send(busy)
    plan = SkytapApi(policy=RetryPolicy(base=0.01, cap=0.01)).call(GET, retry_busy=False)
    assert next(plan) == GET
    assert isinstance(plan.send(answer(429, b"{}")), Sleep)  # a rate limit is still retried
