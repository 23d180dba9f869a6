"""What every route of the server shares: OpenAI's error shape (:class:`ApiError`,
:func:`error_response`), the gate in front of the routes (API key, body size), model lookup, JSON
bodies, and submitting work to an engine (a full queue is 429; a client that leaves cancels it)."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Future
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from .engine import QueueFull
from .models import ServedModel

log = logging.getLogger("tatlas.serve")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, " ".join(message.split()), param, headers


def error_response(status: int, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


class Gate:
    """ASGI middleware in front of every route: the API key on ``/v1/*`` (401), and the body size
    (413: by its Content-Length at once, else as it streams in, before any handler has it whole)."""

    def __init__(self, app, limit: int, key: str | None) -> None:
        self.app, self.limit, self.key = app, limit, key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        if self.key is not None and scope["path"].startswith("/v1/") and \
                headers.get(b"authorization", b"") != f"Bearer {self.key}".encode():
            return await error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                        headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        message = f"request body larger than the server's limit of {self.limit} bytes"
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await error_response(413, message + f" (Content-Length {int(length)})")(scope, receive, send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        async def tracked(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await error_response(413, message)(scope, receive, send)


def get_model(request: Request, name: Any, kind: str) -> ServedModel:
    served: dict[str, ServedModel] = request.app.state.models
    fitting = sorted(n for n, m in served.items() if m.kind == kind)
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"'model': expected the name of a {kind} model ({', '.join(fitting) or 'none served'}), "
                            f"got {name!r}", param="model")
    model = served.get(name)
    if model is None or model.kind != kind:
        what = f"is a {model.kind} model" if model is not None else "is not served here"
        raise ApiError(404, f"model {name!r} {what}; the {kind} models are {', '.join(fitting) or 'none'}",
                       param="model")
    return model


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"malformed JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"expected a JSON object as the body, got {type(body).__name__}")
    return body


def submit(engine, item) -> Any:
    """``engine.submit`` with a full queue as 429."""
    try:
        return engine.submit(item)
    except QueueFull as e:
        raise ApiError(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None


async def wait_or_leave(request: Request, future: Future) -> Any:
    """The future's result; a client that disconnects first cancels it (its slot is freed)."""
    wrapped = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({wrapped}, timeout=0.25)
        if done:
            return wrapped.result()
        if await request.is_disconnected():
            future.cancel()
            raise asyncio.CancelledError()
