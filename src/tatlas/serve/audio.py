"""``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` as OpenAI's API defines them:
a multipart upload (``file``, ``model``, ``language``, ``prompt``, ``temperature``,
``response_format`` json | text | srt | vtt | verbose_json, ``timestamp_granularities[]`` word |
segment), transcribed by :func:`~tatlas.jobs.whisper.transcribe_batch` with the windows of
concurrent requests decoded together (:class:`~.workers.WhisperWorker`)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import UploadFile

from .http import ApiError, get_model, submit, wait_or_leave

router = APIRouter()
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai-whisper's temperatures


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request):
    return await _audio(request, "transcribe")


@router.post("/v1/audio/translations")
async def translations(request: Request):
    return await _audio(request, "translate")


def _decode_audio(data: bytes, name: str, max_seconds: float):
    """Uploaded bytes -> (16 kHz mono float32 samples, seconds); unreadable is 400, too long 413."""
    from ..models.whisper.audio import AudioError, audio_duration, load_audio

    suffix = os.path.splitext(name)[1][:16]
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        try:
            seconds = audio_duration(f.name)
            if seconds > max_seconds:
                raise ApiError(413, f"audio of {seconds:.1f} s is longer than the server's limit of {max_seconds:g} s",
                               param="file")
            samples = load_audio(f.name)
        except AudioError as e:
            message = str(e).replace(f.name, repr(name))
            raise ApiError(400, f"'file': {message} (expected WAV, FLAC, OGG or MP3)", param="file") from None
    return samples, seconds


def _temperatures(value: Any) -> tuple[float, ...]:
    try:
        t = float(value) if value not in (None, "") else 0.0
    except ValueError:
        raise ApiError(400, f"'temperature': expected a number in [0, 1], got {value!r}", param="temperature") from None
    if not 0 <= t <= 1:
        raise ApiError(400, f"'temperature': expected a number in [0, 1], got {t:g}", param="temperature")
    return FALLBACK if t == 0 else (t, *(x for x in FALLBACK if x > t))  # 0: fall back as OpenAI does


def _language(value: Any, served, task: str) -> str | None:
    from ..models.whisper.languages import LANGUAGES, language_code

    if task == "translate" and not served.multilingual:
        raise ApiError(400, f"model {served.name!r} is English-only: translation needs a multilingual model",
                       param="model")
    if value in (None, ""):
        return None
    try:
        code = language_code(str(value))
    except ValueError:
        raise ApiError(400, f"'language': expected an ISO-639-1 code such as en or de, got {value!r}",
                       param="language") from None
    if not served.multilingual and code != "en":
        raise ApiError(400, f"'language': model {served.name!r} is English-only, got {value!r}", param="language")
    if served.multilingual and code not in list(LANGUAGES)[: served.model.config.num_languages]:
        raise ApiError(400, f"'language': model {served.name!r} has no token for {value!r}", param="language")
    return code


async def _audio(request: Request, task: str):
    from ..jobs.whisper import TranscribeOptions
    from ..models.whisper.decoding import DecodingOptions

    limits = request.app.state.config.limits
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(400, f"expected a multipart/form-data body with a 'file', got Content-Type {ctype or 'none'!r}")
    form = await request.form(max_part_size=limits.max_upload_bytes)
    served = get_model(request, form.get("model"), "transcription")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, f"'file': expected an audio file upload, got {type(upload).__name__ if upload else 'none'}",
                       param="file")
    fmt = form.get("response_format") or "json"
    if fmt not in FORMATS:
        raise ApiError(400, f"'response_format': expected one of {', '.join(FORMATS)}, got {fmt!r}",
                       param="response_format")
    grains = [*form.getlist("timestamp_granularities[]"), *form.getlist("timestamp_granularities")]
    bad = [g for g in grains if g not in GRANULARITIES]
    if bad:
        raise ApiError(400, f"'timestamp_granularities': expected word and/or segment, got {bad[0]!r}",
                       param="timestamp_granularities")
    language = _language(form.get("language"), served, task)
    temperatures = _temperatures(form.get("temperature"))
    vad = form.get("vad") or "false"  # tatlas' own field: transcribe only where someone speaks
    if vad not in ("true", "false"):
        raise ApiError(400, f"'vad': expected true or false, got {vad!r}", param="vad")
    prompt = form.get("prompt")
    data = await upload.read()
    if not data:
        raise ApiError(400, "'file': empty upload (0 bytes)", param="file")
    samples, seconds = await asyncio.to_thread(_decode_audio, data, upload.filename or "audio",
                                               limits.max_audio_seconds)
    options = TranscribeOptions(temperature=temperatures, word_timestamps="word" in grains, vad=vad == "true",
                                initial_prompt=prompt if isinstance(prompt, str) and prompt.strip() else None,
                                decode=DecodingOptions(task=task, language=language))
    transcript = await wait_or_leave(request, submit(served.engine, (samples, options)))
    return _render(transcript, fmt, task=task, seconds=seconds, words="word" in grains)


def _render(transcript, fmt: str, *, task: str, seconds: float, words: bool):
    from ..jobs.whisper import to_srt, to_vtt
    from ..models.whisper.languages import LANGUAGES

    text = transcript.text.strip()
    if fmt == "json":
        return JSONResponse({"text": text})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(transcript))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(transcript), media_type="text/vtt")
    segments = [{k: v for k, v in s.items() if k != "words"} for s in transcript.as_dict()["segments"]]
    body: dict[str, Any] = {"task": task, "language": LANGUAGES.get(transcript.language, transcript.language),
                            "duration": round(seconds, 3), "text": text, "segments": segments}
    if words:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                         for s in transcript.segments for w in (s.words or ())]
    return JSONResponse(body)
