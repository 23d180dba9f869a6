"""``tatlas serve`` under bad input and pressure: one-line errors with the right status (400 malformed
JSON or multipart, 401 key, 404 model, 413 size, 429 queue with Retry-After), a client that leaves
frees its row at once, a failing request leaves the server serving, and SIGTERM finishes the
requests in flight before the process exits."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

pytest.importorskip("fastapi")

from _serve import LiveServer, free_port, save_models, speech_wav  # noqa: E402
from tatlas.serve import Batching, Limits, ModelSpec, ServeConfig  # noqa: E402
from tatlas.serve.models import load_models  # noqa: E402

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    return {**save_models(folder), "wav": speech_wav(folder / "fox.wav")}


@pytest.fixture(scope="module")
def server(files):
    """A small server: two chat rows, a queue of three, 200 KiB bodies, 2-s audio, a key."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = ServeConfig(models=(ModelSpec(name="chat", spec=str(files["chat"])), ModelSpec(name="whisper", spec="tiny.en")),
                         api_key=KEY, limits=Limits(max_upload_bytes=200 * 1024, max_audio_seconds=2.0, max_tokens=400,
                                                    max_queue=3),
                         batching=Batching(chat_rows=2))
    models = load_models(config.models, config.limits, config.batching)
    live = LiveServer(config, models)
    live.models = models
    live.http = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    yield live
    live.stop()
    torch.set_num_threads(threads)


def _error(response, status):
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert message and "\n" not in message
    return message


def _chat(n=4, **kw):
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": n, **kw}


def test_keys(server):
    assert "Bearer" in _error(httpx.get(server.url + "/v1/models"), 401)
    assert "Bearer" in _error(httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer nope"}), 401)
    assert server.http.get("/v1/models").status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200  # health and the page need no key


def test_bad_requests_are_one_line_400s(server):
    h = server.http
    assert "malformed JSON" in _error(h.post("/v1/chat/completions", content=b'{"model": "chat",'), 400)
    assert "JSON object" in _error(h.post("/v1/chat/completions", json=[1, 2]), 400)
    assert "'messages'" in _error(h.post("/v1/chat/completions", json={"model": "chat", "messages": []}), 400)
    assert "role" in _error(h.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "x"}]}), 400)
    msg = _error(h.post("/v1/chat/completions", json=_chat(temperature="hot")), 400)
    assert "'temperature'" in msg and "'hot'" in msg
    assert "[1, 400]" in _error(h.post("/v1/chat/completions", json=_chat(n=401)), 400)  # the server's cap
    assert "multipart/form-data" in _error(h.post("/v1/audio/transcriptions", json={"model": "whisper"}), 400)
    broken = h.post("/v1/audio/transcriptions", content=b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhi",
                    headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400
    notaudio = h.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"not audio at all")}, data={"model": "whisper"})
    assert "'a.wav'" in _error(notaudio, 400)
    fmt = h.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"x")}, data={"model": "whisper", "response_format": "doc"})
    assert "json, text, srt, vtt, verbose_json" in _error(fmt, 400)


def test_unknown_model_is_404(server):
    msg = _error(server.http.post("/v1/chat/completions", json={**_chat(), "model": "gpt-9"}), 404)
    assert "'gpt-9'" in msg and "chat" in msg
    assert "transcription model" in _error(server.http.post("/v1/chat/completions", json={**_chat(), "model": "whisper"}), 404)


def test_too_large_is_413(server, files, tmp_path):
    big = server.http.post("/v1/chat/completions", content=b"{" + b" " * 210_000 + b"}",
                           headers={"Content-Type": "application/json"})
    assert "204800 bytes (Content-Length 210002)" in _error(big, 413)
    chunked = server.http.post("/v1/chat/completions", content=iter([b" " * 100_000] * 3),  # no Content-Length
                               headers={"Content-Type": "application/json"})
    assert "204800 bytes" in _error(chunked, 413)
    long = speech_wav(tmp_path / "long.wav", pad_seconds=1.0)  # 3.8 s > 2 s
    r = server.http.post("/v1/audio/transcriptions", files={"file": ("long.wav", long.read_bytes())}, data={"model": "whisper"})
    assert "limit of 2 s" in _error(r, 413)


