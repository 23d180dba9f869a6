"""``tatlas serve`` through real clients: the official ``openai`` package and ``curl`` against a live
server holding the real Whisper tiny.en and tiny random chat, vision-language and CLIP checkpoints.
Every answer is compared with the library's own call on the same input (never a hard-coded output);
concurrent requests must equal the same requests alone (continuous batching changes no token)."""

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from _serve import LiveServer, png_data_url, save_models, speech_wav  # noqa: E402
from tatlas.generate import GenerationConfig  # noqa: E402
from tatlas.serve import ModelSpec, ServeConfig  # noqa: E402
from tatlas.serve.models import load_models  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    return {**save_models(folder), "wav": speech_wav(folder / "fox.wav"), "png": folder / "image.png",
            "url": png_data_url(folder / "image.png")}


@pytest.fixture(scope="module")
def server(files):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = ServeConfig(models=(ModelSpec(name="whisper", spec="tiny.en"), ModelSpec(name="chat", spec=str(files["chat"])),
                                 ModelSpec(name="vlm", spec=str(files["vlm"])), ModelSpec(name="embed", spec=str(files["clip"]))))
    models = load_models(config.models, config.limits, config.batching)
    live = LiveServer(config, models)
    live.models = models
    yield live
    live.stop()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _alone(served, messages, n, images=()):
    """The library's own answer (tatlas.jobs.llm.generate_text, greedy) to ``messages``."""
    from tatlas.jobs.llm import generate_text

    return generate_text(served.model, "", GenerationConfig(max_new_tokens=n), chat=messages, images=images)


def test_transcription_equals_the_library(server, files, client):
    from tatlas.jobs.whisper import transcribe

    want = transcribe(server.models["whisper"].model, str(files["wav"]), seed=0)
    with open(files["wav"], "rb") as f:
        got = client.audio.transcriptions.create(model="whisper", file=f)
    assert got.text == want.text.strip() and "lazy dog" in got.text
    with open(files["wav"], "rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper", file=f, response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and verbose.duration == pytest.approx(len(open(files["wav"], "rb").read()) / 32000, abs=0.01)
    assert [s.text for s in verbose.segments] == [s.text for s in want.segments]
    words = [w.word for w in verbose.words]
    assert " ".join(words).replace(" .", ".").endswith("lazy dog.")
    assert all(a.start <= b.start for a, b in zip(verbose.words, verbose.words[1:]))
    with open(files["wav"], "rb") as f:
        srt = client.audio.transcriptions.create(model="whisper", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ") and "lazy dog" in srt


def test_translation_on_an_english_only_model_is_a_clear_400(client, files):
    with open(files["wav"], "rb") as f, pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.translations.create(model="whisper", file=f)


def test_chat_equals_the_library_and_streams(server, client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    want = _alone(server.models["chat"], messages, 24)
    got = client.chat.completions.create(model="chat", messages=messages, max_tokens=24, temperature=0)
    assert got.choices[0].message.content == want and got.choices[0].finish_reason == "length"
    assert got.usage.completion_tokens == 24
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="chat", messages=messages, max_tokens=24, temperature=0, stream=True) if c.choices]
    assert "".join(p for p in pieces if p) == want
    assert sum(1 for p in pieces if p) >= 2  # streamed, not sent whole


def test_concurrent_chats_equal_each_alone(server, client):
    prompts = [f"question number {i}" + "?" * i for i in range(6)]
    wants = [_alone(server.models["chat"], [{"role": "user", "content": p}], 16 + i) for i, p in enumerate(prompts)]
    steps = server.models["chat"].engine.stats()["steps"]

    def ask(i):
        return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompts[i]}],
                                              max_tokens=16 + i, temperature=0).choices[0].message.content

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(ask, range(6)))
    assert got == wants
    used = server.models["chat"].engine.stats()["steps"] - steps
    assert used < sum(16 + i - 1 for i in range(6))  # rows shared decode steps


def test_stop_strings_and_seeded_sampling(server, client):
    messages = [{"role": "user", "content": "go"}]
    full = _alone(server.models["chat"], messages, 30)
    stop = full[10:12]
    got = client.chat.completions.create(model="chat", messages=messages, max_tokens=30, temperature=0, stop=[stop])
    assert got.choices[0].message.content == full[: full.index(stop)] and got.choices[0].finish_reason == "stop"
    a, b, c = (client.chat.completions.create(model="chat", messages=messages, max_tokens=20, temperature=1.0,
                                              top_p=0.9, seed=s).choices[0].message.content for s in (7, 7, 8))
    assert a == b and a != c


def test_image_chat_on_the_vision_language_row(server, client, files):
    text = "what is in the picture?"
    want = _alone(server.models["vlm"], [{"role": "user", "content": text}], 12, images=[files["png"]])
    got = client.chat.completions.create(model="vlm", max_tokens=12, temperature=0, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": files["url"]}}, {"type": "text", "text": text}]}])
    assert got.choices[0].message.content == want
    with pytest.raises(openai.BadRequestError, match="text-only"):
        client.chat.completions.create(model="chat", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": files["url"]}}]}])
    with pytest.raises(openai.BadRequestError, match="data: URL"):
        client.chat.completions.create(model="vlm", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])


def test_embeddings_equal_the_library(server, client, files):
    from tatlas.jobs.clip import embed

    model = server.models["embed"].model
    texts = ["a photo of a cat", "a diagram", "x"]
    want, _ = embed(model, texts, text=True)
    got = client.embeddings.create(model="embed", input=texts)
    assert [d.index for d in got.data] == [0, 1, 2]
    torch.testing.assert_close(torch.tensor([d.embedding for d in got.data]), want, atol=1e-5, rtol=0)
    image_want, _ = embed(model, [str(files["png"])])
    image_got = client.embeddings.create(model="embed", input=[files["url"]])  # the data-URL extension
    torch.testing.assert_close(torch.tensor(image_got.data[0].embedding)[None], image_want, atol=1e-5, rtol=0)


def test_zero_shot_equals_the_library(server, files):
    from tatlas.jobs.clip import zero_shot

    labels = ["cat", "dog", "car"]
    want = zero_shot(server.models["embed"].model, [str(files["png"])], labels)[0]
    got = httpx.post(server.url + "/v1/images/classifications", timeout=60,
                     json={"model": "embed", "image": files["url"], "labels": labels}).json()["data"]
    assert [d["label"] for d in got] == list(want.labels)
    assert [d["score"] for d in got] == pytest.approx(list(want.probabilities), abs=1e-5)


def test_models_and_health(server, client):
    assert {m.id for m in client.models.list().data} == {"whisper", "chat", "vlm", "embed"}
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models"]["chat"]["kind"] == "chat"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(server, files):
    def curl(*args):
        out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        body, _, code = out.rpartition("\n")
        return int(code), body

    code, body = curl(server.url + "/v1/audio/transcriptions", "-F", f"file=@{files['wav']}", "-F", "model=whisper",
                      "-F", "response_format=text")
    assert code == 200 and "lazy dog" in body
    code, body = curl(server.url + "/v1/chat/completions", "-H", "Content-Type: application/json", "-d",
                      json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                                  "stream": True}))
    events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert code == 200 and events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    code, body = curl(server.url + "/v1/chat/completions", "-H", "Content-Type: application/json", "-d", "{oops")
    assert code == 400 and "malformed JSON" in json.loads(body)["error"]["message"]

