"""``POST /v1/embeddings`` as OpenAI's API defines it (``input``: a string or a list of strings;
``encoding_format`` float | base64), with CLIP's text tower; unit-norm embeddings. Extensions:

- an input that is an image ``data:`` URL is embedded by the image tower (same space as the texts);
- ``POST /v1/images/classifications`` ``{"model", "image": data URL, "labels": [...]}``: CLIP's
  zero-shot classification (prompt-ensembled labels, :func:`~tatlas.models.clip.zeroshot.build_classifier`),
  the labels ranked by probability.

Inputs of concurrent requests are micro-batched (:class:`~.workers.EmbedWorker`)."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
from fastapi import APIRouter, Request

from .http import ApiError, get_model, json_body, submit, wait_or_leave
from .chat import data_url

router = APIRouter()
MAX_INPUTS = 2048  # as OpenAI's


def _image(url: str, param: str):
    from PIL import Image, UnidentifiedImageError

    _, data = data_url(url, param)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ApiError(400, f"{param}: not a readable image ({e})", param=param) from None
    return image


def _inputs(value) -> list[tuple[str, object]]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise ApiError(400, "'input': expected a string or a non-empty list of strings (token arrays are not "
                            f"taken), got {type(value).__name__}", param="input")
    if len(items) > MAX_INPUTS:
        raise ApiError(400, f"'input': expected at most {MAX_INPUTS} inputs, got {len(items)}", param="input")
    out = []
    for i, x in enumerate(items):
        if x.startswith("data:"):
            out.append(("image", _image(x, f"input[{i}]")))
        elif not x:
            raise ApiError(400, f"input[{i}]: expected a non-empty string", param="input")
        else:
            out.append(("text", x))
    return out


@router.post("/v1/embeddings")
async def embeddings(request: Request):
    body = await json_body(request)
    served = get_model(request, body.get("model"), "embedding")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"'encoding_format': expected float or base64, got {fmt!r}", param="encoding_format")
    if body.get("dimensions") is not None and body["dimensions"] != served.model.config.embed_dim:
        raise ApiError(400, f"'dimensions': model {served.name!r} gives {served.model.config.embed_dim}, got "
                            f"{body['dimensions']!r}", param="dimensions")
    items = await asyncio.to_thread(_inputs, body.get("input"))
    futures = [submit(served.engine, item) for item in items]
    try:
        results = [await wait_or_leave(request, f) for f in futures]
    finally:
        for f in futures:
            f.cancel()
    data = []
    for i, (vector, _) in enumerate(results):
        array = vector.numpy().astype(np.float32)
        value = base64.b64encode(array.tobytes()).decode() if fmt == "base64" else array.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(n for _, n in results)
    return {"object": "list", "data": data, "model": served.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@router.post("/v1/images/classifications")
async def classifications(request: Request):
    body = await json_body(request)
    served = get_model(request, body.get("model"), "embedding")
    labels = body.get("labels")
    if (not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels)
            or len(labels) > 256):
        raise ApiError(400, f"'labels': expected a list of 1 to 256 non-empty strings, got {labels!r}", param="labels")
    labels = [x.strip() for x in labels]
    if len(set(labels)) != len(labels):
        raise ApiError(400, f"'labels': expected distinct labels, got {labels!r}", param="labels")
    image = await asyncio.to_thread(_image, body.get("image"), "image")
    probs = await wait_or_leave(request, submit(served.engine, ("zero-shot", (image, labels))))
    ranked = sorted(zip(labels, probs, strict=True), key=lambda x: -x[1])
    return {"object": "list", "model": served.name, "data": [{"label": lab, "score": p} for lab, p in ranked]}
