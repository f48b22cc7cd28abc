"""FastAPI routes of the Skytap API stand-in, plus :func:`create_app` wiring it all."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .admin import admin_router
from .gateway import USER_SCOPE_KEY, Gateway
from .models import CONFIGURATION, TEMPLATE, Kind
from .simulator import Simulator
from .state import Forbidden, Invalid, NotFound, SimError, SimState
from .views import render

MAX_COUNT = 100
Endpoint = Callable[..., Awaitable[Any]]


def create_app(sim: Simulator) -> Gateway:
    """The ASGI application: gateway (auth, faults, log) around FastAPI routes."""
    api = FastAPI(title="Skytap simulator", docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(api)
    api.include_router(admin_router(sim))
    api.include_router(ApiRoutes(sim).router())
    return Gateway(api, sim)


def _install_error_handlers(api: FastAPI) -> None:
    async def sim_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SimError)
        if isinstance(exc, Invalid):
            return JSONResponse({"errors": exc.errors}, status_code=422)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [str(e.get("msg", e)) for e in exc.errors()]
        return JSONResponse({"errors": errors}, status_code=422)

    api.add_exception_handler(SimError, sim_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(RequestValidationError, validation_error)


async def json_body(request: Request) -> Any:
    """The request's JSON body ({} when empty) or a 422."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise Invalid([f"request body is not valid JSON: {exc}"]) from exc


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise Invalid(["request body must be a JSON object"])
    return body


def is_v2(request: Request) -> bool:
    """v2 by ``/v2/`` path prefix or ``Accept: application/vnd.skytap.api.v2+json``."""
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/v2/") or "vnd.skytap.api.v2" in accept


def base_url(request: Request) -> str:
    """Scheme and host the client used, without a trailing slash."""
    return str(request.base_url).rstrip("/")


def parse_query(raw: str) -> dict[str, str]:
    """``name:foo*,region:US-West`` -> ``{"name": "foo*", "region": "US-West"}``."""
    terms: dict[str, str] = {}
    errors = []
    for term in (t.strip() for t in raw.split(",")):
        if not term:
            continue
        key, sep, value = term.partition(":")
        if not sep or key not in ("name", "region"):
            errors.append(f"unsupported query term '{term}' (use name:VALUE or region:VALUE)")
        else:
            terms[key] = value
    if errors:
        raise Invalid(errors)
    return terms


