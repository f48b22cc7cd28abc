"""Everything the provider knows about Skytap's REST API, without doing any I/O.

Each call is a *plan*: a generator that yields :class:`Request` (send this) and :class:`Sleep`
(wait this long) steps and receives a :class:`Response` or a :class:`TransportError` back.
:class:`~airflow_provider_skytap.hooks.skytap.SkytapHook` runs plans with ``requests`` and
``time.sleep``; :class:`~airflow_provider_skytap.hooks.skytap.SkytapAsyncHook` runs the very
same plans with ``httpx`` and ``asyncio.sleep``. URLs, bodies, error parsing, retry rules, the
no-duplicate-POST rule and readiness all live here, once.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_skytap.exceptions import SkytapAPIError as SkytapAPIError
from airflow_provider_skytap.exceptions import SkytapAuthError as SkytapAuthError
from airflow_provider_skytap.exceptions import SkytapBusyError as SkytapBusyError
from airflow_provider_skytap.exceptions import SkytapError as SkytapError
from airflow_provider_skytap.exceptions import SkytapIsolationError as SkytapIsolationError
from airflow_provider_skytap.exceptions import SkytapNotFoundError as SkytapNotFoundError
from airflow_provider_skytap.exceptions import SkytapRefusedError as SkytapRefusedError
from airflow_provider_skytap.exceptions import (
    SkytapResourceFailedError as SkytapResourceFailedError,
)
from airflow_provider_skytap.exceptions import SkytapResponseError as SkytapResponseError
from airflow_provider_skytap.exceptions import SkytapScopeError as SkytapScopeError
from airflow_provider_skytap.exceptions import SkytapWaitTimeoutError as SkytapWaitTimeoutError

# The error classes are defined in airflow_provider_skytap.exceptions; importable from here.
from airflow_provider_skytap.progress import PROGRESS_LONGEST as PROGRESS_LONGEST
from airflow_provider_skytap.progress import PROGRESS_SHORTEST_LATE as PROGRESS_SHORTEST_LATE
from airflow_provider_skytap.progress import PROGRESS_STEPS as PROGRESS_STEPS
from airflow_provider_skytap.progress import Progress as Progress
from airflow_provider_skytap.progress import ago as ago
from airflow_provider_skytap.progress import progress_gap as progress_gap

DEFAULT_BASE_URL = "https://cloud.skytap.com"
Kind = Literal["environment", "template"]
KINDS: tuple[Kind, ...] = ("environment", "template")
# Skytap calls environments "configurations".
_COLLECTION: dict[Kind, str] = {"environment": "configurations", "template": "templates"}
RUNSTATES = ("running", "suspended", "stopped", "halted")
PAGE_SIZE = 100
# Checked with fullmatch: ``$`` alone would let "1001\n" or "EMEA\n" through.
_ID = re.compile(r"[0-9]{1,20}")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# Control characters (C0, DEL, C1) and the line/paragraph separators: Skytap would strip or
# mangle them, and a name or tag that carries one would never be found again by that name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Skytap's 16 regions as its help topic "understanding-regions" lists them. Skytap has no call
# that lists regions and adds new ones: a user names more in the connection extra
# ``extra_regions`` (see ``ConnectionSettings``), never by editing the package. Used to refuse
# an unknown DR region before anything is frozen or copied (``checks.dr_regions``).
REGIONS: tuple[str, ...] = (
    "APAC-2",
    "AU-Sydney-I-1",
    "CAN-Toronto",
    "CN-HongKong-M-1",
    "DE-Frankfurt-I-1",
    "EMEA",
    "IE-Dublin-M-1",
    "IN-Pune-M-1",
    "NL-Amsterdam-M-1",
    "SG-Singapore-M-1",
    "UK-London-M-1",
    "US-Central",
    "US-East-2",
    "US-Texas-M-1",
    "US-Virginia-M-1",
    "US-West",
)
#: The connection extra that adds regions the package does not know yet.
EXTRA_REGIONS_KEY = "extra_regions"
#: The longest response body the provider reads (bytes); a bigger one is refused, unread.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


# --------------------------------------------------------------------------- errors
# The error classes live in airflow_provider_skytap.exceptions (one module, one retry rule);
# they stay importable from here.


# --------------------------------------------------------------------------- plan steps


@dataclass(frozen=True)
class Request:
    """One HTTP request to Skytap, relative to the connection's base URL."""

    method: str
    path: str
    action: str
    params: Mapping[str, str | int] | None = None
    body: Any = None
    #: a full URL (a pagination ``Link``) that replaces base URL + path + params
    url: str | None = None


@dataclass(frozen=True)
class Response:
    """What came back, reduced to what the rules need."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    @property
    def request_id(self) -> str | None:
        return self.header("X-Request-ID")

    def json(self) -> Any:
        if not self.content:
            return None
        try:
            return json.loads(self.content)
        except ValueError:
            return None


@dataclass(frozen=True)
class TransportError:
    """No complete response. ``sent`` tells whether the request may have reached Skytap."""

    description: str
    sent: bool


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Request | Sleep
Plan = Generator[Step, "Response | TransportError | None", T]


# --------------------------------------------------------------------------- retry rules


@dataclass(frozen=True)
class Verdict:
    """How the retry loop treats one outcome."""

    retry: bool
    reason: str
    #: the request may have been carried out although no success came back (POST only)
    ambiguous: bool = False
    retry_after: float | None = None
    #: Skytap refused because the resource (or a copy's source) is busy: 423, 409/422 "busy"
    busy: bool = False


def error_messages(response: Response) -> list[str]:
    """Skytap's error text: ``{"error": "msg"}`` or ``{"errors": ["msg", ...]}``."""
    data = response.json()
    messages: list[str] = []
    if isinstance(data, dict):
        single = data.get("error")
        if isinstance(single, str) and single:
            messages.append(single)
        many = data.get("errors")
        if isinstance(many, list):
            messages.extend(str(m) for m in many if m)
        elif isinstance(many, str) and many:
            messages.append(many)
    if not messages and response.content and data is None:
        messages.append(response.content[:200].decode("utf-8", "replace").strip())
    return messages


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(request: Request, outcome: Response | TransportError) -> Verdict | None:
    """Decide what to do with an outcome: None for success, else a :class:`Verdict`."""
    is_post = request.method == "POST"
    if isinstance(outcome, TransportError):
        return Verdict(True, outcome.description, ambiguous=is_post and outcome.sent)
    status = outcome.status
    if 200 <= status < 300:
        return None
    messages = error_messages(outcome)
    text = "; ".join(messages)
    if status == 423:
        return Verdict(True, f"423 busy: {text}".rstrip(": "), busy=True)
    if status == 429:
        after = parse_retry_after(outcome.header("Retry-After"))
        return Verdict(True, "429 too many requests", retry_after=after)
    if status in (409, 422) and "busy" in text.lower():
        return Verdict(True, f"{status} busy: {text}", busy=True)
    if status >= 500:
        return Verdict(True, f"{status} {text}".strip(), ambiguous=is_post)
    return Verdict(False, text)


