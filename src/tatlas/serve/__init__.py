"""``tatlas serve``: an OpenAI-compatible HTTP server over the library's own jobs.

- :mod:`.config`: what it serves (``NAME=SPEC``), its limits and batching, frozen;
- :mod:`.models`: loading each model with the engine that batches its requests;
- :mod:`.engine`: continuous batching for the text decoders (:mod:`tatlas.generate.continuous`);
- :mod:`.workers`: micro-batching for Whisper (windows of concurrent files decoded together) and CLIP;
- :mod:`.app`, :mod:`.audio`, :mod:`.chat`, :mod:`.embeddings`: the routes, as OpenAI's API defines
  them, and the web page at ``/`` (``static/``, no CDN).

Needs the ``serve`` extra (``pip install 'transformer-atlas[serve]'``: fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

from .config import Batching, Limits, ModelSpec, ServeConfig

__all__ = ["Batching", "Limits", "ModelSpec", "ServeConfig", "create_app", "serve"]


def create_app(config: ServeConfig, models=None):
    from .app import create_app as _create

    return _create(config, models)


def serve(config: ServeConfig, *, log_level: str = "info") -> None:
    """Load the models, then serve until SIGINT/SIGTERM; on either, stop taking connections, finish
    the requests in flight, close the engines and return."""
    import uvicorn

    from .models import load_models

    models = load_models(config.models, config.limits, config.batching)  # fail before binding the port
    uvicorn.run(create_app(config, models), host=config.host, port=config.port, log_level=log_level,
                timeout_graceful_shutdown=120)
