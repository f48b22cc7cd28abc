"""Extra links from a task to the Skytap UI page of what it made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

XCOM_KEY = "skytap_resource"


class SkytapResourceLink(BaseOperatorLink):
    """The "Skytap" button: the environment or template a task made or reused.

    The operator pushes ``{"kind", "id", "url"}`` under the XCom key ``skytap_resource`` as
    soon as it knows the resource, so the link works while the task still waits.
    """

    name = "Skytap"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value: Any = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        return str(value.get("url") or "") if isinstance(value, dict) else ""


def persist(context: Any, kind: str, resource_id: str, url: str) -> None:
    """Record what the link points at, for the running task instance."""
    context["ti"].xcom_push(key=XCOM_KEY, value={"kind": kind, "id": resource_id, "url": url})
