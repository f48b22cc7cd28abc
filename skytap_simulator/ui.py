"""The web pages a browser gets at an environment's or a template's address.

Skytap's web UI and its API share their addresses: ``https://cloud.skytap.com/configurations/
{id}`` is both the API's reference URI of an environment (help.skytap.com, API v1 reference)
and the page Skytap users link to ("Open in Skytap"; likewise ``/templates/{id}``). A browser
asks for HTML; an API client sends ``Accept: application/json`` (or Skytap's v2 type) with
HTTP Basic credentials. So the provider's extra link points at that address, and under the
simulator the link must open something: this module answers a browser's ``GET`` of
``/configurations/{id}`` or ``/templates/{id}`` with a small HTML page of the resource.

Simulator-only behaviour: Skytap shows its login page first; the simulator has no login and
shows the page to anyone on loopback (it holds no real data). The page never shows a token.
"""

from __future__ import annotations

import html
import re

from starlette.types import Scope

from .models import Resource
from .state import NotFound, SimState
from .views import resource_url

# ``/configurations/123`` or ``/templates/456``; the ``.json`` suffix and ``/v2`` are API-only.
PAGE = re.compile(r"^/(configuration|template)s/(\d+)$")
_TITLES = {"configuration": "Environment", "template": "Template"}


def page_request(scope: Scope) -> tuple[str, str] | None:
    """``(kind, id)`` when the request is a browser opening a resource's page, else None.

    A browser's ``GET`` asks for ``text/html`` and sends no HTTP Basic credentials; anything
    else (every API client) goes on to the API as before.

    :param scope: the ASGI scope as it arrived (a ``.json`` suffix means the API)
    """
    if scope.get("method") != "GET":
        return None
    match = PAGE.match(scope.get("path", ""))
    if match is None:
        return None
    headers = dict(scope.get("headers") or [])
    accept = headers.get(b"accept", b"").decode("latin-1")
    if "text/html" not in accept or b"authorization" in headers:
        return None
    return match.group(1), match.group(2)


def render_page(state: SimState, kind: str, rid: str, base_url: str) -> tuple[int, str]:
    """The page's status and HTML: 200 with the resource, or 404 when there is none.

    :param state: the simulator's account state
    :param kind: ``configuration`` or ``template``
    :param rid: the resource's id
    :param base_url: scheme and host the browser used (for the API address shown)
    """

    def view(st: SimState) -> tuple[int, str]:
        try:
            res = st.find(kind, rid)
        except NotFound:
            return 404, _html(f"{_TITLES[kind]} {rid} not found", "<p>No such resource.</p>")
        return 200, _resource_html(st, res, base_url)

    result: tuple[int, str] = state.read(view)
    return result


def _resource_html(st: SimState, res: Resource, base_url: str) -> str:
    title = f"{_TITLES[res.kind]} {res.id}: {res.name}"
    state = (
        f"busy ({st.busy_reason(res)})"
        if res.kind == "template" and st.busy_reason(res)
        else (st.runstate_of(res) if res.kind == "configuration" else "idle")
    )
    rows = [
        ("Kind", _TITLES[res.kind]),
        ("Id", res.id),
        ("Name", res.name),
        ("Region", res.region),
        ("State", state),
        ("VMs", ", ".join(vm.name for vm in res.vms) or "none"),
        ("Tags", ", ".join(t.value for t in res.tags) or "none"),
        ("API", resource_url(base_url, res, v2=False)),
    ]
    cells = "".join(
        f'<tr><th>{html.escape(k)}</th><td data-field="{html.escape(k.lower())}">'
        f"{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    note = "<p>Skytap simulator: the page Skytap's web UI shows at this address.</p>"
    return _html(title, f"{note}<table>{cells}</table>")


def _html(title: str, body: str) -> str:
    safe = html.escape(title)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{safe}</title></head>"
        f"<body><h1>{safe}</h1>{body}</body></html>"
    )
