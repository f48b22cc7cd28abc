"""Trust nothing that crosses the Skytap boundary: what the provider sends (live_copy, the
region override, tags=true) and what it refuses (wrong shapes, paging loops, bad ports, values
with a newline). Plans are driven here without a server: a hostile answer is the input."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_skytap import checks
from airflow_provider_skytap.hooks.api import (
    REGIONS,
    Plan,
    Request,
    Response,
    SkytapApi,
    SkytapResponseError,
    SkytapScopeError,
    Sleep,
    check_name,
    check_region,
    readiness,
    ssh_endpoints,
)

ENV = {"id": "1001", "name": "erp", "runstate": "running", "region": "US-West", "vms": []}


def reply(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(
        status, {k.replace("_", "-"): v for k, v in headers.items()}, json.dumps(body).encode()
    )


def drive(plan: Plan[Any], answer: Callable[[Request], Response]) -> tuple[Any, list[Request]]:
    """Run a plan against ``answer``; returns its result and every request it sent."""
    sent: list[Request] = []
    step = next(plan)
    try:
        while True:
            if isinstance(step, Sleep):
                step = plan.send(None)
            else:
                sent.append(step)
                step = plan.send(answer(step))
    except StopIteration as done:
        return done.value, sent


def copier(made: dict[str, Any]) -> Callable[[Request], Response]:
    """A server that lists nothing and answers a POST with ``made``."""

    def answer(request: Request) -> Response:
        if request.method == "GET":
            return reply([], Content_Range="items */0")
        return reply(made)

    return answer


# ---- what is sent


def test_copies_and_saves_ask_for_a_live_clone_by_default() -> None:
    api = SkytapApi()
    _, sent = drive(api.save_as_template("1001", name="n"), copier({**ENV, "busy": True}))
    assert sent[-1].body == {"configuration_id": "1001", "name": "n", "live_copy": True}
    _, sent = drive(api.copy_environment("1001", name="n"), copier(ENV))
    assert sent[-1].body["live_copy"] is True
    _, sent = drive(
        api.copy_environment("1001", name="n", target_region="EMEA"),
        copier({**ENV, "region": "EMEA"}),
    )
    assert sent[-1].body == {
        "configuration_id": "1001",
        "name": "n",
        "target_region": "EMEA",
        "live_copy": True,
    }


def test_a_non_live_copy_must_be_explicit_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    api = SkytapApi()
    with caplog.at_level(logging.WARNING):
        _, sent = drive(api.save_as_template("1001", name="n", live=False), copier(ENV))
    assert sent[-1].body["live_copy"] is False
    assert "Skytap will SUSPEND the environment's running VMs" in caplog.text
    with pytest.raises(ValueError, match="live must be True or False, got 'false'"):
        drive(api.save_as_template("1001", name="n", live="false"), copier(ENV))  # type: ignore[arg-type]


def test_template_region_copies_send_the_override() -> None:
    api = SkytapApi()
    made = {"id": "9", "name": "n", "region": "EMEA", "busy": True}
    _, sent = drive(api.copy_template("5001", name="n", target_region="EMEA"), copier(made))
    assert sent[-1].body == {
        "template_id": "5001",
        "name": "n",
        "target_region": "EMEA",
        "copy_to_region_vm_status_override": True,
    }
    _, sent = drive(api.copy_template("5001", name="n"), copier({**made, "region": "US-West"}))
    assert "copy_to_region_vm_status_override" not in sent[-1].body


def test_every_list_asks_for_tags() -> None:
    _, sent = drive(SkytapApi().list_resources("template", tags=["x"]), copier({}))
    assert sent[0].params is not None
    assert sent[0].params["tags"] == "true" and sent[0].params["scope"] == "company"


# ---- regions


def test_all_sixteen_regions_are_known_and_more_can_be_added() -> None:
    assert len(REGIONS) == 16
    for region in ("CN-HongKong-M-1", "IE-Dublin-M-1", "US-Texas-M-1", "SG-Singapore-M-1"):
        assert checks.dr_regions([region]) == [region]
    with pytest.raises(ValueError, match="dr_regions 'MARS-1'") as caught:
        checks.dr_regions(["MARS-1"])
    text = str(caught.value)
    assert "dr_regions 'MARS-1' is not a Skytap region this provider knows" in text
    assert '{"extra_regions": ["MARS-1"]}' in text
    assert checks.dr_regions(["MARS-1"], known=(*REGIONS, "MARS-1")) == ["MARS-1"]
    api = SkytapApi(regions=(*REGIONS, "MARS-1"))
    made = {"id": "9", "name": "n", "region": "MARS-1", "busy": True}
    _, sent = drive(api.copy_template("5001", name="n", target_region="MARS-1"), copier(made))
    assert sent[-1].body["target_region"] == "MARS-1"
    with pytest.raises(ValueError, match="extra_regions"):
        drive(SkytapApi().copy_template("5001", name="n", target_region="MARS-1"), copier(made))


# ---- the whole string


@pytest.mark.parametrize("bad", ["EMEA\n", " EMEA", "EMEA ", "EM\tEA", "EMEA\x00"])
def test_a_region_is_checked_as_a_whole_string(bad: str) -> None:
    with pytest.raises(ValueError, match="dr_regions must be a Skytap region name"):
        checks.dr_regions([bad])
    with pytest.raises(ValueError, match="target_region must be a Skytap region name"):
        check_region(bad)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("nightly\n", "whitespace"),
        ("night\nly", "control characters"),
        (" nightly", "whitespace"),
        ("nightly ", "whitespace"),
        ("night\x1bly", "control characters"),
        ("night\u2028ly", "control characters"),
    ],
)
def test_names_and_tags_with_whitespace_or_control_characters_are_refused(
    bad: str, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        check_name(bad)
    sent: list[Request] = []
    with pytest.raises(ValueError, match=f"tag must not .*{why}"):
        drive(
            SkytapApi().add_tags("template", "5001", [bad]), lambda r: sent.append(r) or reply([])
        )  # type: ignore[func-returns-value]
    assert sent == []  # nothing was sent


# ---- wrong shapes


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([ENV], "the environment"),
        ({**ENV, "id": "10x"}, "id"),
        ({**ENV, "vms": {"id": "1"}}, "vms"),
        ({**ENV, "tags": ["a"]}, "tags"),
        ({**ENV, "runstate": 3}, "runstate"),
        ({**ENV, "region": "EMEA\n"}, "region"),
        (None, "the environment"),
    ],
)
def test_a_wrong_shape_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(SkytapResponseError, match=f"Skytap answered {field} = "):
        drive(SkytapApi().get("environment", "1001"), lambda r: reply(body))


def test_a_list_of_the_wrong_shape_and_a_bad_content_range_name_the_field() -> None:
    with pytest.raises(SkytapResponseError, match="Skytap answered the list = "):
        drive(SkytapApi().list_resources("environment"), lambda r: reply({"a": 1}))
    with pytest.raises(SkytapResponseError, match="Content-Range total = 'lots'"):
        drive(
            SkytapApi().list_resources("environment"),
            lambda r: reply([ENV], Content_Range="items 0-0/lots"),
        )


@pytest.mark.parametrize(("busy", "state"), [("true", "busy"), ("false", "ready"), ("", "ready")])
def test_busy_as_a_string_is_understood(busy: str, state: str) -> None:
    assert readiness("template", {"id": "1", "busy": busy}).state == state


@pytest.mark.parametrize("busy", ["yes", 1, [], {"x": 1}])
def test_busy_of_another_shape_is_refused_not_waited_on(busy: Any) -> None:
    api = SkytapApi()
    body = {"id": "5001", "name": "t", "region": "US-West", "busy": busy}
    with pytest.raises(SkytapResponseError, match="busy"):
        drive(api.wait_until_ready("template", "5001", timeout=3600), lambda r: reply(body))


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"external_ip": "203.0.113.5", "external_port": 70000}, "TCP port 1-65535, got 70000"),
        ({"external_ip": "203.0.113.5", "external_port": 0}, "TCP port 1-65535, got 0"),
        ({"external_ip": "203.0.113.5", "external_port": "22\n"}, "TCP port"),
        ({"external_ip": "evil.example", "external_port": 22}, "must be an IP address"),
        ({"external_ip": "1.2.3.4; rm", "external_port": 22}, "must be an IP address"),
    ],
)
def test_a_published_service_outside_the_rules_is_refused(
    service: dict[str, Any], message: str
) -> None:
    env = {
        "id": "7",
        "name": "erp",
        "vms": [
            {
                "id": "1",
                "name": "a",
                "interfaces": [{"services": [{"internal_port": 22, **service}]}],
            }
        ],
    }
    with pytest.raises(ValueError, match=message):
        ssh_endpoints(env)


# ---- paging


def test_the_same_page_again_is_a_paging_loop() -> None:
    page = [{**ENV, "id": str(i)} for i in range(100)]
    calls: list[Request] = []

    def answer(request: Request) -> Response:
        calls.append(request)
        return reply(page, Content_Range="items 0-99/1000")  # ignores the offset

    with pytest.raises(SkytapResponseError, match="paging loop: offset 100"):
        drive(SkytapApi().list_resources("environment"), answer)
    assert len(calls) == 2


def test_a_link_back_to_the_same_page_is_not_followed() -> None:
    """Pages come from offset and Content-Range alone: a Link header, even to itself, is
    never followed."""
    pages = {0: [{**ENV, "id": str(i)} for i in range(100)], 100: [{**ENV, "id": "100"}]}

    def answer(request: Request) -> Response:
        assert request.url is None
        offset = int((request.params or {})["offset"])
        return reply(
            pages[offset],
            Content_Range=f"items {offset}-{offset + len(pages[offset]) - 1}/101",
            Link='<https://cloud.skytap.com/v2/configurations?offset=0>; rel="next"',
        )

    found, sent = drive(SkytapApi().list_resources("environment"), answer)
    assert len(found) == 101 and len(sent) == 2


def test_a_refused_company_scope_says_what_to_do() -> None:
    def answer(request: Request) -> Response:
        return reply({"error": "scope=company is for administrators"}, 403)

    with pytest.raises(SkytapScopeError) as caught:
        drive(SkytapApi().list_resources("template"), answer)
    text = str(caught.value)
    assert "HTTP 403" in text and "not a company admin" in text
    assert '{"list_scope": "me"}' in text
