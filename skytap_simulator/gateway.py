"""The ASGI layer in front of the routes: request ids, ``.json`` suffixes, auth, rate limit,
faults, the request log and one log line per request (never the Authorization header)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import ui
from .faults import Decision
from .simulator import Simulator

log = logging.getLogger("skytap_simulator")
USER_SCOPE_KEY = "skytap_user"


class DropConnection(Exception):
    """Raised after a partial response so the server closes the socket mid-body."""


class _DropFilter(logging.Filter):
    """Keep uvicorn from logging our deliberate drops as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DropConnection)


logging.getLogger("uvicorn.error").addFilter(_DropFilter())


@dataclass
class Reply:
    """A complete response held in memory."""

    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> Reply:
        """A JSON reply with extra headers (``Retry_After`` -> ``retry-after``)."""
        extra = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
        content = [(b"content-type", b"application/json")]
        return cls(status, json.dumps(payload).encode(), content + extra)


@dataclass
class Ctx:
    """What the log needs about one request."""

    request_id: str
    method: str
    path: str
    started: float
    user: str | None = None
    fault: str | None = None
    entry: dict[str, Any] | None = None


def strip_json_suffix(path: str) -> str:
    """``/v2/configurations/1.json`` -> ``/v2/configurations/1``."""
    return path[: -len(".json")] if path.endswith(".json") else path


def error_reply(status: int, retry_after_s: int) -> Reply:
    """The body of an injected error status."""
    if status == 429:
        return Reply.json(429, {"error": "Too many requests"}, Retry_After=str(retry_after_s))
    if status == 423:
        return Reply.json(423, {"error": "Resource is busy; retry shortly"})
    if status == 422:
        return Reply.json(422, {"errors": ["The resource is busy; retry shortly"]})
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return Reply.json(status, {"error": phrase})


def basic_credentials(scope: Scope) -> tuple[str, str] | None:
    """``(username, token)`` from an HTTP Basic Authorization header, if well formed."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, encoded = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, sep, token = decoded.partition(":")
            return (user, token) if sep else None
    return None


class Gateway:
    """Wraps the FastAPI app; see the module docstring."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = Ctx(uuid.uuid4().hex, scope["method"], scope["path"], time.time())
        page = ui.page_request(scope)
        if page is not None:  # a browser opening a resource's web page (skytap_simulator.ui)
            await self._send(send, self._page(scope, *page), ctx)
            return
        clean = strip_json_suffix(scope["path"])
        scope = {**scope, "path": clean, "raw_path": clean.encode()}
        if clean == "/_sim" or clean.startswith("/_sim/"):
            reply = await self._call_app(scope, receive)
            await self._send(send, reply, ctx)
            return
        # Read the body now: a delayed request is still carried out if the client gave up.
        await self._api(scope, _replay(await _read_body(receive)), send, ctx)

    def _page(self, scope: Scope, kind: str, rid: str) -> Reply:
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        base = f"{scope.get('scheme', 'http')}://{host}" if host else ""
        status, text = ui.render_page(self.sim.state, kind, rid, base)
        return Reply(status, text.encode(), [(b"content-type", b"text/html; charset=utf-8")])

    async def _api(self, scope: Scope, receive: Receive, send: Send, ctx: Ctx) -> None:
        ctx.entry = {
            "t": ctx.started,
            "method": ctx.method,
            "path": ctx.path,
            "status": None,
            "request_id": ctx.request_id,
            "user": None,
            "fault": None,
        }
        self.sim.requests.add(ctx.entry)  # logged on arrival: a delayed request shows at once
        reply = self._admission(scope, ctx)
        if reply is not None:
            await self._send(send, reply, ctx)
            return
        scope[USER_SCOPE_KEY] = ctx.user
        decision = self.sim.faults.decide(scope["method"], scope["path"])
        ctx.fault = decision.label
        self.sim.requests.update(ctx.entry, user=ctx.user, fault=ctx.fault)
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        reply = await self._faulted(decision, scope, receive)
        if decision.action == "drop":
            await self._drop(send, reply, ctx)
            return
        await self._send(send, reply, ctx)

    def _admission(self, scope: Scope, ctx: Ctx) -> Reply | None:
        """401 for bad credentials, 429 past the rate limit; None to go on."""
        creds = basic_credentials(scope)
        if creds is None or not self.sim.state.authenticate(*creds):
            return Reply.json(
                401,
                {"error": "Authentication required: HTTP Basic with username and API token"},
                WWW_Authenticate='Basic realm="Skytap"',
            )
        ctx.user = creds[0]
        wait = self.sim.limiter.check(creds[0], self.sim.state.config.rate_limit_per_s)
        if wait is not None:
            ctx.fault = "rate_limit"
            return Reply.json(429, {"error": "Too many requests"}, Retry_After=str(wait))
        return None

    async def _faulted(self, decision: Decision, scope: Scope, receive: Receive) -> Reply:
        """Carry out the request (or not) as the decision says; return what to answer."""
        if decision.action == "none":
            return await self._call_app(scope, receive)
        if decision.action == "delay":
            if not decision.after:
                await asyncio.sleep(decision.seconds)
            reply = await self._call_app(scope, receive)
            if decision.after:
                await asyncio.sleep(decision.seconds)
            return reply
        if decision.after:
            reply = await self._call_app(scope, receive)
        else:
            reply = Reply.json(200, {"id": "0", "note": "connection will be dropped"})
        if decision.action == "drop":
            return reply
        return error_reply(decision.status, self.sim.faults.retry_after_s)

    async def _call_app(self, scope: Scope, receive: Receive) -> Reply:
        """Run the FastAPI app and capture its whole response."""
        reply = Reply(500)
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                reply.status = message["status"]
                reply.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, capture)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            return Reply.json(500, {"error": "Internal Server Error"})
        reply.body = b"".join(chunks)
        return reply

    async def _send(self, send: Send, reply: Reply, ctx: Ctx) -> None:
        headers = [(k, v) for k, v in reply.headers if k.lower() != b"content-length"]
        headers += [
            (b"content-length", str(len(reply.body)).encode()),
            (b"x-request-id", ctx.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        self._record(ctx, reply.status)

    async def _drop(self, send: Send, reply: Reply, ctx: Ctx) -> None:
        """Send the headers and part of the body, then break the connection."""
        body = reply.body or b"{}"
        headers = [(k, v) for k, v in reply.headers if k.lower() != b"content-length"]
        headers += [
            (b"content-length", str(len(body) + 64).encode()),
            (b"x-request-id", ctx.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        self._record(ctx, None)
        raise DropConnection(ctx.request_id)

    def _record(self, ctx: Ctx, status: int | None) -> None:
        if ctx.entry is not None:
            self.sim.requests.update(ctx.entry, status=status, user=ctx.user, fault=ctx.fault)
        log.info(
            "%s %s %s rid=%s user=%s fault=%s",
            ctx.method,
            ctx.path,
            status if status is not None else "DROPPED",
            ctx.request_id,
            ctx.user or "-",
            ctx.fault or "-",
        )


async def _read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    """A ``receive`` that hands the app the body read earlier, then reports a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
