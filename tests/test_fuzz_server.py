"""Fuzzing ``tatlas serve`` (issue #22): request bodies that are not JSON, JSON of any shape, the
OpenAI fields with values of the wrong type or absurd size (``max_tokens: 2**64``, ``temperature:
NaN`` as a bare token, ``messages`` of nested lists), multipart uploads of garbage bytes and odd form
fields. Property: every answer is 2xx, or 4xx with a JSON ``{"error": {"message": <one line>}}``
body; never 500; the server keeps answering ``/health`` after every case."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from _fuzz import JSON_VALUES, fuzz, mutated, time_limit
from hypothesis import event, given
from hypothesis import strategies as st

pytest.importorskip("fastapi")

from _serve import LiveServer, save_models, speech_wav

from tatlas.serve import Batching, Limits, ModelSpec, ServeConfig
from tatlas.serve.models import load_models

pytestmark = pytest.mark.usefixtures("one_thread")
ENDPOINTS = ["/v1/chat/completions", "/v1/embeddings", "/v1/images/classifications", "/v1/audio/transcriptions",
             "/v1/audio/translations"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import tatlas

    folder = tmp_path_factory.mktemp("fuzz-serve")
    files = save_models(folder)
    whisper = tatlas.create("whisper", "tiny", audio_dim=16, text_dim=16, audio_heads=2, text_heads=2, audio_layers=1,
                            text_layers=1, text_ctx=16, alignment_heads=None)
    files["whisper"] = tatlas.save(whisper, folder / "whisper.safetensors")
    files["wav"] = speech_wav(folder / "fox.wav", "hello")
    config = ServeConfig(models=(ModelSpec(name="chat", spec=str(files["chat"])),
                                 ModelSpec(name="embed", spec=str(files["clip"])),
                                 ModelSpec(name="whisper", spec=str(files["whisper"]))),
                         limits=Limits(max_upload_bytes=256 * 1024, max_audio_seconds=4.0, max_tokens=4, max_queue=8),
                         batching=Batching(chat_rows=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    live = LiveServer(config, load_models(config.models, config.limits, config.batching))
    live.http = httpx.Client(base_url=live.url, timeout=60)
    live.wav = files["wav"].read_bytes()
    yield live
    live.http.close()
    live.stop()
    torch.set_num_threads(threads)


def _check(server, response: httpx.Response) -> None:
    event(f"status {response.status_code}")  # pytest --hypothesis-show-statistics: how deep the cases reach
    assert response.status_code < 500, f"{response.status_code}: {response.text[:400]}"
    if response.status_code >= 400:
        message = response.json()["error"]["message"]
        assert isinstance(message, str) and message.strip() and "\n" not in message.strip(), message
        assert "Traceback" not in message
    with time_limit(30):
        assert server.http.get("/health").status_code == 200  # still serving


def _post(server, path: str, **kw) -> httpx.Response:
    if "json" in kw:  # Python's json writes NaN and Infinity as bare tokens, as careless clients do
        kw["content"], kw["headers"] = json.dumps(kw.pop("json")).encode(), {"content-type": "application/json"}
    with time_limit(60):
        return server.http.post(path, **kw)


@given(path=st.sampled_from(ENDPOINTS), body=st.one_of(st.binary(max_size=200), st.text(max_size=80).map(str.encode),
                                                       JSON_VALUES.map(lambda v: json.dumps(v).encode())),
       ctype=st.sampled_from(["application/json", "text/plain", "multipart/form-data", "multipart/form-data; boundary=x",
                              "application/x-www-form-urlencoded", ""]))
@fuzz(60)
def test_any_bytes_to_any_endpoint_are_a_4xx_with_a_json_error(server, path, body, ctype):
    _check(server, _post(server, path, content=body, headers={"content-type": ctype} if ctype else {}))


_MESSAGES = st.lists(st.fixed_dictionaries({
    "role": st.one_of(st.sampled_from(["user", "system", "assistant", "developer", "tool"]), JSON_VALUES),
    "content": st.one_of(st.text(max_size=20), JSON_VALUES, st.lists(st.fixed_dictionaries({
        "type": st.sampled_from(["text", "image_url", "input_audio", 3]), "text": st.one_of(st.text(max_size=8), JSON_VALUES),
        "image_url": st.one_of(JSON_VALUES, st.fixed_dictionaries({"url": st.sampled_from(
            ["data:image/png;base64,AAAA", "data:image/png;base64,%%%", "http://x/y.png", "data:,"])}))}), max_size=2))}),
    max_size=3)
_NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.sampled_from([0, 1, 2, 4, 2**63, -1]), JSON_VALUES)


@st.composite
def changed(draw, base: dict, fields: dict) -> dict:
    """``base`` (a valid request) with up to three of ``fields`` set to drawn values, or dropped."""
    body = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(fields[name])
    return body


_CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@given(body=changed(_CHAT, {"model": st.one_of(st.sampled_from(["embed", "", "nope"]), JSON_VALUES), "messages": _MESSAGES,
                            **{k: _NUMBERS for k in ("max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
                                                      "seed")},
                            "stop": st.one_of(st.text(max_size=3), JSON_VALUES), "stream": st.one_of(st.booleans(), JSON_VALUES),
                            "stream_options": JSON_VALUES}))
@fuzz(60)
def test_chat_bodies_with_fields_of_any_type_are_answered_or_a_4xx(server, body):
    _check(server, _post(server, "/v1/chat/completions", json=body))


_PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


@given(body=st.one_of(
    changed({"model": "embed", "input": "a cat"}, {"model": JSON_VALUES, "input": st.one_of(
        st.text(max_size=30), st.lists(st.text(max_size=8), max_size=3), st.lists(st.integers(-(2**40), 2**40), max_size=4),
        JSON_VALUES), "encoding_format": st.one_of(st.sampled_from(["float", "base64"]), JSON_VALUES),
        "dimensions": _NUMBERS}).map(lambda b: ("/v1/embeddings", b)),
    changed({"model": "embed", "image": _PNG, "labels": ["cat", "dog"]}, {"model": JSON_VALUES, "labels": JSON_VALUES,
        "image": st.one_of(st.sampled_from([_PNG[:60], "data:image/gif;base64,R0lGODlh", _PNG.replace("png", "bmp")]),
                           JSON_VALUES)}).map(lambda b: ("/v1/images/classifications", b))))
@fuzz(50)
def test_embedding_and_classification_bodies_of_any_type_are_answered_or_a_4xx(server, body):
    path, body = body
    _check(server, _post(server, path, json=body))


@given(data=st.data(), fields=st.dictionaries(
    st.sampled_from(["model", "language", "temperature", "response_format", "prompt", "timestamp_granularities[]", "vad",
                     "stream"]),
    st.one_of(st.sampled_from(["whisper", "en", "xx", "0.0,0.2", "nan", "-1", "1e309", "verbose_json", "srt", "true",
                               "word", ""]), st.text(max_size=12)), max_size=3),
    filename=st.sampled_from(["a.wav", "a.mp3", "a", "../../x.wav", "a.png"]),
    path=st.sampled_from(["/v1/audio/transcriptions", "/v1/audio/translations"]))
@fuzz(40)
def test_multipart_audio_uploads_of_garbage_are_answered_or_a_4xx(server, data, fields, filename, path):
    audio = data.draw(st.one_of(st.just(server.wav), mutated(server.wav, hot=64), st.binary(max_size=300)))
    form = {"model": "whisper", **fields}
    _check(server, _post(server, path, data=form, files={"file": (filename, audio)}))