def int_param(request: Request, name: str, default: int, minimum: int) -> int:
    """An integer query parameter of at least ``minimum``, else a 422."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise Invalid([f"{name} must be an integer"]) from exc
    if value < minimum:
        raise Invalid([f"{name} must be at least {minimum}"])
    return value


def content_range(offset: int, shown: int, total: int) -> str:
    """``items START-END/TOTAL`` (inclusive END), ``items */TOTAL`` when the page is empty."""
    if shown == 0:
        return f"items */{total}"
    return f"items {offset}-{offset + shown - 1}/{total}"


class ApiRoutes:
    """The Skytap routes; every one exists with and without the ``/v2`` prefix."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @property
    def state(self) -> SimState:
        """The account state."""
        return self.sim.state

    def router(self) -> APIRouter:
        """All routes for both API versions."""
        router = APIRouter()
        for prefix in ("", "/v2"):
            for kind in (CONFIGURATION, TEMPLATE):
                self._add_resource_routes(router, prefix, kind)
            router.add_api_route(f"{prefix}/company/quotas", self._quotas, methods=["GET"])
            services = f"{prefix}/configurations/{{rid}}/vms/{{vm_id}}/interfaces/{{iface_id}}"
            services += "/services"
            router.add_api_route(services, self._list_services, methods=["GET"])
            router.add_api_route(services, self._publish, methods=["POST"])
            router.add_api_route(services + "/{svc_id}", self._unpublish, methods=["DELETE"])
        return router

    async def _list_services(self, request: Request, rid: str, vm_id: str, iface_id: str) -> Any:
        return [s.model_dump() for s in self.state.services(rid, vm_id, iface_id)]

    async def _publish(self, request: Request, rid: str, vm_id: str, iface_id: str) -> Any:
        body = await json_object(request)
        return self.state.publish(rid, vm_id, iface_id, body).model_dump()

    async def _unpublish(
        self, request: Request, rid: str, vm_id: str, iface_id: str, svc_id: str
    ) -> Any:
        self.state.unpublish(rid, vm_id, iface_id, svc_id)
        return {}

    def _add_resource_routes(self, router: APIRouter, prefix: str, kind: Kind) -> None:
        base = f"{prefix}/{kind}s"
        routes: list[tuple[str, Endpoint, str]] = [
            (base, self._lister(kind), "GET"),
            (base, self._creator(kind), "POST"),
            (base + "/{rid}", self._getter(kind), "GET"),
            (base + "/{rid}", self._updater(kind), "PUT"),
            (base + "/{rid}", self._deleter(kind), "DELETE"),
            (base + "/{rid}/tags", self._tag_getter(kind), "GET"),
            (base + "/{rid}/tags", self._tag_adder(kind), "PUT"),
            (base + "/{rid}/tags/{tag_id}", self._tag_remover(kind), "DELETE"),
        ]
        for path, endpoint, method in routes:
            router.add_api_route(path, endpoint, methods=[method])

    def _view(self, request: Request, kind: str, rid: str) -> dict[str, Any]:
        url, v2 = base_url(request), is_v2(request)
        view: dict[str, Any] = self.state.read(lambda st: render(st, st.find(kind, rid), url, v2))
        return view

    async def _quotas(self, request: Request) -> Any:
        return self.state.quotas()

    def _getter(self, kind: Kind) -> Endpoint:
        async def get_resource(request: Request, rid: str) -> Any:
            return self._view(request, kind, rid)

        return get_resource

    def _lister(self, kind: Kind) -> Endpoint:
        async def list_resources(request: Request) -> Any:
            return self._list(request, kind)

        return list_resources

    def _list(self, request: Request, kind: Kind) -> JSONResponse:
        count = min(int_param(request, "count", MAX_COUNT, 1), MAX_COUNT)
        offset = int_param(request, "offset", 0, 0)
        scope = request.query_params.get("scope") or "me"
        if scope not in ("company", "me"):
            raise Invalid([f"scope '{scope}' is not supported (use company or me)"])
        if scope == "company" and not self.state.config.admin:
            raise Forbidden("scope=company is available to company administrators only")
        with_tags = request.query_params.get("tags") == "true"
        hide_tags = self.state.config.list_tags_on_request and not with_tags
        terms = parse_query(request.query_params.get("query", ""))
        owner = None if scope == "company" else request.scope.get(USER_SCOPE_KEY)
        url, v2 = base_url(request), is_v2(request)

        def page(st: SimState) -> tuple[int, list[dict[str, Any]]]:
            found = st.query(kind, owner=owner, name=terms.get("name"), region=terms.get("region"))
            shown = [render(st, r, url, v2) for r in found[offset : offset + count]]
            if hide_tags:  # Skytap may leave tags out of lists unless asked (tags=true)
                for item in shown:
                    item.pop("tags", None)
            return len(found), shown

        total, items = self.state.read(page)
        headers = {"Content-Range": content_range(offset, len(items), total)}
        if offset + len(items) < total and items:
            next_url = request.url.include_query_params(offset=offset + len(items), count=count)
            headers["Link"] = f'<{next_url}>; rel="next"'
        return JSONResponse(items, headers=headers)

    def _creator(self, kind: Kind) -> Endpoint:
        async def create_resource(request: Request) -> Any:
            body = await json_object(request)
            owner = request.scope.get(USER_SCOPE_KEY) or "demo"
            rid = self.state.start_copy(
                kind, body, owner=owner, fail_for=self.sim.faults.copy_failure
            )
            return self._view(request, kind, rid)

        return create_resource

    def _updater(self, kind: Kind) -> Endpoint:
        async def update_resource(request: Request, rid: str) -> Any:
            self.state.update(kind, rid, await json_object(request))
            return self._view(request, kind, rid)

        return update_resource

    def _deleter(self, kind: Kind) -> Endpoint:
        async def delete_resource(request: Request, rid: str) -> Any:
            self.state.delete(kind, rid)
            try:
                return self._view(request, kind, rid)
            except NotFound:
                return {}

        return delete_resource

    def _tag_getter(self, kind: Kind) -> Endpoint:
        async def get_tags(request: Request, rid: str) -> Any:
            return [t.model_dump() for t in self.state.tags(kind, rid)]

        return get_tags

    def _tag_adder(self, kind: Kind) -> Endpoint:
        async def add_tags(request: Request, rid: str) -> Any:
            values = tag_values(await json_body(request))
            return [t.model_dump() for t in self.state.add_tags(kind, rid, values)]

        return add_tags

    def _tag_remover(self, kind: Kind) -> Endpoint:
        async def remove_tag(request: Request, rid: str, tag_id: str) -> Any:
            self.state.remove_tag(kind, rid, tag_id)
            return [t.model_dump() for t in self.state.tags(kind, rid)]

        return remove_tag


def tag_values(body: Any) -> list[str]:
    """Values from ``[{"value": "x"}, ...]``, else a 422."""
    if not isinstance(body, list):
        raise Invalid(['tags body must be a JSON list like [{"value": "x"}]'])
    values = []
    for item in body:
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise Invalid([f"tag {json.dumps(item)} needs a non-empty string value"])
        values.append(value.strip())
    return values
