"""Issue #22, inputs: one image reader with a pixel budget for every system, sizes a user types
bounded by what the model and the machine hold, NaN refused where it slips through comparisons,
outputs checked before the work, truncated audio warned about, and a chat that outgrows the context
drops its oldest turns."""

from __future__ import annotations

import logging
import struct
import zlib

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app
from tatlas.data.images import ImageReadError, open_rgb, read_rgb
from tatlas.generate import GenerationConfig, generate
from tatlas.models.imagegpt.sample import read_image
from tatlas.nn.cache import DecoderCache
from test_llm_cli import llama_folder  # noqa: F401  (the fixture: a tiny Llama folder with a chat template)

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def _one_line_error(res, *fragments):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.output.strip().count("\n") == 0, res.output
    for fragment in fragments:
        assert fragment in res.output, res.output


# --------------------------------------------------------------------------- images


@pytest.fixture
def bomb(tmp_path):
    """A 60-byte PNG whose header declares 20000 x 20000 RGB pixels (1.2 GB decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_every_image_reader_refuses_an_image_over_the_pixel_budget_from_its_header(bomb):
    for read in (lambda p: read_image(p, 8), open_rgb, read_rgb):
        with pytest.raises(ImageReadError, match=r"bomb.png: the image declares 20000x20000 = 400,000,000 pixels, "
                                                 r"more than the budget of 89,478,485; set TATLAS_MAX_IMAGE_PIXELS"):
            read(bomb)


def test_the_pixel_budget_can_be_raised_and_lowered(bomb, tmp_path, monkeypatch):
    monkeypatch.setenv("TATLAS_MAX_IMAGE_PIXELS", "500000000")
    with pytest.raises(ImageReadError, match="not a readable image") as e:  # past the budget (and Pillow's
        open_rgb(bomb)                                                      # own limit) to the missing data
    assert "declares" not in str(e.value)
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    monkeypatch.setenv("TATLAS_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageReadError, match="declares 40x30 = 1,200 pixels, more than the budget of 1,000"):
        read_image(small, 8)
    monkeypatch.setenv("TATLAS_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageReadError, match="TATLAS_MAX_IMAGE_PIXELS: expected a positive number"):
        read_image(small, 8)


def test_imagegpt_complete_and_clip_refuse_the_bomb_in_one_line(bomb, tmp_path):
    igpt = tatlas.save(tatlas.create("imagegpt"), tmp_path / "igpt.safetensors")
    res = runner.invoke(app, ["imagegpt", "complete", str(bomb), "--out", str(tmp_path / "g.png"),
                              "--model", str(igpt)])
    _one_line_error(res, "declares 20000x20000")
    clip = tatlas.save(tatlas.create("clip"), tmp_path / "clip.safetensors")
    res = runner.invoke(app, ["clip", "zero-shot", str(bomb), "--labels", "a,b", "--model", str(clip)])
    _one_line_error(res, "declares 20000x20000")


def test_clip_refuses_non_finite_pixels_and_templates_without_exactly_one_slot(tmp_path):
    from tatlas.models.clip.zeroshot import build_classifier
    from tatlas.models.clip.tokenizer import CLIPTokenizer

    model = tatlas.create("clip").eval()
    size = model.config.vision.image_size
    pixels = torch.zeros(1, 3, size, size)
    pixels[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"pixels: expected finite values, got 1 of \d+ NaN or infinite"):
        model.encode_image(pixels)
    for template in ("{} and {}", "a photo", "a {name}", "a {} {"):
        with pytest.raises(ValueError, match="exactly one in each"):
            build_classifier(model, CLIPTokenizer(), ["cat"], [template])
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    path = tatlas.save(model, tmp_path / "clip.safetensors")
    res = runner.invoke(app, ["clip", "zero-shot", str(image), "--labels", "a,b", "--model", str(path),
                              "--template", "{} and {}"])
    _one_line_error(res, "exactly one in each")
    res = runner.invoke(app, ["clip", "zero-shot", str(image), "--labels", "a,b", "--model", str(path), "--top", "-1"])
    assert res.exit_code == 2 and "--top" in res.output


# --------------------------------------------------------------------------- generation sizes and values


def test_generation_config_refuses_nan(llama_folder):  # noqa: F811
    for field in ("temperature", "repetition_penalty", "length_penalty"):
        with pytest.raises(ValueError, match=f"{field} must be a finite number"):
            GenerationConfig(**{field: float("nan")})
    folder, _ = llama_folder
    for option in ("--temperature", "--repetition-penalty"):
        res = runner.invoke(app, ["generate", "--model", str(folder), "--prompt", "the cat", option, "nan"])
        _one_line_error(res, "must be a finite number")


def test_beams_are_bounded_by_the_vocabulary_and_the_cache_by_memory(llama_folder):  # noqa: F811
    model = tatlas.create("llm").eval()
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"num_beams: expected at most {vocab ** 2:,} \(the distinct continuations "
                                         rf"of 2 tokens over {vocab}\), got 1,000,000"):
        generate(model, [[1, 2, 3]], GenerationConfig(num_beams=1_000_000, max_new_tokens=2))
    with pytest.raises(MemoryError, match=r"the key/value cache of 10000000 rows x 100000 tokens x 4 layers needs "
                                          r"[\d.]+ TB; the CPU has"):
        DecoderCache(batch=10_000_000, max_len=100_000, layers=4, kv_heads=4, head_dim=64)
    folder, _ = llama_folder
    res = runner.invoke(app, ["generate", "--model", str(folder), "--prompt", "the cat", "--beams", "100000", "--max-new-tokens", "3"])
    _one_line_error(res, "num_beams: expected at most")


# --------------------------------------------------------------------------- chat


def test_chat_drops_the_oldest_turns_once_the_history_outgrows_the_context(llama_folder):  # noqa: F811
    folder, _ = llama_folder
    turns = "hello how are you\n" * 12 + "\n"
    res = runner.invoke(app, ["chat", "--model", str(folder), "--system", "the cat", "--max-new-tokens", "5"],
                        input=turns)
    assert res.exit_code == 0, res.output
    assert res.output.count("model>") == 12 and res.output.count("oldest turns are dropped") == 1


def test_fit_chat_keeps_the_system_message_and_the_newest_turn(llama_folder):  # noqa: F811
    from tatlas.jobs.llm import PromptTooLong, fit_chat, load_text_model

    folder, _ = llama_folder
    tm = load_text_model(folder)
    config = GenerationConfig(max_new_tokens=5)
    chat = [{"role": "system", "content": "the cat"}]
    for _ in range(10):
        chat += [{"role": "user", "content": "hello how are you"}, {"role": "assistant", "content": "the dog sat"}]
    chat.append({"role": "user", "content": "a cat ran far away"})
    kept, dropped = fit_chat(tm, chat, config)
    assert dropped > 0 and dropped % 2 == 0 and kept[0] == chat[0] and kept[-1] == chat[-1]
    assert kept[1]["role"] == "user" and kept[1:] == chat[1 + dropped:]
    with pytest.raises(PromptTooLong):
        fit_chat(tm, [{"role": "user", "content": "hello " * 80}], config)


# --------------------------------------------------------------------------- decision transformer


def test_dt_values_nan_targets_and_context_zero_are_refused(tmp_path):
    res = runner.invoke(app, ["dt", "evaluate", str(tmp_path / "none.safetensors"), "--env", "CartPole-v1",
                              "--targets", "nan,inf"])
    _one_line_error(res, "targets: expected finite target returns, got nan, inf")
    data = tmp_path / "cart.npz"
    assert runner.invoke(app, ["dt", "collect", "CartPole-v1", "--episodes", "3", "--out", str(data)]).exit_code == 0
    res = runner.invoke(app, ["dt", "train", str(data), "--out", str(tmp_path / "run"), "--context", "0",
                              "--steps", "1", "--no-progress"])
    _one_line_error(res, "context must be positive, got 0")


def test_dt_resume_on_another_environments_data_keeps_the_finished_run(tmp_path):
    pendulum, cart = tmp_path / "pendulum.npz", tmp_path / "cart.npz"
    for env, path in (("Pendulum-v1", pendulum), ("CartPole-v1", cart)):
        assert runner.invoke(app, ["dt", "collect", env, "--episodes", "3", "--out", str(path)]).exit_code == 0
    run = tmp_path / "run"
    res = runner.invoke(app, ["dt", "train", str(pendulum), "--out", str(run), "--steps", "2", "--batch-size", "4",
                              "--eval-episodes", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    weights, metrics = (run / "model.safetensors").read_bytes(), (run / "metrics.jsonl").read_bytes()
    res = runner.invoke(app, ["dt", "train", str(cart), "--out", str(run), "--steps", "2", "--batch-size", "4",
                              "--eval-episodes", "1", "--resume", "--no-progress"])
    _one_line_error(res, "already holds an earlier run", "no checkpoint to resume from")
    assert (run / "model.safetensors").read_bytes() == weights and (run / "metrics.jsonl").read_bytes() == metrics


# --------------------------------------------------------------------------- outputs and audio


def test_outputs_that_are_files_fail_before_the_work(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    res = runner.invoke(app, ["transcribe", str(tmp_path / "missing.wav"), "-o", str(taken)])
    _one_line_error(res, f"--output-dir {taken}: expected a folder", "is a file")
    res = runner.invoke(app, ["train", "imagegpt", "--steps", "1", "--out", str(taken), "--no-progress"])
    _one_line_error(res, "out_dir", "is a file")
    res = runner.invoke(app, ["clip", "embed", "a cat", "--out", str(taken / "e.npy")])
    _one_line_error(res, "--out", "is a file")


def test_a_truncated_wav_is_transcribed_with_one_warning_naming_the_frames(tmp_path, caplog):
    import soundfile

    from tatlas.models.whisper.audio import audio_duration, load_audio

    whole = tmp_path / "whole.wav"
    soundfile.write(whole, (0.1 * np.sin(np.arange(32000) / 9)).astype(np.float32), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 12000])
    with caplog.at_level(logging.WARNING, logger="tatlas.models.whisper.audio"):
        load_audio(whole)
        assert "truncated" not in caplog.text
        audio_duration(cut)
        samples = load_audio(cut)
    assert len(samples) == 12000
    assert caplog.text.count("cut.wav: truncated WAV: its header declares 32000 frames, the file holds 12000") == 1