def _stream(server, n, seen: threading.Event, hold: threading.Event | None = None):
    """Stream a chat of ``n`` tokens; set ``seen`` at its first token; stop reading when ``hold`` is set."""
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        with c.stream("POST", server.url + "/v1/chat/completions", json=_chat(n, stream=True)) as r:
            for line in r.iter_lines():
                if '"content"' in line:
                    seen.set()
                if hold is not None and hold.is_set():
                    return


def test_queue_limit_is_429_and_a_gone_client_frees_its_row(server, monkeypatch):
    """Three 400-token streams fill the queue (two rows, one waiting) and a fourth request gets 429;
    clients that go away free their rows long before their tokens could finish. Decode steps are
    held until the queue is full and then slowed to 50 ms, so neither depends on the machine's speed
    (a fast machine could finish a stream before the queue filled, or before its client left)."""
    engine = server.models["chat"].engine
    full_queue, real_step = threading.Event(), engine.batch.step

    def held_step(*args, **kwargs):
        full_queue.wait(30)
        time.sleep(0.05)  # 400 tokens: 20 s
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine.batch, "step", held_step)
    leave = threading.Event()
    started = [threading.Event() for _ in range(3)]
    workers = [threading.Thread(target=_stream, args=(server, 400, s, leave)) for s in started]
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 30
        while sum(engine.stats()[k] for k in ("waiting", "running")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        full = server.http.post("/v1/chat/completions", json=_chat())
        assert "queue limit" in _error(full, 429) and int(full.headers["Retry-After"]) >= 1
    finally:
        full_queue.set()
        leave.set()
        for w in workers:
            w.join(30)
    t0 = time.monotonic()
    while server.http.get("/health").json()["models"]["chat"]["running"] and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    stats = server.http.get("/health").json()["models"]["chat"]
    assert stats["running"] == 0 and stats["waiting"] == 0  # long before 3 x 400 tokens (60 s) could finish
    assert server.http.post("/v1/chat/completions", json=_chat()).status_code == 200


def test_a_failing_request_leaves_the_server_serving(server, tmp_path):
    from tatlas.serve.engine import ChatJob

    events = []
    bad = ChatJob(ids=[10**6], max_tokens=3, emit=events.append, decode=lambda ids: "")  # a token past the vocabulary
    server.models["chat"].engine.submit(bad)
    deadline = time.monotonic() + 20
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(events) == 1 and "error" in events[0]
    r = server.http.post("/v1/chat/completions", json=_chat())
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    from tatlas.jobs.whisper import transcribe

    short = speech_wav(tmp_path / "hello.wav", "The meeting will start.")
    want = transcribe(server.models["whisper"].model, str(short), seed=0).text.strip()
    for _ in range(2):  # a broken upload, then a good one
        server.http.post("/v1/audio/transcriptions", files={"file": ("x.wav", b"RIFF....")}, data={"model": "whisper"})
        ok = server.http.post("/v1/audio/transcriptions", files={"file": ("hello.wav", short.read_bytes())},
                              data={"model": "whisper", "response_format": "text"})
        assert ok.status_code == 200 and ok.text == want + "\n" and "meeting" in want.lower()


def _alone(path, n):
    from tatlas.generate import GenerationConfig
    from tatlas.jobs.llm import generate_text, load_text_model

    return generate_text(load_text_model(path), "", GenerationConfig(max_new_tokens=n),
                         chat=[{"role": "user", "content": "hi"}])


def test_sigterm_finishes_requests_in_flight(files, tmp_path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TATLAS_API_KEY": ""}
    proc = subprocess.Popen([sys.executable, "-m", "tatlas.cli.main", "serve", "--model", f"chat={files['chat']}",
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        events = []
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=120,
                          json=_chat(300, stream=True, temperature=0, stream_options={"include_usage": True})) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        proc.send_signal(signal.SIGTERM)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert streamed == _alone(files["chat"], 300)  # finished, not cut
        assert chunks[-1]["usage"]["completion_tokens"] > 3
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
