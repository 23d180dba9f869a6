"""The HTTP application: OpenAI's error shape, Bearer keys, the body-size limit, ``/health``,
``/v1/models``, the web page, and the routes of :mod:`.audio`, :mod:`.chat` and :mod:`.embeddings`.

Every error is ``{"error": {"message", "type", "param", "code"}}`` with one line of message: 400 bad
input (malformed JSON or multipart included), 401 a missing or wrong key, 404 an unknown model,
413 too large, 429 a full queue (with ``Retry-After``), 500 a defect (the server goes on).
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Future
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import ServeConfig
from .engine import QueueFull
from .models import ServedModel, load_models

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


def create_app(config: ServeConfig, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The server's application. ``models``: already loaded (tests); else loaded at start-up, and
    either way closed at shutdown after the requests in flight finish."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.models = models if models is not None else load_models(config.models, config.limits,
                                                                          config.batching)
        try:
            yield
        finally:
            for m in app.state.models.values():
                await asyncio.to_thread(m.close, 60)

    app = FastAPI(title="tatlas serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_response(e.status, e.message, e.param, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        return error_response(400, "; ".join(str(x.get("msg")) for x in e.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def _defect(request: Request, e: Exception):
        log.exception("request failed: %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(e).__name__}: {' '.join(str(e).split())}")

    @app.get("/health")
    async def health(request: Request):
        return {"status": "ok", "models": {n: {"kind": m.kind, **m.engine.stats()}
                                           for n, m in request.app.state.models.items()}}

    @app.get("/v1/models")
    async def list_models(request: Request):
        return {"object": "list", "data": [m.info() for m in request.app.state.models.values()]}

    @app.get("/v1/models/{name}")
    async def one_model(request: Request, name: str):
        model = request.app.state.models.get(name)
        if model is None:
            raise ApiError(404, f"model {name!r} is not served here; served: {', '.join(request.app.state.models)}")
        return model.info()

    static = files("tatlas.serve") / "static"

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    async def asset(name: str):
        kinds = {".js": "text/javascript", ".css": "text/css"}
        suffix = name[name.rfind("."):] if "." in name else ""
        item = static / name
        if "/" in name or suffix not in kinds or not item.is_file():
            raise ApiError(404, f"no such file: /static/{name}")
        return Response(item.read_text(encoding="utf-8"), media_type=kinds[suffix])

    from .audio import router as audio_router
    from .chat import router as chat_router
    from .embeddings import router as embed_router

    for router in (audio_router, chat_router, embed_router):
        app.include_router(router)
    app.add_middleware(Gate, limit=config.limits.max_upload_bytes, key=config.api_key)
    return app
