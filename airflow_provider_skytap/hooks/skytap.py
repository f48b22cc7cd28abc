"""SkytapHook (requests) and SkytapAsyncHook (httpx): two runners of the same API plans.

What to send, how to read the answer and when to retry is decided once, in
:mod:`airflow_provider_skytap.hooks.api`. The hooks only carry the requests and sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_provider_skytap.exceptions import (
    SkytapAPIError,
    SkytapAuthError,
    SkytapBusyError,
    SkytapError,
    SkytapIsolationError,
    SkytapNotFoundError,
    SkytapResourceFailedError,
    SkytapResponseError,
    SkytapScopeError,
    SkytapWaitTimeoutError,
)
from airflow_provider_skytap.hooks.api import (
    DEFAULT_BASE_URL,
    EXTRA_REGIONS_KEY,
    MAX_RESPONSE_BYTES,
    PROGRESS_LONGEST,
    REGIONS,
    Kind,
    Plan,
    Request,
    Response,
    RetryPolicy,
    SkytapApi,
    Sleep,
    SshEndpoint,
    TransportError,
    isolation_problems,
    parse_regions,
    restore_description,
    restore_requested_at,
    ssh_endpoints,
    ui_url,
)

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Connection

# ``requests`` (with urllib3) is imported when the sync hook first talks to Skytap, not when
# a DAG file that uses an operator is parsed (bench/results/parse_import.md).

__all__ = [
    "ConnectionSettings",
    "SkytapAPIError",
    "SkytapAsyncHook",
    "SkytapAuthError",
    "SkytapBusyError",
    "SkytapError",
    "SkytapHook",
    "SkytapIsolationError",
    "SkytapNotFoundError",
    "SkytapResourceFailedError",
    "SkytapResponseError",
    "SkytapScopeError",
    "SkytapWaitTimeoutError",
    "SshEndpoint",
]

USER_AGENT = "airflow-provider-skytap"
T = TypeVar("T")


@dataclass(frozen=True)
class ConnectionSettings:
    """What a ``skytap`` connection holds, checked. The token is kept out of ``repr``.

    Extras: ``timeout``, ``verify_ssl``, ``retry_deadline``; ``extra_regions`` (regions Skytap
    added after this release, a list or a comma-separated string); ``list_scope``
    (``company``, the default, or ``me`` for a user who is not a company admin);
    ``allow_http`` (true: allow ``http://`` to a host other than loopback, e.g. a proxy on a
    trusted network); ``max_response_bytes`` (the largest answer read, default 16 MiB).
    """

    conn_id: str
    base_url: str
    login: str
    token: str = dataclasses.field(repr=False)
    timeout: float = 60.0
    verify_ssl: bool = True
    retry_deadline: float = 600.0
    regions: tuple[str, ...] = REGIONS
    list_scope: str = "company"
    max_response_bytes: int = MAX_RESPONSE_BYTES

    @classmethod
    def from_connection(cls, conn: Connection) -> ConnectionSettings:
        """Read and check a connection; errors name the connection and the field."""
        cid = conn.conn_id
        if not conn.login:
            raise ValueError(f"connection {cid!r}: login (the Skytap user name) is empty")
        if not conn.password:
            raise ValueError(f"connection {cid!r}: password (the API security token) is empty")
        mask_secret(conn.password)
        # What goes over the wire (and into a debug log of requests) is the base64 form.
        basic = f"{conn.login}:{conn.password}".encode()
        mask_secret(base64.b64encode(basic).decode())
        for field_name, value in (("login", conn.login), ("password", conn.password)):
            if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(
                    f"connection {cid!r}: {field_name} has surrounding whitespace or a control "
                    "character (Skytap would refuse the credentials)"
                )
        if ":" in conn.login:
            raise ValueError(
                f"connection {cid!r}: login must be the Skytap user name only (no ':'); the "
                "API security token goes in the password field"
            )
        extra = conn.extra_dejson or {}
        allow_http = _boolean(extra, "allow_http", False, cid)
        try:
            regions = REGIONS + tuple(
                r for r in parse_regions(extra.get(EXTRA_REGIONS_KEY)) if r not in REGIONS
            )
        except ValueError as err:
            raise ValueError(f"connection {cid!r}: extra {err}") from None
        scope = extra.get("list_scope", "company")
        if scope not in ("company", "me"):
            raise ValueError(
                f"connection {cid!r}: extra 'list_scope' must be 'company' or 'me', got {scope!r}"
            )
        return cls(
            conn_id=cid,
            base_url=_base_url(conn.host, conn.port, cid, allow_http=allow_http),
            login=conn.login,
            token=conn.password,
            timeout=_positive(extra, "timeout", 60.0, cid),
            verify_ssl=_boolean(extra, "verify_ssl", True, cid),
            retry_deadline=_positive(extra, "retry_deadline", 600.0, cid, allow_zero=True),
            regions=regions,
            list_scope=scope,
            max_response_bytes=int(
                _positive(extra, "max_response_bytes", float(MAX_RESPONSE_BYTES), cid)
            ),
        )


def _base_url(host: str | None, port: int | None, cid: str, *, allow_http: bool = False) -> str:
    """The API's base URL from the host (and port) fields, refusing what would leak the token.

    A host carrying ``user:token@`` is refused (the credentials belong in login and password,
    where they are masked); ``http://`` only to loopback unless the extra ``allow_http`` is
    true (Basic auth over plain HTTP sends the token readable); a port in the host and in the
    port field must agree.
    """
    if not host:
        return DEFAULT_BASE_URL
    url = host.strip().rstrip("/")
    if "://" not in url:
        url = f"https://{url}"
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"connection {cid!r}: host must be an http(s) URL, got {_safe(host)!r}")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError(
            f"connection {cid!r}: host must not carry a user or token (got "
            f"{_safe(host)!r}); put the user name in login and the API token in password"
        )
    if parts.path or parts.query or parts.fragment:
        raise ValueError(
            f"connection {cid!r}: host must be a scheme and host only, got {_safe(host)!r}"
        )
    try:
        in_host = parts.port
    except ValueError:
        raise ValueError(f"connection {cid!r}: host has a bad port, got {host!r}") from None
    hostname = parts.hostname or ""
    if not hostname:
        raise ValueError(f"connection {cid!r}: host names no host, got {host!r}")
    if parts.scheme == "http" and not allow_http and not _loopback(hostname):
        raise ValueError(
            f"connection {cid!r}: host {host!r} is plain http:// to a host that is not "
            "loopback: the API token would cross the network readable. Use https://, or set "
            'the extra {"allow_http": true} if the network is trusted'
        )
    if port:
        port = int(port)
        if not 1 <= port <= 65535:
            raise ValueError(f"connection {cid!r}: port must be 1-65535, got {port!r}")
        if in_host is not None and in_host != port:
            raise ValueError(
                f"connection {cid!r}: the host says port {in_host} and the port field says "
                f"{port}; give the port once"
            )
        if in_host is None:
            url = f"{url}:{port}"
    return url


def _loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _safe(host: str) -> str:
    """A host value for an error, with any ``user:token@`` replaced by ``***@``."""
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "", host
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def _positive(
    extra: dict[str, Any], key: str, default: float, cid: str, *, allow_zero: bool = False
) -> float:
    value = extra.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or number < 0 or (number == 0 and not allow_zero):
        raise ValueError(
            f"connection {cid!r}: extra {key!r} must be a positive number, got {value!r}"
        )
    return number


def _boolean(extra: dict[str, Any], key: str, default: bool, cid: str) -> bool:
    value = extra.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"connection {cid!r}: extra {key!r} must be true or false, got {value!r}")


#: The Skytap connection the operators use unless told otherwise.
DEFAULT_CONN_ID = "skytap_default"


class _SkytapHookBase(BaseHook):
    """Connection handling shared by the sync and async hooks."""

    conn_name_attr = "skytap_conn_id"
    default_conn_name = "skytap_default"
    conn_type = "skytap"
    hook_name = "Skytap"

    def __init__(
        self,
        skytap_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
        logger: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skytap_conn_id = skytap_conn_id
        self._retry_policy = retry_policy
        # Where the API's progress lines go (a trigger passes its own log: the task's log).
        self.progress_log = logger

    def _make_api(self, settings: ConnectionSettings) -> SkytapApi:
        policy = self._retry_policy or RetryPolicy(deadline=settings.retry_deadline)
        return SkytapApi(
            base_url=settings.base_url,
            policy=policy,
            log=self.progress_log or self.log,
            regions=settings.regions,
            list_scope=settings.list_scope,
        )


class SkytapHook(_SkytapHookBase):
    """Talk to Skytap's REST API: read, copy, save, tag, delete and wait, with safe retries.

    Every call retries busy (423, or 409/422 saying busy), rate limited (429, honouring
    ``Retry-After``), unavailable (5xx) and connection failures with capped exponential
    backoff and jitter, until the connection's ``retry_deadline``. A POST that may have been
    carried out is never blindly sent again: the copy is first looked up by its name.

    :param skytap_conn_id: a connection of type ``skytap`` (login = user, password = token)
    :param retry_policy: overrides the connection's retry deadline and backoff
    :param logger: where progress lines go (default: the hook's own log)
    """

    @cached_property
    def settings(self) -> ConnectionSettings:
        return ConnectionSettings.from_connection(self.get_connection(self.skytap_conn_id))

    @property
    def connection_user(self) -> str:
        """The Skytap user the connection logs in as (its login): whom Skytap shows as the
        owner of what this hook makes."""
        return self.settings.login

    @cached_property
    def api(self) -> SkytapApi:
        return self._make_api(self.settings)

    def get_conn(self) -> requests.Session:
        """The hook's one ``requests.Session`` (authenticated, pooled, no retries of its own)."""
        return self._session

    @cached_property
    def _session(self) -> requests.Session:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.auth = (self.settings.login, self.settings.token)
        session.verify = self.settings.verify_ssl
        session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
        adapter = HTTPAdapter(max_retries=0)  # retries are the plan's, not urllib3's
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def close(self) -> None:
        if "_session" in self.__dict__:
            self._session.close()
            del self.__dict__["_session"]

    def __enter__(self) -> SkytapHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the runner

    def run(self, plan: Plan[T]) -> T:
        """Carry out a plan from :class:`SkytapApi` with blocking I/O; answers its result."""
        try:
            step = next(plan)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = plan.send(None)
                else:
                    step = plan.send(self._send(step))
        except StopIteration as done:
            return done.value

    def _send(self, request: Request) -> Response | TransportError:
        import requests

        timeout = self.settings.timeout
        try:
            with self.get_conn().request(
                request.method,
                request.url or f"{self.settings.base_url}{request.path}",
                params=None if request.url else request.params,
                json=request.body,
                timeout=(min(10.0, timeout), timeout),
                stream=True,
            ) as answer:
                content = _capped(
                    answer.iter_content(65536),
                    answer.headers.get("Content-Length"),
                    self.settings.max_response_bytes,
                    request,
                )
                return Response(answer.status_code, dict(answer.headers), content)
        except requests.exceptions.ConnectTimeout:
            where = _where(self.settings.base_url)
            return TransportError(f"timed out connecting to {where}", sent=False)
        except requests.exceptions.ReadTimeout:
            return TransportError(f"no answer within {timeout:.0f} s", sent=True)
        except requests.exceptions.ConnectionError as exc:
            refused = _connection_refused(exc)
            reason = (
                f"could not connect to {_where(self.settings.base_url)}"
                if refused
                else "connection lost"
            )
            return TransportError(f"{reason} ({_root_cause(exc)})", sent=not refused)
        except requests.exceptions.RequestException as exc:
            return TransportError(f"connection lost ({_root_cause(exc)})", sent=True)

    # ---- reads

    def get_environment(self, environment_id: Any) -> dict[str, Any]:
        """An environment with its VMs (runstate, interfaces, published services) and networks."""
        return self.run(self.api.get("environment", environment_id))

    def get_ssh_endpoints(
        self, environment_id: Any, vm_names: Iterable[str] | None = None, *, ssh_port: int = 22
    ) -> list[SshEndpoint]:
        """Each VM's SSH address, from a published service or the IP; see :func:`ssh_endpoints`."""
        return ssh_endpoints(self.get_environment(environment_id), vm_names, ssh_port=ssh_port)

    def ui_url(self, kind: Kind, resource_id: Any) -> str:
        """The Skytap web UI page of an environment or template, for links and logs."""
        return ui_url(self.settings.base_url, kind, resource_id)

    def get_template(self, template_id: Any) -> dict[str, Any]:
        return self.run(self.api.get("template", template_id))

    def get_resource(self, kind: Kind, resource_id: Any) -> dict[str, Any]:
        return self.run(self.api.get(kind, resource_id))

    def list_resources(
        self,
        kind: Kind,
        *,
        name: str | None = None,
        name_prefix: str | None = None,
        region: str | None = None,
        tags: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """Environments or templates matching every filter given (all pages are read).

        :param kind: ``environment`` or ``template``
        :param name: exactly this name
        :param name_prefix: names starting with this
        :param region: in this region
        :param tags: carrying all of these tags
        """
        plan = self.api.list_resources(
            kind, name=name, name_prefix=name_prefix, region=region, tags=tags
        )
        return self.run(plan)

    def find(self, kind: Kind, name: str, *, region: str | None = None) -> dict[str, Any] | None:
        """The environment or template with exactly this name (and region), or None."""
        return self.run(self.api.find(kind, name, region=region))

    def get_quotas(self) -> list[dict[str, Any]]:
        return self.run(self.api.quotas())

    # ---- copies

    def copy_environment(
        self,
        environment_id: Any,
        *,
        name: str | None = None,
        vm_ids: Iterable[Any] | None = None,
        target_region: str | None = None,
        live: bool = True,
        retry_busy: bool = True,
    ) -> dict[str, Any]:
        """Copy an environment, in its region or to ``target_region``, as a live clone.

        Answers the new environment, still busy: follow with :meth:`wait_until_ready`.
        ``live`` (default True) sends ``"live_copy": true``; False makes Skytap suspend the
        running VMs for the copy, and is logged as a warning.
        ``retry_busy`` false: a busy source raises :class:`SkytapBusyError` at once instead
        of being retried until the retry deadline.
        """
        plan = self.api.copy_environment(
            environment_id,
            name=name,
            vm_ids=vm_ids,
            target_region=target_region,
            live=live,
            retry_busy=retry_busy,
        )
        return self.run(plan)

    def save_as_template(
        self,
        environment_id: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        live: bool = True,
        retry_busy: bool = True,
    ) -> dict[str, Any]:
        """Save an environment as a template (a live clone); answers it, still busy.

        ``live`` (default True) sends ``"live_copy": true``; False makes Skytap suspend the
        running VMs, and is logged as a warning.
        ``retry_busy`` false: a busy source raises :class:`SkytapBusyError` at once.
        """
        plan = self.api.save_as_template(
            environment_id, name=name, description=description, live=live, retry_busy=retry_busy
        )
        return self.run(plan)

    def copy_template(
        self,
        template_id: Any,
        *,
        name: str | None = None,
        target_region: str | None = None,
        vm_ids: Iterable[Any] | None = None,
        retry_busy: bool = True,
    ) -> dict[str, Any]:
        """Copy a template, in its region or to ``target_region``; answers it, still busy.

        A region copy sends ``"copy_to_region_vm_status_override": true`` (Skytap's script).

        ``retry_busy`` false: a template busy with another copy (another region's, say)
        raises :class:`SkytapBusyError` at once instead of being retried until the deadline.
        """
        plan = self.api.copy_template(
            template_id,
            name=name,
            target_region=target_region,
            vm_ids=vm_ids,
            retry_busy=retry_busy,
        )
        return self.run(plan)

    # ---- changes

    def update(
        self,
        kind: Kind,
        resource_id: Any,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Rename and/or describe an environment or template."""
        return self.run(self.api.update(kind, resource_id, name=name, description=description))

    def set_runstate(
        self, environment_id: Any, runstate: str, *, wait: bool = True, timeout: float = 1200
    ) -> dict[str, Any]:
        """Change an environment's runstate; with ``wait``, answers it once settled."""
        result = self.run(self.api.set_runstate(environment_id, runstate))
        if wait:
            result = self.wait_until_ready("environment", environment_id, timeout=timeout)
            if result.get("runstate") != runstate:
                raise SkytapError(
                    f"environment {environment_id} settled as {result.get('runstate')!r}, "
                    f"not {runstate!r}"
                )
        return result

    def delete(
        self, kind: Kind, resource_id: Any, *, wait: bool = True, timeout: float = 600
    ) -> bool:
        """Delete; with ``wait``, returns once Skytap answers 404. False if already gone."""
        existed = self.run(self.api.delete(kind, resource_id))
        if existed and wait:
            self.run(self.api.wait_until_gone(kind, resource_id, timeout=timeout))
        return bool(existed)

    def add_tags(self, kind: Kind, resource_id: Any, tags: Iterable[str]) -> list[dict[str, Any]]:
        return self.run(self.api.add_tags(kind, resource_id, tags))

    def list_tags(self, kind: Kind, resource_id: Any) -> list[dict[str, Any]]:
        return self.run(self.api.list_tags(kind, resource_id))

    def remove_tag(self, kind: Kind, resource_id: Any, tag_id: Any) -> None:
        self.run(self.api.remove_tag(kind, resource_id, tag_id))

    # ---- waiting

    def wait_until_ready(
        self,
        kind: Kind,
        resource_id: Any,
        *,
        timeout: float = 3600,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        log_every: float = PROGRESS_LONGEST,
        already: float = 0.0,
    ) -> dict[str, Any]:
        """Poll until not busy, backing off; fail fast on ``error`` or 404; log progress.

        Progress lines (state, time spent, next check) follow
        :func:`~airflow_provider_skytap.hooks.api.progress_gap`: every 10 s for 2 min, every
        30 s to 10 min, then every poll pause, at most ``log_every`` apart.

        :param timeout: seconds before :class:`SkytapWaitTimeoutError`
        :param poll_interval: the first pause between polls; grows 1.5x per poll
        :param max_poll_interval: the longest pause between polls
        :param log_every: the longest gap between two progress lines, seconds
        :param already: seconds the wait had lasted before this call (counted in both)
        """
        plan = self.api.wait_until_ready(
            kind,
            resource_id,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            log_every=log_every,
            already=already,
        )
        return self.run(plan)

    # ---- restores

    def create_environment(
        self, template_id: Any, *, name: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Make an environment from a template, in the template's region; answers it, still
        busy (follow with :meth:`wait_until_ready`). A retry finds it by ``name``."""
        return self.run(
            self.api.create_environment(template_id, name=name, description=description)
        )

    def restore_environment(
        self,
        template_id: Any,
        *,
        name: str,
        region: str | None = None,
        outbound_traffic: bool = False,
        routable: bool = False,
        timeout: float = 3600,
        poll_interval: float = 5.0,
        log_every: float = PROGRESS_LONGEST,
        on_created: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Make an isolated environment from a template, in the template's region.

        An environment already called ``name`` in that region (an earlier try's) is used
        instead of making a second. Waits until it is made, then isolates it and checks the
        isolation read back; an environment that cannot be isolated is deleted before the
        error is raised. The answer carries ``requested_at`` (epoch seconds of the first
        request, kept in its description across retries).

        :param template_id: the template (the backup) to restore
        :param name: the environment's name, the key a retry finds it by
        :param region: the region the template must be in (None: any)
        :param outbound_traffic: may its VMs reach the internet (default False)
        :param routable: may its networks route to each other (default False)
        :param timeout: seconds to wait for the environment to be made
        :param poll_interval: the first pause between polls
        :param log_every: the longest gap between two progress lines, seconds
        :param on_created: called with the environment as soon as it exists (links, XComs)
        """
        template = self.get_template(template_id)
        tid, where = str(template["id"]), template.get("region")
        if region is not None and where != region:
            raise ValueError(
                f"region {region!r}: template {tid} ({template.get('name')!r}) is in {where!r}"
            )
        env = self.find("environment", name, region=where)
        if env is None:
            requested = time.time()
            env = self.create_environment(
                tid, name=name, description=restore_description(tid, requested)
            )
        else:
            requested = restore_requested_at(env) or time.time()
            self.log.info("Environment %s (%r) exists already: using it", env["id"], name)
        if on_created is not None:
            on_created(env)
        eid = str(env["id"])
        try:
            self.wait_until_ready(
                "environment",
                eid,
                timeout=timeout,
                poll_interval=poll_interval,
                max_poll_interval=max(poll_interval, min(60.0, log_every)),
                log_every=log_every,
            )
            isolated = self.isolate_environment(
                eid, outbound_traffic=outbound_traffic, routable=routable
            )
        except SkytapIsolationError:
            self.log.error("Environment %s is not isolated: deleting it", eid)
            self.delete("environment", eid)
            raise
        return {**isolated, "requested_at": requested, "template_id": tid}

    def isolate_environment(
        self, environment_id: Any, *, outbound_traffic: bool = False, routable: bool = False
    ) -> dict[str, Any]:
        """Set ``outbound_traffic`` and ``routable``, then read the environment back and check
        its own fields (and that no network has a VPN attachment or tunnel).

        :param environment_id: the environment
        :param outbound_traffic: may its VMs reach the internet (default False)
        :param routable: may its networks route to each other (default False)
        :raises SkytapIsolationError: naming every field that is not as asked
        """
        self.run(
            self.api.set_network_flags(
                environment_id, outbound_traffic=outbound_traffic, routable=routable
            )
        )
        env = self.get_environment(environment_id)
        problems = isolation_problems(env, outbound_traffic=outbound_traffic, routable=routable)
        if problems:
            raise SkytapIsolationError(
                f"environment {environment_id} is not isolated as asked: " + "; ".join(problems)
            )
        self.log.info(
            "Environment %s: outbound_traffic %s, routable %s, no VPN attachment or tunnel "
            "(read back)",
            environment_id,
            env.get("outbound_traffic"),
            env.get("routable"),
        )
        return env

    def start_environment(
        self,
        environment_id: Any,
        *,
        timeout: float = 1800,
        log_every: float = PROGRESS_LONGEST,
        poll_interval: float = 2.0,
    ) -> dict[str, Any]:
        """Ask for ``running`` and wait until the environment and every VM run; logs the
        runstates and the time spent on the ``progress_gap`` schedule. Answers the environment.

        :param environment_id: the environment
        :param timeout: seconds before :class:`SkytapWaitTimeoutError`
        :param log_every: the longest gap between two progress lines, seconds
        :param poll_interval: the first pause between polls (growing to 10 s at most)
        """
        current = self.get_environment(environment_id)
        if current.get("runstate") != "running":
            self.run(self.api.set_runstate(environment_id, "running"))
        return self.run(
            self.api.wait_until_running(
                environment_id,
                timeout=timeout,
                log_every=log_every,
                poll_interval=poll_interval,
                max_poll_interval=max(poll_interval, min(10.0, log_every)),
            )
        )

    def publish_service(
        self, environment_id: Any, vm_id: Any, interface_id: Any, internal_port: int = 22
    ) -> dict[str, Any]:
        """Publish a VM interface's port (SSH by default); answers ``id``, ``external_ip``,
        ``external_port``. A service already publishing that port is reused."""
        return self.run(
            self.api.publish_service(environment_id, vm_id, interface_id, internal_port)
        )

    def publish_ssh(
        self, environment_id: Any, *, vm_names: Iterable[str] | None = None, ssh_port: int = 22
    ) -> list[dict[str, Any]]:
        """Publish ``ssh_port`` on each VM's first interface (or only ``vm_names``'); answers
        ``[{"vm_id", "vm_name", "interface_id", "service_id", "host", "port"}]``."""
        env = self.get_environment(environment_id)
        wanted = None if vm_names is None else {str(n) for n in vm_names}
        published = []
        for vm in env.get("vms") or []:
            if wanted is not None and str(vm.get("name")) not in wanted:
                continue
            interfaces = vm.get("interfaces") or []
            if not interfaces:
                raise SkytapError(
                    f"VM {vm.get('id')} ({vm.get('name')!r}) of environment {environment_id} "
                    "has no network interface to publish SSH on"
                )
            nic = str(interfaces[0].get("id"))
            svc = self.publish_service(environment_id, vm["id"], nic, ssh_port)
            self.log.info(
                "VM %s (%r): port %s published as %s:%s",
                vm["id"],
                vm.get("name"),
                ssh_port,
                svc["external_ip"],
                svc["external_port"],
            )
            published.append(
                {
                    "vm_id": str(vm["id"]),
                    "vm_name": str(vm.get("name")),
                    "interface_id": nic,
                    "service_id": svc["id"],
                    "host": svc["external_ip"],
                    "port": svc["external_port"],
                }
            )
        return published

    def delete_restored(
        self,
        environment_id: Any = None,
        *,
        name: str | None = None,
        published: Iterable[Mapping[str, Any]] = (),
        timeout: float = 600,
    ) -> str | None:
        """Remove what a restore made: its published services, then the environment (by id,
        else found by ``name``), waiting until Skytap answers 404. Idempotent: answers the id
        deleted, or None when there was nothing to delete."""
        eid = None if environment_id in (None, "", "None") else str(environment_id)
        if eid is None and name:
            found = self.find("environment", name)
            eid = str(found["id"]) if found else None
        if eid is None:
            self.log.info("No restored environment to delete (none was made, or it is gone)")
            return None
        for svc in published:
            self.unpublish_service(eid, svc["vm_id"], svc["interface_id"], svc["service_id"])
        existed = self.delete("environment", eid, timeout=timeout)
        self.log.info(
            "Environment %s %s", eid, "deleted" if existed else "was already gone (nothing to do)"
        )
        return eid

    def unpublish_service(
        self, environment_id: Any, vm_id: Any, interface_id: Any, service_id: Any
    ) -> bool:
        """Remove a published service; False when it was already gone."""
        return self.run(self.api.unpublish_service(environment_id, vm_id, interface_id, service_id))

    def test_connection(self) -> tuple[bool, str]:
        """For the UI's Test button: one cheap authenticated read, 10 s at most."""
        try:
            settings = self.settings
            quick = dataclasses.replace(
                self._make_api(settings),
                policy=RetryPolicy(deadline=min(10.0, settings.retry_deadline)),
            )
            self.run(
                quick.call(
                    Request("GET", "/v2/configurations", "test connection", params={"count": 1})
                )
            )
        except (SkytapError, ValueError) as err:
            return False, str(err)
        return True, f"Connected to {settings.base_url} as {settings.login}"


class SkytapAsyncHook(_SkytapHookBase):
    """The async twin of :class:`SkytapHook` for triggers: the same plans, run on httpx.

    :param skytap_conn_id: a connection of type ``skytap``
    :param retry_policy: overrides the connection's retry deadline and backoff
    """

    _settings: ConnectionSettings | None = None

    async def get_settings(self) -> ConnectionSettings:
        if self._settings is None:
            conn = await self.aget_connection(self.skytap_conn_id)
            self._settings = ConnectionSettings.from_connection(conn)
        return self._settings

    async def get_api(self) -> SkytapApi:
        return self._make_api(await self.get_settings())

    async def run(self, plan: Plan[T]) -> T:
        """Carry out a plan from :class:`SkytapApi` on one httpx client; answers its result."""
        settings = await self.get_settings()
        async with httpx.AsyncClient(
            auth=(settings.login, settings.token),
            verify=settings.verify_ssl,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
        ) as client:
            try:
                step = next(plan)
                while True:
                    if isinstance(step, Sleep):
                        await asyncio.sleep(step.seconds)
                        step = plan.send(None)
                    else:
                        step = plan.send(await self._send(client, settings, step))
            except StopIteration as done:
                return done.value

    @staticmethod
    async def _send(
        client: httpx.AsyncClient, settings: ConnectionSettings, request: Request
    ) -> Response | TransportError:
        try:
            async with client.stream(
                request.method,
                request.url or f"{settings.base_url}{request.path}",
                params=None if request.url else request.params,
                json=request.body,
            ) as answer:
                limit = settings.max_response_bytes
                _check_length(answer.headers.get("Content-Length"), limit, request)
                chunks: list[bytes] = []
                size = 0
                async for chunk in answer.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_big(request, limit)
                    chunks.append(chunk)
                return Response(answer.status_code, dict(answer.headers), b"".join(chunks))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            where = _where(settings.base_url)
            return TransportError(
                f"could not connect to {where} ({type(exc).__name__})", sent=False
            )
        except httpx.TimeoutException:
            return TransportError(f"no answer within {settings.timeout:.0f} s", sent=True)
        except httpx.TransportError as exc:
            return TransportError(f"connection lost ({type(exc).__name__})", sent=True)

    async def get_resource(self, kind: Kind, resource_id: Any) -> dict[str, Any]:
        api = await self.get_api()
        return await self.run(api.get(kind, resource_id))

    async def wait_until_ready(
        self,
        kind: Kind,
        resource_id: Any,
        *,
        timeout: float = 3600,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        log_every: float = PROGRESS_LONGEST,
        already: float = 0.0,
    ) -> dict[str, Any]:
        """The async :meth:`SkytapHook.wait_until_ready`: the same plan, on httpx."""
        api = await self.get_api()
        plan = api.wait_until_ready(
            kind,
            resource_id,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            log_every=log_every,
            already=already,
        )
        return await self.run(plan)


def _too_big(request: Request, limit: int) -> SkytapResponseError:
    return SkytapResponseError(
        request.action,
        None,
        [f"Skytap's answer is larger than {limit} bytes; refused unread"],
        detail="raise the connection extra 'max_response_bytes' if this is expected",
    )


def _check_length(header: str | None, limit: int, request: Request) -> None:
    """Refuse at once an answer whose ``Content-Length`` says it is too big."""
    if header and header.strip().isdigit() and int(header) > limit:
        raise _too_big(request, limit)


def _capped(chunks: Iterable[bytes], length: str | None, limit: int, request: Request) -> bytes:
    """The whole body, read chunk by chunk and refused past ``limit`` bytes (memory stays
    bounded whatever the server sends)."""
    _check_length(length, limit, request)
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_big(request, limit)
        parts.append(chunk)
    return b"".join(parts)


def _where(base_url: str) -> str:
    """The API URL's scheme, host and port, for an error: never any user or password in it."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return "the connection's API URL"
    where = f"{parts.scheme}://{parts.hostname or ''}"
    return where + (f":{port}" if port else "")


def _connection_refused(exc: BaseException) -> bool:
    """Whether a requests ConnectionError happened before anything was sent."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, NewConnectionError | ConnectionRefusedError):
            return True
        if isinstance(current, MaxRetryError):
            todo.append(current.reason)
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        todo.extend([current.__cause__, current.__context__])
    return False


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's class name: enough to tell a reset from a refusal."""
    current: BaseException = exc
    for _ in range(10):
        inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        inner = inner or current.__cause__ or current.__context__
        if inner is None:
            break
        current = inner
    return type(current).__name__