def api_error(request: Request, response: Response) -> SkytapAPIError:
    """The exception for a final error response, typed by status."""
    cls: type[SkytapAPIError] = SkytapAPIError
    if response.status == 404:
        cls = SkytapNotFoundError
    elif response.status in (401, 403):
        cls = SkytapAuthError
    elif 400 <= response.status < 500 and response.status not in (408, 409):
        # Refused, and the same request would be refused again: final (exceptions.py).
        cls = SkytapRefusedError
    detail = None
    if response.status == 401:
        detail = "check the connection's Skytap user name and API security token"
    elif response.status == 403:
        detail = "Skytap does not let the connection's user do this"
    return cls(
        request.action, response.status, error_messages(response), response.request_id, detail
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, bounded by a total deadline per call.

    :param deadline: seconds one call may spend retrying before it fails
    :param base: first backoff in seconds
    :param cap: the longest single backoff in seconds
    """

    deadline: float = 600.0
    base: float = 1.0
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based).

        "Equal jitter": half the exponential step fixed, half random, so many clients that
        failed together do not come back together. ``Retry-After`` is a floor, never cut.
        """
        step = min(self.cap, self.base * (2 ** (attempt - 1)))
        backoff = step / 2 + self.rng.uniform(0, step / 2)
        if retry_after is not None:
            return max(retry_after, backoff)
        return backoff


# --------------------------------------------------------------------------- validation


def check_id(value: Any, what: str) -> str:
    """A Skytap id as a string of digits, or a ValueError naming the field and the value.

    The whole string must be digits: surrounding whitespace or a newline is refused, not
    stripped (a value that needs cleaning is a value someone should look at).
    """
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not _ID.fullmatch(text):
        raise ValueError(f"{what} must be a Skytap id (digits only), got {value!r}")
    return text


def check_kind(kind: Any) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def check_region(
    region: Any, known: Iterable[str] | None = None, what: str = "target_region"
) -> str:
    """A region name (the whole string), and one of ``known`` when given.

    :param region: the value to check
    :param known: the regions accepted (``REGIONS`` plus the connection's ``extra_regions``);
        None checks the form only
    :param what: the field named in the error
    """
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise ValueError(
            f"{what} must be a Skytap region name such as 'US-West' or 'EMEA', got {region!r}"
        )
    if known is not None:
        allowed = list(known)
        if region not in allowed:
            raise ValueError(
                f"{what} {region!r} is not a Skytap region this provider knows "
                f"({', '.join(allowed)}). If Skytap has added it, name it in the Skytap "
                f"connection's extra {EXTRA_REGIONS_KEY!r}, e.g. "
                f'{{"{EXTRA_REGIONS_KEY}": ["{region}"]}}'
            )
    return region


def check_text(value: Any, what: str, *, limit: int = 255) -> str:
    """A non-empty string of at most ``limit`` characters, with no surrounding whitespace and
    no control characters (Skytap strips or mangles them: the value would not round-trip)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > limit:
        raise ValueError(f"{what} must be at most {limit} characters, got {len(value)}")
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with whitespace, got {value!r}")
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters, got {value!r}")
    return value


def check_name(name: Any, what: str = "name") -> str:
    return check_text(name, what)


def check_description(description: Any, what: str = "description") -> str:
    """Free text, may be empty or multi-line; only NUL and other C0 controls but tab and
    newline are refused."""
    if not isinstance(description, str):
        raise ValueError(f"{what} must be a string, got {description!r}")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", description):
        raise ValueError(f"{what} must not contain control characters, got {description!r}")
    return description


def check_vm_ids(vm_ids: Iterable[Any] | None) -> list[str] | None:
    if vm_ids is None:
        return None
    if isinstance(vm_ids, str | bytes):
        raise ValueError(f"vm_ids must be a list of VM ids, got the string {vm_ids!r}")
    ids = [check_id(v, "vm_ids item") for v in vm_ids]
    if not ids:
        raise ValueError("vm_ids must name at least one VM when given (got an empty list)")
    return ids


def parse_regions(value: Any, what: str = EXTRA_REGIONS_KEY) -> tuple[str, ...]:
    """Extra region names from a connection extra: a list, or a comma-separated string."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"{what} must be a list of Skytap region names, got {value!r}")
    found = []
    for item in items:
        name = item.strip() if isinstance(value, str) and isinstance(item, str) else item
        found.append(check_region(name, what=f"{what} item"))
    return tuple(found)


# --------------------------------------------------------------------------- response shapes


def _shape_error(action: str, field_name: str, value: Any, want: str) -> SkytapResponseError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return SkytapResponseError(
        action, None, [f"Skytap answered {field_name} = {shown}; expected {want}"]
    )


def parse_busy(value: Any, action: str = "read template") -> bool:
    """A template's ``busy``: true/false/null, or their string forms; anything else refused."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "null", ""):
        return value.strip().lower() == "true"
    raise _shape_error(action, "busy", value, "true, false or null")


def check_resource(kind: Kind, data: Any, action: str) -> dict[str, Any]:
    """One environment or template as the provider reads it, or a :class:`SkytapResponseError`
    naming the field: ``id`` digits, ``name`` a string, ``region`` a region name, ``tags`` and
    ``vms`` lists of objects, ``runstate`` (environments) a string, ``busy`` (templates) a
    boolean or null (or its string form, normalised)."""
    if not isinstance(data, dict):
        raise _shape_error(action, f"the {kind}", data, "a JSON object")
    rid = data.get("id")
    if not isinstance(rid, int | str) or isinstance(rid, bool) or not _ID.fullmatch(str(rid)):
        raise _shape_error(action, "id", rid, "a Skytap id (digits)")
    for key in ("name", "region", "description"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise _shape_error(action, key, value, "a string")
    region = data.get("region")
    if region and not _REGION.fullmatch(region):
        raise _shape_error(action, "region", region, "a region name")
    for key in ("tags", "vms", "networks"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise _shape_error(action, key, value, "a list of objects")
    for tag in data.get("tags") or []:
        if not isinstance(tag.get("value"), str):
            raise _shape_error(action, "tags[].value", tag.get("value"), "a string")
    for vm in data.get("vms") or []:
        if vm.get("runstate") is not None and not isinstance(vm.get("runstate"), str):
            raise _shape_error(action, "vms[].runstate", vm.get("runstate"), "a string")
        interfaces = vm.get("interfaces")
        if interfaces is not None and (
            not isinstance(interfaces, list) or not all(isinstance(i, dict) for i in interfaces)
        ):
            raise _shape_error(action, "vms[].interfaces", interfaces, "a list of objects")
    if kind == "environment":
        runstate = data.get("runstate")
        if runstate is not None and not isinstance(runstate, str):
            raise _shape_error(action, "runstate", runstate, "a string")
    else:
        data = {**data, "busy": parse_busy(data.get("busy"), action)}
    return data


# --------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class Readiness:
    """Where a copy stands: ``busy``, ``ready`` or ``failed`` (with Skytap's message)."""

    state: Literal["busy", "ready", "failed"]
    detail: str


def readiness(kind: Kind, resource: Mapping[str, Any]) -> Readiness:
    """The one definition of "done" for environments and templates.

    An environment is done when ``runstate`` leaves ``busy``; a template when ``busy`` is
    null/false. A filled-in ``error`` (or ``errors``) means the copy failed.
    """
    error = resource.get("error")
    errors = resource.get("errors")
    problems = [str(error)] if error else []
    if isinstance(errors, list):
        problems.extend(str(e) for e in errors if e)
    if problems:
        return Readiness("failed", "; ".join(problems))
    if kind == "environment":
        runstate = str(resource.get("runstate") or "unknown")
        return Readiness("busy" if runstate == "busy" else "ready", f"runstate {runstate}")
    busy = parse_busy(resource.get("busy"), f"read template {resource.get('id')}")
    return Readiness("busy" if busy else "ready", f"busy {resource.get('busy')}")


def poll_pauses(first: float, longest: float) -> Iterator[float]:
    """The pauses between the polls of one wait: ``first``, then 1.5x longer each time, up to
    ``longest``. Every poller of the provider (the hooks' waits, the trigger, the sensor's
    pokes) waits this way, so a long copy costs tens of requests, not thousands.

    :param first: the first pause, seconds (at least 0.05)
    :param longest: the longest pause, seconds
    """
    pause = max(0.05, float(first))
    while True:
        yield pause
        pause = min(float(longest), pause * 1.5)


def describe(kind: Kind, resource_id: str, resource: Mapping[str, Any] | None = None) -> str:
    name = (resource or {}).get("name")
    return f"{kind} {resource_id}" + (f" ({name!r})" if name else "")


def ui_url(base_url: str, kind: Kind, resource_id: Any) -> str:
    """The Skytap web UI page of an environment or template (same host as the API)."""
    return f"{base_url.rstrip('/')}/{_COLLECTION[check_kind(kind)]}/{check_id(resource_id, 'id')}"


# A resource's page in Skytap's web UI is its API reference URI (help.skytap.com, API v1
# reference), without ``/v2`` or ``.json``; Skytap users link it to open the resource.
_PAGE = re.compile(r"^(?:/v2)?/(configurations|templates)/([0-9]{1,20})(?:\.json)?/?$")


def page_url(url: Any) -> str:
    """The web page of the resource ``url`` names, or "" when it names none.

    Only ``http(s)://host[:port]/configurations/ID`` or ``/templates/ID`` comes out: a user
    or token in the address, a query, a fragment or any other path is dropped, so a link made
    from it can never carry a secret or point anywhere but a resource page.

    :param url: an address of the resource (its API address or its page)
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


# --------------------------------------------------------------------------- VM addresses


@dataclass(frozen=True)
class SshEndpoint:
    """Where to reach one VM's SSH server from outside Skytap."""

    vm_id: str
    vm_name: str
    host: str
    port: int
    via: Literal["published_service", "interface_ip"]


def ssh_endpoints(
    environment: Mapping[str, Any], vm_names: Iterable[str] | None = None, *, ssh_port: int = 22
) -> list[SshEndpoint]:
    """Each VM's SSH address: a published service for ``ssh_port``, else its interface IP.

    A published service (``external_ip:external_port`` mapped to ``internal_port`` 22) is what
    reaches a VM from outside Skytap; without one, the interface IP works only from inside the
    environment's network (VPN, ICNR). ``vm_names`` keeps only VMs with those exact names, in
    the environment's order; a name that matches no VM is an error naming the VMs there are.
    """
    vms = [vm for vm in environment.get("vms") or [] if isinstance(vm, Mapping)]
    env_label = f"environment {environment.get('id')} ({environment.get('name')!r})"
    if vm_names is not None:
        if isinstance(vm_names, str | bytes):
            raise ValueError(f"vm_names must be a list of VM names, got the string {vm_names!r}")
        wanted = [str(n) for n in vm_names]
        known = [str(vm.get("name")) for vm in vms]
        missing = [n for n in wanted if n not in known]
        if missing:
            raise ValueError(
                f"vm_names {missing!r} match no VM of {env_label}; its VMs are {known!r}"
            )
        vms = [vm for vm in vms if str(vm.get("name")) in wanted]
    found: list[SshEndpoint] = []
    for vm in vms:
        vm_id, vm_name = str(vm.get("id")), str(vm.get("name"))
        interfaces = [i for i in vm.get("interfaces") or [] if isinstance(i, Mapping)]
        endpoint = None
        where = f"VM {vm_id} ({vm_name!r}) of {env_label}"
        for iface in interfaces:
            services = iface.get("services") or []
            if not isinstance(services, list):
                raise ValueError(f"{where}: Skytap answered services = {services!r}; not a list")
            for svc in services:
                if not isinstance(svc, Mapping):
                    continue
                if str(svc.get("internal_port")) == str(ssh_port) and svc.get("external_ip"):
                    endpoint = SshEndpoint(
                        vm_id,
                        vm_name,
                        check_ip(svc["external_ip"], f"{where}: external_ip"),
                        check_port(svc.get("external_port"), f"{where}: external_port"),
                        "published_service",
                    )
                    break
            if endpoint:
                break
        if endpoint is None:
            ip = next(
                (check_ip(i["ip"], f"{where}: interface ip") for i in interfaces if i.get("ip")),
                None,
            )
            if ip is None:
                raise ValueError(
                    f"VM {vm_id} ({vm_name!r}) of {env_label} has neither a published service "
                    f"for port {ssh_port} nor an interface IP, so it cannot be reached over SSH"
                )
            endpoint = SshEndpoint(vm_id, vm_name, ip, ssh_port, "interface_ip")
        found.append(endpoint)
    if not found:
        raise ValueError(f"{env_label} has no VMs to reach over SSH")
    return found


def check_port(value: Any, what: str) -> int:
    """A TCP port from Skytap's answer: a whole number 1-65535 (or its digits), else refused."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    port = int(text) if _ID.fullmatch(text) and len(text) <= 5 else 0
    if not 1 <= port <= 65535:
        raise ValueError(f"{what} must be a TCP port 1-65535, got {value!r}")
    return port


def check_ip(value: Any, what: str) -> str:
    """An IPv4 or IPv6 address from Skytap's answer (never a host name, never a URL)."""
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise ValueError(f"{what} must be an IP address, got {value!r}") from None


# --------------------------------------------------------------------------- the API


def default_copy_name(source_kind: Kind, source_id: str) -> str:
    """A unique name for a copy the caller did not name, so a retry can find it again."""
    return f"skytap-copy-of-{source_kind}-{source_id}-{secrets.token_hex(4)}"


@dataclass
class SkytapApi:
    """Skytap's REST API as plans. Holds no connection and does no I/O.

    :param base_url: scheme and host of the API, e.g. ``https://cloud.skytap.com``
    :param policy: the retry policy of every call
    :param log: where progress and retries are logged
    :param clock: monotonic clock (seconds); tests may pass their own
    :param regions: the regions a copy may go to: ``REGIONS`` plus the connection's
        ``extra_regions``
    :param list_scope: the ``scope`` of list calls: ``company`` (every user's resources;
        Skytap lets company admins use it) or ``me`` (the connection's user's own)
    """

    base_url: str = DEFAULT_BASE_URL
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    log: Any = field(default_factory=lambda: logging.getLogger(__name__))
    clock: Callable[[], float] = time.monotonic
    regions: tuple[str, ...] = REGIONS
    list_scope: str = "company"

    # ---- the retry loop: every call goes through here

    def call(
        self,
        request: Request,
        recover: Callable[[], Plan[Any]] | None = None,
        *,
        retry_busy: bool = True,
    ) -> Plan[tuple[Any, Response | None]]:
        """Send ``request`` until it succeeds, retrying what is worth retrying.

        Returns the decoded body and the response. When a POST may have been carried out
        without a success reaching us (timeout, dropped connection, 5xx), ``recover`` looks
        for what it would have created before the POST is sent again; if it finds it, that
        is returned (with no response) instead of making a second copy. With ``retry_busy``
        false, a busy answer raises :class:`SkytapBusyError` at once (for a caller that can
        wait for the resource more cheaply, e.g. deferred, than by sending again).
        """
        start = self.clock()
        attempt = 0
        while True:
            outcome = yield request
            assert outcome is not None
            verdict = classify(request, outcome)
            if verdict is None:
                assert isinstance(outcome, Response)
                return outcome.json(), outcome
            if not verdict.retry:
                assert isinstance(outcome, Response)
                raise api_error(request, outcome)
            if verdict.busy and not retry_busy:
                assert isinstance(outcome, Response)
                raise SkytapBusyError(
                    request.action,
                    outcome.status,
                    error_messages(outcome),
                    outcome.request_id,
                    "busy; not retried",
                )
            if verdict.ambiguous and recover is not None:
                self.log.warning(
                    "%s: %s; it may have been carried out, looking for it before sending again",
                    request.action,
                    verdict.reason,
                )
                found = yield from recover()
                if found is not None:
                    self.log.info(
                        "%s: found what the earlier attempt made; using it", request.action
                    )
                    return found, None
            attempt += 1
            delay = self.policy.delay(attempt, verdict.retry_after)
            spent = self.clock() - start
            if spent + delay > self.policy.deadline:
                gave_up = (
                    f"gave up after {attempt} attempts in {spent:.0f} s "
                    f"(retry deadline {self.policy.deadline:.0f} s)"
                )
                if isinstance(outcome, Response):
                    raise SkytapAPIError(
                        request.action,
                        outcome.status,
                        error_messages(outcome),
                        outcome.request_id,
                        gave_up,
                    )
                raise SkytapAPIError(request.action, None, [outcome.description], None, gave_up)
            self.log.warning(
                "%s: %s; retry %d in %.1f s", request.action, verdict.reason, attempt, delay
            )
            yield Sleep(delay)

    def _body(self, request: Request) -> Plan[Any]:
        data, _ = yield from self.call(request)
        return data

    # ---- reads (v2)

    def get(self, kind: Kind, resource_id: Any) -> Plan[dict[str, Any]]:
        """One environment (with its VMs, their interfaces and networks) or template."""
        kind = check_kind(kind)
        rid = check_id(resource_id, f"{kind} id")
        path = f"/v2/{_COLLECTION[kind]}/{rid}"
        data = yield from self._body(Request("GET", path, f"get {kind} {rid}"))
        return check_resource(kind, data, f"get {kind} {rid}")

    def raw_get(self, kind: Kind, resource_id: Any) -> Plan[tuple[Any, Response]]:
        """One environment or template as Skytap answers it, unchecked, with the response
        (for ``probe``, which reports a shape that differs instead of failing on it)."""
        kind = check_kind(kind)
        rid = check_id(resource_id, f"{kind} id")
        path = f"/v2/{_COLLECTION[kind]}/{rid}"
        data, response = yield from self.call(Request("GET", path, f"get {kind} {rid}"))
        assert response is not None
        return data, response

    def raw_page(
        self,
        kind: Kind,
        *,
        count: int,
        offset: int = 0,
        scope: str | None = None,
        tags: bool = True,
        name: str | None = None,
    ) -> Plan[tuple[Any, Response]]:
        """One page of a list as Skytap answers it, unchecked, with the response (``probe``)."""
        kind = check_kind(kind)
        params: dict[str, str | int] = {"count": count, "offset": offset}
        params["scope"] = scope or self.list_scope
        if tags:
            params["tags"] = "true"
        if name is not None and _query_safe(name):
            params["query"] = f"name:{name}"
        request = Request("GET", f"/v2/{_COLLECTION[kind]}", f"list {kind}s", params=params)
        data, response = yield from self.call(request)
        assert response is not None
        return data, response

    def list_resources(
        self,
        kind: Kind,
        *,
        name: str | None = None,
        name_prefix: str | None = None,
        region: str | None = None,
        tags: Iterable[str] = (),
        scope: str | None = None,
    ) -> Plan[list[dict[str, Any]]]:
        """Every environment or template matching all filters, reading every page.

        ``name`` and ``name_prefix`` and ``region`` are sent in Skytap's ``query``; ``name``
        is also matched exactly here, and ``tags`` (all required) are matched on the
        ``tags`` each result carries. Every list asks ``tags=true``: Skytap may leave tags
        out of list results unless asked (ansible-skytap's ``listByTag``), and "no tags"
        must never be concluded from a list that did not ask. Pages are read by ``offset``
        and the ``Content-Range`` total alone (no Skytap client reads a ``Link`` header); a
        page that repeats one already read is a paging loop and an error.

        :param scope: ``company`` or ``me``; default the connection's ``list_scope``
        """
        kind = check_kind(kind)
        action = f"list {kind}s"
        terms = []
        if name is not None and _query_safe(check_name(name)):
            terms.append(f"name:{name}")
        elif name_prefix is not None and _query_safe(name_prefix):
            terms.append(f"name:{name_prefix}*")
        if region is not None:
            terms.append(f"region:{check_region(region, what='region')}")
        scope = scope or self.list_scope
        params: dict[str, str | int] = {"count": PAGE_SIZE, "offset": 0, "tags": "true"}
        if scope:
            params["scope"] = scope
        if terms:
            params["query"] = ",".join(terms)
        wanted_tags = {t.lower() for t in tags}
        path = f"/v2/{_COLLECTION[kind]}"
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        request = Request("GET", path, action, params=params)
        while True:
            try:
                data, response = yield from self.call(request)
            except SkytapAuthError as err:
                if scope == "company" and err.status == 403:
                    raise SkytapScopeError(
                        action,
                        err.status,
                        err.messages,
                        err.request_id,
                        "Skytap refused scope=company: the connection's user is not a company "
                        "admin. Make the user a company admin (the provider must see every "
                        "user's copies to never make a second one and to prune), or, if this "
                        "user makes every copy the provider manages, set the connection extra "
                        '{"list_scope": "me"}',
                    ) from None
                raise
            if not isinstance(data, list):
                raise _shape_error(action, "the list", data, "a JSON list")
            page = [check_resource(kind, item, action) for item in data]
            ids = [str(item["id"]) for item in page]
            if page and set(ids) <= seen:
                raise SkytapResponseError(
                    action,
                    None,
                    [f"paging loop: offset {params['offset']} answered ids already read"],
                )
            seen.update(ids)
            found.extend(
                item
                for item in page
                if (name is None or item.get("name") == name)
                and (name_prefix is None or str(item.get("name", "")).startswith(name_prefix))
                and wanted_tags <= tag_values(item)
            )
            assert response is not None
            total = _content_range_total(response.header("Content-Range"), action)
            received = int(params["offset"]) + len(page)
            if not page or (total is not None and received >= total):
                return found
            if total is None and len(page) < PAGE_SIZE:
                return found
            if received > 10_000_000:
                raise SkytapResponseError(action, None, ["paging did not end"])
            params = {**params, "offset": received}
            request = Request("GET", path, action, params=params)

    def find(
        self, kind: Kind, name: str, *, region: str | None = None
    ) -> Plan[dict[str, Any] | None]:
        """The environment or template with exactly this name (and region), or None.

        When several match (made outside the provider), the newest (highest id) wins.
        """
        matches = yield from self.list_resources(kind, name=check_name(name), region=region)
        if not matches:
            return None
        if len(matches) > 1:
            self.log.warning(
                "%d %ss are named %r; using the newest, %s",
                len(matches),
                kind,
                name,
                max(matches, key=_numeric_id)["id"],
            )
        return max(matches, key=_numeric_id)

    def quotas(self) -> Plan[list[dict[str, Any]]]:
        data = yield from self._body(Request("GET", "/v2/company/quotas", "get quotas"))
        return data if isinstance(data, list) else []

    # ---- creating copies (v1 writes), never twice

    def _create(
        self,
        kind: Kind,
        body: dict[str, Any],
        action: str,
        region: str | None,
        retry_busy: bool = True,
    ) -> Plan[dict[str, Any]]:
        """POST a copy so that a retry never makes a second one.

        Skytap takes no idempotency key, so the copy's name is the key: the ids that
        already carry the name are noted first, and after an ambiguous failure only a
        resource with that name and a new id counts as the one this POST made.
        """
        name = body["name"]
        existing = yield from self.list_resources(kind, name=name, region=region)
        before = {str(r.get("id")) for r in existing}

        def recover() -> Plan[Any]:
            matches = yield from self.list_resources(kind, name=name, region=region)
            fresh = [m for m in matches if str(m.get("id")) not in before]
            return max(fresh, key=_numeric_id) if fresh else None

        request = Request("POST", f"/{_COLLECTION[kind]}", action, body=body)
        data, _ = yield from self.call(request, recover=recover, retry_busy=retry_busy)
        data = check_resource(kind, data, action)
        made = describe(kind, str(data.get("id")), data)
        self.log.info("%s: made %s", action, made)
        if data.get("name") != name:
            self.log.warning(
                "%s: Skytap named the copy %r, not %r as asked; a retry cannot recognise "
                "a copy by a name it does not carry, so check the account's behaviour",
                action,
                data.get("name"),
                name,
            )
        return data

    def _live_body(self, body: dict[str, Any], live: bool, action: str) -> None:
        """Ask for a live clone, as Skytap's own scripts do; warn when told not to."""
        if not isinstance(live, bool):
            raise ValueError(f"live must be True or False, got {live!r}")
        body["live_copy"] = live
        if not live:
            self.log.warning(
                "%s: live=False: Skytap will SUSPEND the environment's running VMs for the "
                "copy, and they stay suspended until someone resumes them",
                action,
            )

    def copy_environment(
        self,
        environment_id: Any,
        *,
        name: str | None = None,
        vm_ids: Iterable[Any] | None = None,
        target_region: str | None = None,
        live: bool = True,
        retry_busy: bool = True,
    ) -> Plan[dict[str, Any]]:
        """Copy an environment (in its region, or to ``target_region``); answers the copy.

        Sends ``"live_copy": true`` unless ``live`` is False: without it Skytap suspends the
        running VMs for the copy (Skytap's help; its own save-and-copy script sends it).
        ``retry_busy`` false: a busy source raises :class:`SkytapBusyError` at once.
        """
        eid = check_id(environment_id, "environment_id")
        name = check_name(name) if name is not None else default_copy_name("environment", eid)
        body: dict[str, Any] = {"configuration_id": eid, "name": name}
        ids = check_vm_ids(vm_ids)
        if ids is not None:
            body["vm_ids"] = ids
        if target_region is not None:
            body["target_region"] = check_region(target_region, self.regions)
        action = f"copy environment {eid}" + (f" to {target_region}" if target_region else "")
        self._live_body(body, live, action)
        result = yield from self._create("environment", body, action, target_region, retry_busy)
        return result

    def save_as_template(
        self,
        environment_id: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        live: bool = True,
        retry_busy: bool = True,
    ) -> Plan[dict[str, Any]]:
        """Save an environment as a template; answers it.

        Sends ``"live_copy": true`` unless ``live`` is False (Skytap's own script
        ``SaveTemplate-CopyToRegion`` does): without it the running VMs are suspended.
        """
        eid = check_id(environment_id, "environment_id")
        name = check_name(name) if name is not None else default_copy_name("environment", eid)
        body: dict[str, Any] = {"configuration_id": eid, "name": name}
        if description is not None:
            body["description"] = check_description(description)
        action = f"save environment {eid} as a template"
        self._live_body(body, live, action)
        result = yield from self._create("template", body, action, None, retry_busy)
        return result

    def copy_template(
        self,
        template_id: Any,
        *,
        name: str | None = None,
        target_region: str | None = None,
        vm_ids: Iterable[Any] | None = None,
        retry_busy: bool = True,
    ) -> Plan[dict[str, Any]]:
        """Copy a template, in its region or to ``target_region``; answers the new template.

        A region copy sends ``"copy_to_region_vm_status_override": true``, as Skytap's own
        script does: a template saved from running VMs is refused without it.
        """
        tid = check_id(template_id, "template_id")
        name = check_name(name) if name is not None else default_copy_name("template", tid)
        body: dict[str, Any] = {"template_id": tid, "name": name}
        if target_region is not None:
            body["target_region"] = check_region(target_region, self.regions)
            body["copy_to_region_vm_status_override"] = True
        ids = check_vm_ids(vm_ids)
        if ids is not None:
            body["vm_ids"] = ids
        action = f"copy template {tid}" + (f" to {target_region}" if target_region else "")
        result = yield from self._create("template", body, action, target_region, retry_busy)
        return result

    # ---- changing and deleting

    def update(
        self,
        kind: Kind,
        resource_id: Any,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Plan[dict[str, Any]]:
        """Rename and/or describe an environment or template."""
        kind = check_kind(kind)
        rid = check_id(resource_id, f"{kind} id")
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = check_name(name)
        if description is not None:
            body["description"] = check_description(description)
        if not body:
            raise ValueError("update needs a name or a description")
        request = Request("PUT", f"/{_COLLECTION[kind]}/{rid}", f"update {kind} {rid}", body=body)
        data = yield from self._body(request)
        return data

    def set_runstate(self, environment_id: Any, runstate: str) -> Plan[dict[str, Any]]:
        """Ask for an environment's runstate to change (running, suspended, stopped, halted)."""
        eid = check_id(environment_id, "environment_id")
        if runstate not in RUNSTATES:
            raise ValueError(f"runstate must be one of {', '.join(RUNSTATES)}, got {runstate!r}")
        request = Request(
            "PUT",
            f"/configurations/{eid}",
            f"set environment {eid} {runstate}",
            body={"runstate": runstate},
        )
        data = yield from self._body(request)
        return data

    def delete(self, kind: Kind, resource_id: Any) -> Plan[bool]:
        """Ask Skytap to delete; True if it was there, False if it was already gone."""
        kind = check_kind(kind)
        rid = check_id(resource_id, f"{kind} id")
        try:
            yield from self.call(
                Request("DELETE", f"/{_COLLECTION[kind]}/{rid}", f"delete {kind} {rid}")
            )
        except SkytapNotFoundError:
            return False
        return True

    # ---- tags

    def _tags_path(self, kind: Kind, resource_id: Any) -> str:
        kind = check_kind(kind)
        return f"/v2/{_COLLECTION[kind]}/{check_id(resource_id, f'{kind} id')}/tags"

    def list_tags(self, kind: Kind, resource_id: Any) -> Plan[list[dict[str, Any]]]:
        path = self._tags_path(kind, resource_id)
        data = yield from self._body(Request("GET", f"{path}.json", f"list tags of {kind}"))
        return data if isinstance(data, list) else []

    def add_tags(
        self, kind: Kind, resource_id: Any, tags: Iterable[str]
    ) -> Plan[list[dict[str, Any]]]:
        """Add tags (Skytap ignores ones already there); answers the resource's tags."""
        values = [check_name(t, "tag") for t in tags]
        path = self._tags_path(kind, resource_id)
        body = [{"value": v} for v in values]
        data = yield from self._body(
            Request("PUT", f"{path}.json", f"tag {kind} {resource_id}", body=body)
        )
        return data if isinstance(data, list) else []

    def remove_tag(self, kind: Kind, resource_id: Any, tag_id: Any) -> Plan[None]:
        path = self._tags_path(kind, resource_id)
        tid = check_id(tag_id, "tag_id")
        try:
            yield from self.call(
                Request("DELETE", f"{path}/{tid}.json", f"remove tag {tid} of {kind}")
            )
        except SkytapNotFoundError:
            return None
        return None

    # ---- waiting

    def wait_until_ready(
        self,
        kind: Kind,
        resource_id: Any,
        *,
        timeout: float,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        log_every: float = PROGRESS_LONGEST,
        already: float = 0.0,
    ) -> Plan[dict[str, Any]]:
        """Poll until the resource is no longer busy; answers it.

        Backs off from ``poll_interval`` to ``max_poll_interval``; fails fast when its
        ``error`` fills in or it disappears; logs its state and the time spent on the
        :func:`progress_gap` schedule (every 10 s at first, at most ``log_every`` apart).

        :param already: seconds this wait had already lasted before this call (a trigger
            resumed after an outage or a restart), counted in the elapsed time and timeout
        """
        kind = check_kind(kind)
        rid = check_id(resource_id, f"{kind} id")

        def ready(resource: dict[str, Any] | None, missing: SkytapNotFoundError | None) -> bool:
            if resource is None:
                raise SkytapNotFoundError(
                    f"wait for {kind} {rid}",
                    404,
                    ["it disappeared while busy"],
                    missing.request_id if missing else None,
                )
            state = readiness(kind, resource)
            if state.state == "failed":
                raise SkytapResourceFailedError(
                    f"{describe(kind, rid, resource)} failed: {state.detail}"
                )
            return state.state == "ready"

        start = self.clock() - max(0.0, float(already))
        resource = yield from self._poll(
            kind,
            rid,
            ready,
            "busy",
            timeout,
            poll_interval,
            max_poll_interval,
            log_every,
            detail=lambda found: readiness(kind, found).detail if found else "gone",
            start=start,
        )
        assert resource is not None
        label = describe(kind, rid, resource)
        self.log.info("%s is ready after %s", label, ago(self.clock() - start))
        return resource

    def wait_until_gone(
        self, kind: Kind, resource_id: Any, *, timeout: float, poll_interval: float = 2.0
    ) -> Plan[None]:
        """Poll until the resource answers 404 (after a delete)."""
        kind = check_kind(kind)
        rid = check_id(resource_id, f"{kind} id")
        yield from self._poll(
            kind, rid, lambda resource, _: resource is None, "there", timeout, poll_interval, 30.0
        )

    def _poll(
        self,
        kind: Kind,
        rid: str,
        done: Callable[[dict[str, Any] | None, SkytapNotFoundError | None], bool],
        still: str,
        timeout: float,
        poll_interval: float,
        max_poll_interval: float,
        log_every: float = PROGRESS_LONGEST,
        *,
        detail: Callable[[dict[str, Any] | None], str] | None = None,
        start: float | None = None,
    ) -> Plan[dict[str, Any] | None]:
        """GET the resource with backoff until ``done(resource or None on 404, the 404)``.

        Raises :class:`SkytapWaitTimeoutError` at ``timeout`` (counted from ``start``); logs
        "still <still> after <elapsed> (<detail>); next check in <pause>" on the
        :func:`progress_gap` schedule. ``done`` may raise to fail fast.
        """
        start = self.clock() if start is None else start
        pauses = poll_pauses(poll_interval, max_poll_interval)
        progress = Progress(longest=log_every)
        while True:
            resource: dict[str, Any] | None
            missing: SkytapNotFoundError | None = None
            try:
                resource = yield from self.get(kind, rid)
            except SkytapNotFoundError as err:
                resource, missing = None, err
            if done(resource, missing):
                return resource
            spent = self.clock() - start
            label = describe(kind, rid, resource)
            if spent >= timeout:
                raise SkytapWaitTimeoutError(
                    f"{label} still {still} after {ago(spent)} (timeout {timeout:.0f} s)"
                )
            wanted = next(pauses)
            pause = min(wanted, max(0.0, timeout - spent))
            state = detail(resource) if detail else still
            if progress.due(spent, wanted):
                self.log.info(
                    "%s: still %s after %s (%s); next check in %s",
                    label,
                    still,
                    ago(spent),
                    state,
                    ago(pause),
                )
            yield from self._pause(progress, start, pause, f"{label}: still {still}", state)

    def _pause(
        self, progress: Progress, start: float, pause: float, what: str, state: str
    ) -> Plan[None]:
        """Sleep ``pause`` seconds between two polls; a progress line due meanwhile says
        ``what``, the elapsed time, ``state`` as of the last poll (and its age), and the next
        check. The one way every wait of the hooks pauses."""
        checked = now = self.clock() - start
        until, left = checked + pause, pause  # no line due: one Sleep of exactly ``pause``
        while left > 0:
            to_line = progress.next_at - now
            # A line due just before the next poll waits for it, and shows a fresh state.
            if to_line >= left - min(2.0, left / 10):
                yield Sleep(left)
                return
            yield Sleep(max(0.0, to_line))
            now = self.clock() - start
            left = until - now
            if progress.due(now):
                self.log.info(
                    "%s after %s (%s as of %s ago); next check in %s",
                    what,
                    ago(now),
                    state,
                    ago(now - checked),
                    ago(max(0.0, until - now)),
                )

    # ---- restores: an environment from a template, isolated, started, reachable

    def create_environment(
        self, template_id: Any, *, name: str | None = None, description: str | None = None
    ) -> Plan[dict[str, Any]]:
        """Make an environment from a template (in the template's region); answers it, busy.

        The name is the retry key, as for every copy: a POST whose answer was lost is looked
        up by name before it is sent again.
        """
        tid = check_id(template_id, "template_id")
        name = check_name(name) if name is not None else default_copy_name("template", tid)
        body: dict[str, Any] = {"template_id": tid, "name": name}
        if description is not None:
            body["description"] = check_description(description)
        action = f"create environment from template {tid}"
        result = yield from self._create("environment", body, action, None)
        return result

    def set_network_flags(
        self, environment_id: Any, *, outbound_traffic: bool, routable: bool
    ) -> Plan[dict[str, Any]]:
        """Set an environment's ``outbound_traffic`` and ``routable`` (``PUT /v2/...``)."""
        eid = check_id(environment_id, "environment_id")
        for what, value in (("outbound_traffic", outbound_traffic), ("routable", routable)):
            if not isinstance(value, bool):
                raise ValueError(f"{what} must be True or False, got {value!r}")
        request = Request(
            "PUT",
            f"/v2/configurations/{eid}",
            f"set network flags of environment {eid}",
            body={"outbound_traffic": outbound_traffic, "routable": routable},
        )
        data = yield from self._body(request)
        return check_resource("environment", data, request.action)

    def wait_until_running(
        self,
        environment_id: Any,
        *,
        timeout: float,
        poll_interval: float = 2.0,
        max_poll_interval: float = 10.0,
        log_every: float = PROGRESS_LONGEST,
    ) -> Plan[dict[str, Any]]:
        """Poll until the environment and every VM run; log their states on the
        :func:`progress_gap` schedule (at most ``log_every`` apart).

        Fails fast when ``error`` fills in, when it disappears, or when it settles in a
        runstate other than ``running``.
        """
        eid = check_id(environment_id, "environment_id")
        start = self.clock()
        pauses = poll_pauses(poll_interval, max_poll_interval)
        progress = Progress(longest=log_every)
        seen_busy = False
        while True:
            env = yield from self.get("environment", eid)
            state = readiness("environment", env)
            seen_busy = seen_busy or state.state == "busy"
            label = describe("environment", eid, env)
            if state.state == "failed":
                raise SkytapResourceFailedError(f"{label} failed to start: {state.detail}")
            runstate = str(env.get("runstate"))
            vms = vm_runstates(env)
            spent = self.clock() - start
            if runstate == "running" and all(v == "running" for v in vms.values()):
                self.log.info("%s is running after %s: %s", label, ago(spent), _states(vms))
                return env
            # Until it has been seen busy, a stopped environment may not show the change yet.
            if state.state == "ready" and runstate != "running" and (seen_busy or spent > 60):
                raise SkytapResourceFailedError(
                    f"{label} settled as {runstate!r}, not running: {_states(vms)}"
                )
            if spent >= timeout:
                raise SkytapWaitTimeoutError(
                    f"{label} not running after {ago(spent)} (timeout {timeout:.0f} s): "
                    f"runstate {runstate}; {_states(vms)}"
                )
            wanted = next(pauses)
            pause = min(wanted, max(0.0, timeout - spent))
            if progress.due(spent, wanted):
                self.log.info(
                    "%s: runstate %s after %s (%s); next check in %s",
                    label,
                    runstate,
                    ago(spent),
                    _states(vms),
                    ago(pause),
                )
            yield from self._pause(
                progress, start, pause, f"{label}: runstate {runstate}", _states(vms)
            )

    def publish_service(
        self, environment_id: Any, vm_id: Any, interface_id: Any, internal_port: int
    ) -> Plan[dict[str, Any]]:
        """Publish ``internal_port`` of a VM interface; answers the service (``external_ip``,
        ``external_port`` checked). One already there is reused, so a retry publishes once."""
        eid = check_id(environment_id, "environment_id")
        vid = check_id(vm_id, "vm_id")
        nic = check_id(interface_id, "interface_id")
        port = check_port(internal_port, "internal_port")
        action = f"publish port {port} of VM {vid} in environment {eid}"

        def existing() -> Plan[Any]:
            env = yield from self.get("environment", eid)
            return find_service(env, vid, nic, port)

        found = yield from existing()
        if found is None:
            request = Request(
                "POST",
                f"/v2/configurations/{eid}/vms/{vid}/interfaces/{nic}/services",
                action,
                body={"internal_port": port},
            )
            found, _ = yield from self.call(request, recover=existing)
        return check_service(found, action)

    def unpublish_service(
        self, environment_id: Any, vm_id: Any, interface_id: Any, service_id: Any
    ) -> Plan[bool]:
        """Remove a published service; False when it was already gone."""
        eid = check_id(environment_id, "environment_id")
        vid = check_id(vm_id, "vm_id")
        nic = check_id(interface_id, "interface_id")
        sid = check_id(service_id, "service_id")
        path = f"/v2/configurations/{eid}/vms/{vid}/interfaces/{nic}/services/{sid}"
        try:
            yield from self.call(Request("DELETE", path, f"unpublish service {sid} of VM {vid}"))
        except SkytapNotFoundError:
            return False
        return True


# --------------------------------------------------------------------------- restore rules

_REQUESTED = re.compile(r"requested at ([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z)")


def restore_description(template_id: str, requested_at: float) -> str:
    """The description of a restored environment: which template, and when it was asked for
    (so a retry that adopts the environment keeps the original request time)."""
    when = datetime.fromtimestamp(requested_at, tz=timezone.utc)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return f"airflow-skytap restore of template {template_id}, requested at {stamp}"


def restore_requested_at(environment: Mapping[str, Any]) -> float | None:
    """When the restore of ``environment`` was asked for (from its description), or None."""
    found = _REQUESTED.search(str(environment.get("description") or ""))
    if not found:
        return None
    try:
        stamp = datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def isolation_problems(
    environment: Mapping[str, Any], *, outbound_traffic: bool = False, routable: bool = False
) -> list[str]:
    """What keeps an environment from being isolated as asked, read from its own fields.

    ``outbound_traffic`` and ``routable`` must show the values asked for (a field Skytap does
    not show counts as a problem: nothing is assumed); no network may carry a VPN attachment
    (a VPN or private network connection) or a tunnel (inter-environment routing).
    """
    problems = []
    for what, wanted in (("outbound_traffic", outbound_traffic), ("routable", routable)):
        value = environment.get(what)
        if value is not wanted:
            problems.append(f"{what} is {value!r}, not {wanted!r}")
    for net in environment.get("networks") or []:
        if not isinstance(net, Mapping):
            continue
        label = f"network {net.get('id')} ({net.get('name')!r})"
        for key, what in (("vpn_attachments", "a VPN attachment"), ("tunnels", "a tunnel")):
            value = net.get(key)
            if value is None:
                continue
            if not isinstance(value, list):
                problems.append(f"{label} shows {key} = {value!r}, not a list")
            elif value:
                problems.append(f"{label} has {what} ({len(value)}): {_ids(value)}")
    return problems


def _ids(items: list[Any]) -> str:
    found = []
    for item in items:
        if isinstance(item, Mapping):
            vpn = item.get("vpn")
            found.append(str(item.get("id") or (vpn or {}).get("id") or "?"))
    return ", ".join(found) or "?"


def vm_runstates(environment: Mapping[str, Any]) -> dict[str, str]:
    """``{vm name: runstate}`` of an environment's VMs."""
    return {
        str(vm.get("name") or vm.get("id")): str(vm.get("runstate"))
        for vm in environment.get("vms") or []
        if isinstance(vm, Mapping)
    }


def _states(vms: Mapping[str, str]) -> str:
    if not vms:
        return "no VMs"
    return ", ".join(f"{name} {state}" for name, state in vms.items())


def find_service(
    environment: Mapping[str, Any], vm_id: str, interface_id: str, internal_port: int
) -> dict[str, Any] | None:
    """The service publishing ``internal_port`` on one VM interface, or None."""
    for vm in environment.get("vms") or []:
        if not isinstance(vm, Mapping) or str(vm.get("id")) != str(vm_id):
            continue
        for iface in vm.get("interfaces") or []:
            if not isinstance(iface, Mapping) or str(iface.get("id")) != str(interface_id):
                continue
            for svc in iface.get("services") or []:
                if isinstance(svc, Mapping) and str(svc.get("internal_port")) == str(internal_port):
                    return dict(svc)
    return None


def check_service(data: Any, action: str) -> dict[str, Any]:
    """A published service as Skytap answers it: ``id`` digits, ``external_ip`` an IP address,
    ``external_port`` a port; else :class:`SkytapResponseError` naming the field."""
    if not isinstance(data, Mapping):
        raise _shape_error(action, "the service", data, "a JSON object")
    sid = data.get("id")
    if not isinstance(sid, int | str) or isinstance(sid, bool) or not _ID.fullmatch(str(sid)):
        raise _shape_error(action, "id", sid, "a Skytap id (digits)")
    try:
        ip = check_ip(data.get("external_ip"), "external_ip")
        port = check_port(data.get("external_port"), "external_port")
    except ValueError as err:
        raise SkytapResponseError(action, None, [str(err)]) from None
    return {**data, "id": str(sid), "external_ip": ip, "external_port": port}


# --------------------------------------------------------------------------- helpers


def _query_safe(text: str) -> bool:
    """Whether a value can go in Skytap's ``query`` (comma separates its terms)."""
    return "," not in text and "*" not in text


def tag_values(resource: Mapping[str, Any]) -> set[str]:
    """The tag values a resource carries, lower-cased (Skytap's tags are case-insensitive)."""
    tags = resource.get("tags") or []
    return {
        str(t.get("value") if isinstance(t, Mapping) else t).lower() for t in tags if t is not None
    }


def _numeric_id(resource: Mapping[str, Any]) -> int:
    try:
        return int(resource.get("id", 0))
    except (TypeError, ValueError):
        return 0


def _content_range_total(header: str | None, action: str = "list") -> int | None:
    """The TOTAL of ``Content-Range: items START-END/TOTAL``; None when absent or ``*``."""
    if not header:
        return None
    if "/" not in header:
        raise _shape_error(action, "Content-Range", header, "items START-END/TOTAL")
    total = header.rsplit("/", 1)[1].strip()
    if total == "*":
        return None
    if not _ID.fullmatch(total):
        raise _shape_error(action, "Content-Range total", total, "a whole number")
    return int(total)
