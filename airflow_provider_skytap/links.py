"""Extra links from a task to the Skytap UI page of what it made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_provider_skytap.hooks.api import page_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

XCOM_KEY = "skytap_resource"


class SkytapResourceLink(BaseOperatorLink):
    """The "Skytap" button: the environment or template a task made or reused.

    The operator pushes ``{"kind", "id", "url"}`` under the XCom key ``skytap_resource`` as
    soon as it knows the resource; Airflow 3 stores the link when the task's try ends. Only
    the resource's page in Skytap's UI comes out (``hooks.api.page_url``), never a secret.
    """

    name = "Skytap"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value: Any = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        return page_url(value.get("url")) if isinstance(value, dict) else ""


def persist(context: Any, kind: str, resource_id: str, url: str) -> None:
    """Record what the link points at, for the running task instance."""
    context["ti"].xcom_push(key=XCOM_KEY, value={"kind": kind, "id": resource_id, "url": url})
