"""``tatlas serve``: the OpenAI-compatible HTTP server (:mod:`tatlas.serve`). Thin: arguments ->
:class:`~tatlas.serve.ServeConfig` -> :func:`~tatlas.serve.serve` (imported when the command runs,
so ``tatlas --help`` loads neither torch nor the web stack)."""

from __future__ import annotations

import typer

from tatlas.cli.common import fail, freeze_imports


def serve_cmd(
    model: list[str] = typer.Option(..., "--model", help="NAME=SPEC, repeatable: whisper=tiny.en, chat=smollm2, "
                                    "embed=PATH (a CLIP checkpoint or folder), vlm=PATH (llava / internvl folder)",
                                    show_default=False),
    host: str = typer.Option("127.0.0.1", "--host", help="the interface to listen on (0.0.0.0: all, only if asked)"),
    port: int = typer.Option(8000, "--port"),
    api_key: str = typer.Option(None, "--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (default: "
                                "$TATLAS_API_KEY; none: no key)"),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="largest request body (413 above)"),
    max_audio_seconds: float = typer.Option(600.0, "--max-audio-seconds", help="longest audio upload (413 above)"),
    max_tokens: int = typer.Option(512, "--max-tokens", help="cap (and default) of a chat request's max_tokens"),
    max_queue: int = typer.Option(64, "--max-queue", help="requests waiting or running per model (429 above)"),
    batch_rows: int = typer.Option(16, "--batch-rows", help="chat sequences decoded together"),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="--no-batching: one request at a time "
                                  "per model (a baseline)"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's: critical | error | warning | info | debug"),
) -> None:
    """Serve models over HTTP with OpenAI's API: /v1/audio/transcriptions, /v1/audio/translations,
    /v1/chat/completions (streaming; images as data URLs), /v1/embeddings, /v1/models, /health,
    and a web page at /. Continuous batching for chat; Whisper and CLIP requests micro-batched.
    SIGTERM finishes the requests in flight, then exits."""
    from tatlas.serve import Batching, Limits, ModelSpec, ServeConfig, serve

    freeze_imports()
    if log_level not in ("critical", "error", "warning", "info", "debug"):
        fail(f"--log-level {log_level!r}: expected critical, error, warning, info or debug")
    if max_upload_mb <= 0:
        fail(f"--max-upload-mb: expected > 0, got {max_upload_mb:g}")
    config = ServeConfig(
        models=tuple(ModelSpec.parse(m) for m in model), host=host, port=port,
        api_key=ServeConfig.key_from_env(api_key),
        limits=Limits(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_audio_seconds=max_audio_seconds,
                      max_tokens=max_tokens, max_queue=max_queue),
        batching=Batching(enabled=batching, chat_rows=batch_rows),
    )
    serve(config, log_level=log_level)
