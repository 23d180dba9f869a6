"""The web page of ``tatlas serve`` in headless Chromium (Debian's ``chromium`` driven by Playwright):
upload an audio file and see the transcript with its timestamps; score an image against labels;
send a chat message and see the tokens arrive one piece at a time. Skipped, saying why, where
Playwright or ``/usr/bin/chromium`` is missing."""


import pytest
import torch

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from _browser import CHROMIUM, MARKS  # noqa: E402

from _serve import LiveServer, save_models, speech_wav  # noqa: E402
from tatlas.serve import ModelSpec, ServeConfig  # noqa: E402
from tatlas.serve.models import load_models  # noqa: E402

pytestmark = MARKS


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    paths = save_models(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = ServeConfig(models=(ModelSpec(name="whisper", spec="tiny.en"), ModelSpec(name="chat", spec=str(paths["chat"])),
                                 ModelSpec(name="embed", spec=str(paths["clip"]))))
    models = load_models(config.models, config.limits, config.batching)
    live = LiveServer(config, models)
    live.models, live.folder = models, folder
    yield live
    live.stop()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def page(served):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(served.url + "/")
        page.wait_for_function("document.getElementById('chat-model').options.length > 0")
        yield page
        browser.close()


def test_upload_audio_shows_the_transcript_with_timestamps(served, page):
    from tatlas.jobs.whisper import transcribe

    wav = speech_wav(served.folder / "fox.wav")
    want = transcribe(served.models["whisper"].model, str(wav), seed=0)
    page.set_input_files("#audio-file", str(wav))
    page.wait_for_selector("#transcript li", timeout=60_000)
    rows = page.locator("#transcript li").all_inner_texts()
    assert len(rows) == len(want.segments)
    for row, segment in zip(rows, want.segments):
        assert row.endswith(segment.text.strip()) and row.startswith("[0:")
    assert "lazy dog" in rows[-1]
    assert page.inner_text("#audio-note").startswith("english")


def test_image_and_labels_give_zero_shot_scores(served, page):
    from PIL import Image

    from tatlas.jobs.clip import zero_shot

    image = served.folder / "red.png"
    Image.new("RGB", (40, 40), (220, 30, 30)).save(image)
    want = zero_shot(served.models["embed"].model, [str(image)], ["red", "green", "blue"])[0]
    page.set_input_files("#zs-image", str(image))
    page.fill("#zs-labels", "red, green, blue")
    page.click("#zs-run")
    page.wait_for_selector("#zs-scores tr", timeout=30_000)
    rows = [r.split("\t") for r in page.locator("#zs-scores tr").all_inner_texts()]
    assert [r[0] for r in rows] == list(want.labels)
    assert [float(r[1].rstrip(" %")) for r in rows] == pytest.approx([100 * p for p in want.probabilities], abs=0.06)


def test_chat_message_streams_tokens(served, page):
    from tatlas.generate import GenerationConfig
    from tatlas.jobs.llm import generate_text

    want = generate_text(served.models["chat"].model, "", GenerationConfig(max_new_tokens=40),
                         chat=[{"role": "user", "content": "tell me a story"}])
    # the page asks for the model's default temperature (1.0); greedy makes the answer checkable
    page.route("**/v1/chat/completions", lambda route: route.continue_(
        post_data=route.request.post_data.replace('"stream":true', '"stream":true,"temperature":0')))
    page.fill("#chat-max", "40")
    page.fill("#chat-input", "tell me a story")
    pieces = []  # the assistant's text each time it changes, seen from inside the page
    page.expose_function("seen", lambda text: pieces.append(text))
    page.evaluate("""() => new MutationObserver(() => {
        const last = [...document.querySelectorAll('#chat-log .msg.assistant .text')].pop();
        if (last) window.seen(last.textContent);
    }).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true})""")
    page.click("#chat-send")
    page.wait_for_selector("#chat-log .msg.assistant[data-state=done]", timeout=60_000)
    assert page.locator("#chat-log .msg.assistant .text").last.text_content() == want
    growing = [p for p in pieces if p]
    assert len(set(growing)) >= 3 and all(want.startswith(p) for p in growing)  # arrived piece by piece
    assert int(page.locator("#chat-log .msg.assistant").last.get_attribute("data-pieces")) >= 3
