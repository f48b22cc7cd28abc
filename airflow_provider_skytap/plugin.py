"""The Airflow 3 UI page *Skytap backups*: the inventory (:mod:`.inventory`) in the browser.

Registered through the package's ``airflow.plugins`` entry point, so installing the package is
enough: the api-server mounts :func:`create_app` under ``/skytap`` (a ``fastapi_apps`` entry)
and the UI's *Browse* menu gets the item *Skytap backups* (an ``external_views`` entry with a
``url_route``), which shows ``/skytap/inventory`` inside Airflow's own page.

Airflow does not authenticate a plugin's FastAPI app (its routes are mounted apart from the
core API's), so this app does it: the caller presents the JWT the UI keeps in its ``_token``
cookie (or ``Authorization: Bearer``), the auth manager validates it, and the user must be
allowed to read the connection whose Skytap account is listed. Nothing about a backup is
shown to anyone else; the token of the connection is never shown at all.
"""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

URL_PREFIX = "/skytap"
PAGE = "inventory"
# Airflow's own rule for a connection id (airflow.models.connection: letters, digits, ._-).
_CONN_ID = re.compile(r"[\w.-]{1,250}", re.ASCII)
_STYLE = """
body{font-family:sans-serif;margin:1rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
.rpo-met .status{color:#176b2c}.rpo-missed .status,.no-consistent .status{color:#b3261e}
tr.newest-consistent{background:#e6f4ea;font-weight:bold}.error{color:#b3261e}
tr.newest-verified td.verified,tr.newest-verified td.rto{background:#e8f0fe;font-weight:bold}
"""


def create_app() -> FastAPI:
    """The plugin's FastAPI app: ``GET /inventory?conn_id=...&rpo_hours=...``."""
    app = FastAPI(title="Skytap backups", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(f"/{PAGE}", response_class=HTMLResponse)
    async def inventory_page(
        request: Request, conn_id: str = "skytap_default", rpo_hours: str = ""
    ) -> HTMLResponse:
        if not _CONN_ID.fullmatch(conn_id):
            return _page(
                conn_id, rpo_hours, _error(f"conn_id {conn_id!r} is not a connection id"), 400
            )
        denied = await _denied(request, conn_id)
        if denied is not None:
            return _page(conn_id, rpo_hours, _error(denied[1]), denied[0])
        from airflow.sdk.exceptions import AirflowException

        from airflow_provider_skytap import inventory
        from airflow_provider_skytap.hooks.api import page_url, ui_url

        try:
            found = await asyncio.to_thread(inventory.collect, conn_id, rpo_hours=rpo_hours)
        except ValueError as err:
            return _page(conn_id, rpo_hours, _error(str(err)), 400)
        except AirflowException as err:  # no such connection, or Skytap refused or is down
            return _page(conn_id, rpo_hours, _error(str(err)), 502)
        hook_url = await asyncio.to_thread(_base_url, conn_id)

        def link(kind: Any, rid: str) -> str:
            return page_url(ui_url(hook_url, kind, rid))

        body = inventory.render_html(found, link)
        if found.rpo is not None:
            missed = len(found.missed)
            body = (
                f"<p id='summary'>RPO {html.escape(inventory.describe_age(found.rpo))}: "
                f"{missed} of {len(found.groups)} source/region pairs miss it.</p>{body}"
            )
        return _page(conn_id, rpo_hours, body, 200)

    return app


async def _denied(request: Request, conn_id: str) -> tuple[int, str] | None:
    """``(status, why)`` when the caller may not see ``conn_id``'s backups, else None."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails

    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    token = bearer if scheme.lower() == "bearer" and bearer else None
    token = token or request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        return 401, "Not signed in to Airflow: open this page from the Airflow UI."
    manager = get_auth_manager()
    try:
        user = await manager.get_user_from_token(token)
    except Exception:  # expired or forged: the auth manager logs which
        return 401, "Your Airflow session is not valid: sign in again."
    allowed = manager.is_authorized_connection(
        method="GET", user=user, details=ConnectionDetails(conn_id=conn_id)
    )
    if not allowed:
        return 403, f"You may not read connection {conn_id!r}, so not its backups either."
    return None


def _base_url(conn_id: str) -> str:
    from airflow_provider_skytap.hooks.skytap import SkytapHook

    return SkytapHook(skytap_conn_id=conn_id).settings.base_url


def _error(message: str) -> str:
    return f"<p class='error' id='error'>{html.escape(message)}</p>"


def _page(conn_id: str, rpo_hours: str, body: str, status: int) -> HTMLResponse:
    esc = html.escape
    form = (
        "<form method='get'><label>Connection <input name='conn_id' "
        f"value='{esc(conn_id)}'></label> <label>RPO (hours) <input name='rpo_hours' "
        f"value='{esc(rpo_hours)}' size='6'></label> <button type='submit'>Show</button></form>"
    )
    text = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Skytap backups</title>"
        f"<style>{_STYLE}</style></head><body><h1>Skytap backups</h1>{form}{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status)


class SkytapPlugin(AirflowPlugin):
    """The *Skytap backups* page (Browse menu) and the app that serves it."""

    name = "skytap"
    fastapi_apps: list[Any] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Skytap backups"}
    ]
    external_views: list[Any] = [
        {
            "name": "Skytap backups",
            "href": f"{URL_PREFIX.strip('/')}/{PAGE}",
            "destination": "nav",
            "category": "browse",
            "url_route": "skytap-backups",
        }
    ]
