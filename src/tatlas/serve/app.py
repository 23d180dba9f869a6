"""The HTTP application: OpenAI's error shape, Bearer keys, the body-size limit, ``/health``,
``/v1/models``, the web page, and the routes of :mod:`.audio`, :mod:`.chat` and :mod:`.embeddings`.

Every error is ``{"error": {"message", "type", "param", "code"}}`` with one line of message: 400 bad
input (malformed JSON or multipart included), 401 a missing or wrong key, 404 an unknown model,
413 too large, 429 a full queue (with ``Retry-After``), 500 a defect (the server goes on).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .audio import router as audio_router
from .chat import router as chat_router
from .config import ServeConfig
from .embeddings import router as embed_router
from .http import ApiError, Gate, error_response, log
from .models import ServedModel, load_models

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

    for router in (audio_router, chat_router, embed_router):
        app.include_router(router)
    app.add_middleware(Gate, limit=config.limits.max_upload_bytes, key=config.api_key)
    return app
