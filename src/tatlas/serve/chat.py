"""``POST /v1/chat/completions`` as OpenAI's API defines it: ``messages`` whose content is text or
a list of ``text`` and ``image_url`` parts (``data:`` URLs; the server fetches nothing), ``stream``
(server-sent events, ``stream_options.include_usage``), ``temperature``, ``top_p``, ``max_tokens``
(or ``max_completion_tokens``), ``stop``, ``seed``. The prompt is built by
:func:`~tatlas.jobs.llm.encode_request` (the model's chat template, image blocks in the first user
turn) and decoded by the model's :class:`~.engine.ChatEngine`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import tempfile
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .http import ApiError, get_model, json_body, submit
from .engine import ChatJob

router = APIRouter()
ROLES = ("system", "developer", "user", "assistant")
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
               "image/bmp": ".bmp"}


def data_url(url: Any, param: str) -> tuple[str, bytes]:
    """``data:image/png;base64,...`` -> (media type, bytes); anything else is one 400 line."""
    if not isinstance(url, str) or not url.startswith("data:"):
        shown = url[:40] + "…" if isinstance(url, str) and len(url) > 40 else url
        raise ApiError(400, f"{param}: expected a data: URL (data:image/png;base64,...; the server fetches "
                            f"nothing), got {shown!r}", param=param)
    head, _, payload = url[5:].partition(",")
    media, *flags = head.split(";")
    if "base64" not in flags or media not in IMAGE_TYPES:
        raise ApiError(400, f"{param}: expected a base64 data URL of {', '.join(IMAGE_TYPES)}, got "
                            f"'data:{head}'", param=param)
    try:
        return media, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param}: the data URL's base64 does not decode", param=param) from None


def parse_messages(messages: Any) -> tuple[list[dict[str, str]], list[tuple[str, bytes]]]:
    """OpenAI messages -> the text conversation and the images, in order."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, f"'messages': expected a non-empty list, got {type(messages).__name__}", param="messages")
    chat, images = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            got = m.get("role") if isinstance(m, dict) else type(m).__name__
            raise ApiError(400, f"{where}.role: expected one of {', '.join(ROLES)}, got {got!r}", param="messages")
        content = m.get("content")
        if isinstance(content, str) or (content is None and m["role"] == "assistant"):
            text = content or ""
        elif isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind == "image_url":
                    url = part.get("image_url")
                    images.append(data_url(url.get("url") if isinstance(url, dict) else url,
                                           f"{where}.content[{j}].image_url.url"))
                else:
                    raise ApiError(400, f"{where}.content[{j}]: expected a text or image_url part, got {kind!r}",
                                   param="messages")
            text = "\n".join(texts)
        else:
            raise ApiError(400, f"{where}.content: expected a string or a list of parts, got "
                                f"{type(content).__name__}", param="messages")
        chat.append({"role": "system" if m["role"] == "developer" else m["role"], "content": text})
    return chat, images


def _number(body: dict, name: str, lo: float, hi: float, default: float | None, *, integer: bool = False):
    value = body.get(name)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
        raise ApiError(400, f"'{name}': expected {'an integer' if integer else 'a number'} in [{lo:g}, {hi:g}], "
                            f"got {value!r}", param=name)
    return value


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'stop': expected a non-empty string or a list of up to 4, got {value!r}", param="stop")
    return tuple(stops)


def _encode(tm, chat, images):
    """The prompt's ids and image inputs (images through temporary files, as the readers take paths)."""
    from ..generate import GenerationConfig
    from ..jobs.llm import encode_request

    paths = []
    try:
        for media, data in images:
            with tempfile.NamedTemporaryFile(suffix=IMAGE_TYPES[media], delete=False) as f:
                f.write(data)
            paths.append(f.name)
        try:
            return encode_request(tm, "", GenerationConfig(max_new_tokens=1), images=paths, chat=chat)
        except (ValueError, OSError) as e:
            message = str(e)
            for k, p in enumerate(paths):
                message = message.replace(p, f"image {k + 1}")
            raise ApiError(400, message) from None
    finally:
        for p in paths:
            os.unlink(p)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    body = await json_body(request)
    served = get_model(request, body.get("model"), "chat")
    cap = request.app.state.config.limits.max_tokens
    chat, images = parse_messages(body.get("messages"))
    if _number(body, "n", 1, 1, 1, integer=True) != 1:
        raise ApiError(400, "'n': only 1 is served", param="n")
    temperature = _number(body, "temperature", 0, 2, 1.0)
    top_p = _number(body, "top_p", 0, 1, None)
    seed = _number(body, "seed", -(2**63), 2**63 - 1, None, integer=True)
    max_tokens = _number(body, "max_completion_tokens", 1, cap, None, integer=True)
    max_tokens = _number(body, "max_tokens", 1, cap, max_tokens, integer=True)
    stops = _stops(body.get("stop"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream': expected true or false, got {stream!r}", param="stream")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else False
    tm, engine = served.model, served.engine
    ids, kwargs, config = await asyncio.to_thread(_encode, tm, chat, images)
    room = engine.context + 1 - len(ids)
    if max_tokens is None:
        max_tokens = min(cap, room)
    if room < 1 or max_tokens > room:
        raise ApiError(400, f"prompt of {len(ids)} tokens + {max_tokens or 1} new tokens exceeds the server's context "
                            f"of {engine.context + 1} tokens", param="messages")
    loop, events = asyncio.get_running_loop(), asyncio.Queue()

    def emit(event: dict) -> None:  # on the engine's thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the event loop is gone: nobody is listening
            job.cancel()

    job = ChatJob(ids=ids, max_tokens=max_tokens, emit=emit, decode=tm.tokenizer.decode, kwargs=kwargs,
                  temperature=temperature if top_p != 0 else 0.0, top_p=top_p or None, seed=seed,
                  stop_tokens=frozenset(config.stop_tokens), stops=stops)
    submit(engine, job)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.name}
    if stream:
        return StreamingResponse(_sse(job, events, head, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    return await _whole(request, job, events, head)


def _usage(done: dict) -> dict[str, int]:
    p, c = done["prompt_tokens"], done["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _whole(request: Request, job: ChatJob, events: asyncio.Queue, head: dict):
    pieces = []
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=0.25)
            except TimeoutError:
                if await request.is_disconnected():
                    raise asyncio.CancelledError() from None
                continue
            if "error" in event:
                raise ApiError(500, f"generation failed: {event['error']}")
            if "text" in event:
                pieces.append(event["text"])
            if "done" in event:
                message = {"role": "assistant", "content": "".join(pieces)}
                return JSONResponse({**head, "object": "chat.completion", "choices": [
                    {"index": 0, "message": message, "finish_reason": event["done"], "logprobs": None}],
                    "usage": _usage(event)})
    finally:
        job.cancel()  # finished: no-op; client gone: its row is freed before the next step


async def _sse(job: ChatJob, events: asyncio.Queue, head: dict, include_usage: bool):
    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await events.get()
            if "error" in event:
                error = {"message": f"generation failed: {event['error']}", "type": "server_error", "param": None,
                         "code": None}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            if event.get("text"):
                yield chunk({"content": event["text"]})
            if "done" in event:
                yield chunk({}, event["done"])
                if include_usage:
                    body = {**head, "object": "chat.completion.chunk", "choices": [], "usage": _usage(event)}
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
                return
    finally:
        job.cancel()
