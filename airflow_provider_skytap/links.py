"""Extra links from a task to the Skytap UI page of what it made."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

XCOM_KEY = "skytap_resource"
# The page of an environment or a template in Skytap's web UI: the same address as its API
# reference URI, without ``/v2`` or ``.json`` (help.skytap.com's API v1 reference; Skytap users
# link https://cloud.skytap.com/configurations/ID and /templates/ID to open them in the UI).
_PAGE = re.compile(r"^(?:/v2)?/(configurations|templates)/(\d+)(?:\.json)?/?$")


class SkytapResourceLink(BaseOperatorLink):
    """The "Skytap" button: the environment or template a task made or reused.

    The operator pushes ``{"kind", "id", "url"}`` under the XCom key ``skytap_resource`` as
    soon as it knows the resource; Airflow 3 stores the link when the task's try ends.
    """

    name = "Skytap"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value: Any = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        return page_url(value.get("url")) if isinstance(value, dict) else ""


def page_url(url: Any) -> str:
    """The web page of the resource ``url`` names, or "" when it names none.

    Only ``http(s)://host[:port]/configurations/ID`` or ``/templates/ID`` comes out: a user
    or token in the address, a query, a fragment or any other path is dropped, so the link
    can never carry a secret or point anywhere but a resource page.

    :param url: the address the operator recorded (the API's or the page's)
    """
    if not isinstance(url, str):
        return ""
    parts = urlsplit(url.strip())
    match = _PAGE.match(parts.path)
    if parts.scheme not in ("http", "https") or not parts.hostname or match is None:
        return ""
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    default = {"http": 80, "https": 443}[parts.scheme]
    netloc = f"{host}:{port}" if port and port != default else host
    return urlunsplit((parts.scheme, netloc, f"/{match.group(1)}/{match.group(2)}", "", ""))


def persist(context: Any, kind: str, resource_id: str, url: str) -> None:
    """Record what the link points at, for the running task instance."""
    context["ti"].xcom_push(key=XCOM_KEY, value={"kind": kind, "id": resource_id, "url": url})
