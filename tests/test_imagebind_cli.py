"""``tatlas imagebind embed`` / ``search`` on generated files (a WAV, a PNG, a depth map, IMU readings
as .npy and .csv, a .txt and --text strings) with a tiny random model saved as our checkpoint and as
the official layout: the index's rows and sidecar, the query ranking itself first at cosine 1, the
same embedding through the API, and every bad input as one line and exit status 2."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tatlas
from tatlas.cli.main import app
from tatlas.jobs.imagebind import classify_inputs, embed, load_imagebind

runner = CliRunner()


def _wav(path, freq: float, seconds: float = 2.5, rate: int = 16_000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ib_cli")
    rng = np.random.default_rng(0)
    _wav(d / "tone.wav", 440.0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(d / "scene.png")
    np.save(d / "depth.npy", rng.uniform(0.5, 5.0, (48, 64)).astype(np.float32))
    np.save(d / "walk.npy", rng.normal(size=(6, 300)).astype(np.float32))
    np.savetxt(d / "run.csv", rng.normal(size=(6, 120)), delimiter=",")
    (d / "caption.txt").write_text("a dog barks in the park\n")
    torch.manual_seed(0)
    model = tatlas.create("imagebind", "tiny")
    tatlas.save(model, d / "ib.safetensors")
    from tatlas.models.imagebind.convert import to_official

    torch.save(to_official(model.state_dict(), model.config), d / "ib_official.pth")
    return d


def _run(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_embed_and_search(files):
    d = files
    out = d / "index" / "emb.npy"
    code, text = _run("imagebind", "embed", str(d / "tone.wav"), str(d / "scene.png"), str(d / "walk.npy"),
                      str(d / "run.csv"), str(d / "caption.txt"), "--text", "a red car", "--text", "rain on a roof",
                      "--out", str(out), "--model", str(d / "ib.safetensors"))
    assert code == 0, text
    assert "wrote 7 x 16 embeddings" in text
    array = np.load(out)
    meta = json.loads((d / "index" / "emb.json").read_text())
    assert array.shape == (7, 16) and array.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    assert [r["modality"] for r in meta["rows"]] == ["audio", "vision", "imu", "imu", "text", "text", "text"]
    assert meta["rows"][5]["source"] == "a red car" and meta["rows"][0]["source"] == str(d / "tone.wav")
    assert meta["dim"] == 16 and meta["model"] == str((d / "ib.safetensors").resolve())
    assert len({tuple(np.round(r, 4)) for r in array}) == 7  # every input gives its own embedding

    # the same rows through the API (audio: 3 clips averaged, unit length)
    model = load_imagebind(str(d / "ib.safetensors"))
    items = classify_inputs([d / "tone.wav", d / "scene.png"], ["a red car"])
    np.testing.assert_allclose(embed(model, items).numpy(), array[[0, 1, 5]], atol=1e-5)

    # each indexed item queried back ranks itself first at cosine ~1 (the model recorded in the index)
    for query, row in ((str(d / "tone.wav"), 0), (str(d / "scene.png"), 1), (str(d / "walk.npy"), 2),
                       ("rain on a roof", 6)):
        code, text = _run("imagebind", "search", query, "--in", str(out), "--top", "3")
        assert code == 0, text
        lines = text.splitlines()
        assert len(lines) == 4, text
        score, modality, source = lines[1].split(maxsplit=2)
        assert source == meta["rows"][row]["source"] and modality == meta["rows"][row]["modality"], text
        assert float(score) == pytest.approx(1.0, abs=1e-4), text
        assert float(lines[2].split()[0]) < float(score)


def test_official_checkpoint_and_depth(files):
    """The official .pth layout gives the same embeddings as our checkpoint; depth by --modality."""
    d = files
    for name in ("ib.safetensors", "ib_official.pth"):
        code, text = _run("imagebind", "embed", str(d / "depth.npy"), "--modality", "depth",
                          "--out", str(d / name.replace(".", "_") / "depth.npy"), "--model", str(d / name))
        assert code == 0, text
    ours, official = (np.load(d / n / "depth.npy") for n in ("ib_safetensors", "ib_official_pth"))
    assert ours.shape == (1, 16)
    np.testing.assert_allclose(ours, official, atol=1e-6)
    meta = json.loads((d / "ib_safetensors" / "depth.json").read_text())
    assert meta["rows"] == [{"source": str(d / "depth.npy"), "modality": "depth"}]


def test_errors_are_one_line(files, tmp_path, monkeypatch):
    d = files
    monkeypatch.delenv("TATLAS_IMAGEBIND_MODEL", raising=False)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "broken.png").write_text("not an image")
    (tmp_path / "notes.xyz").write_text("hello")
    np.save(tmp_path / "imu3.npy", np.zeros((3, 50), np.float32))
    np.save(tmp_path / "imu_t.npy", np.zeros((50, 6), np.float32))
    model = ["--model", str(d / "ib.safetensors")]
    out = ["--out", str(tmp_path / "e.npy")]
    cases = [
        ([str(tmp_path / "missing.wav"), *out, *model], "missing.wav: no such file"),
        ([str(tmp_path / "empty.wav"), *out, *model], "empty file"),
        ([str(tmp_path / "broken.wav"), *out, *model], "not a readable audio file"),
        ([str(tmp_path / "broken.png"), *out, *model], "readable image"),
        ([str(tmp_path / "imu3.npy"), *out, *model], "expected shape [6, T]"),
        ([str(tmp_path / "imu_t.npy"), *out, *model], "transpose it"),
        ([str(tmp_path / "notes.xyz"), *out, *model], "unknown file type '.xyz'"),
        ([str(d / "scene.png"), "--modality", "depth", *out, *model], "depth image must be one channel"),
        ([str(d / "scene.png"), "--modality", "smell", *out, *model], "--modality: expected one of"),
        ([str(d / "scene.png"), *out], "no ImageBind model given: pass --model PATH"),
        ([str(d / "scene.png"), *out, "--model", str(tmp_path / "notes.xyz")], "expected the official checkpoint"),
        ([str(d / "scene.png"), "--out", str(tmp_path / "e.txt"), *model], "expected a .npy file name"),
        ([*out, *model], "give at least one file or --text"),
    ]
    for args, message in cases:
        code, text = _run("imagebind", "embed", *args)
        assert code == 2, (args, text)
        assert text.startswith("error: ") and len(text.strip().splitlines()) == 1, (args, text)
        assert message in text, (args, text)
        assert "Traceback" not in text
    assert not (tmp_path / "e.npy").exists()  # nothing half-written
    for args, message in ((["a", "--in", str(d / "walk.npy")], "no walk.json beside it"),
                          (["a", "--in", str(tmp_path / "none.npy")], "no such file"),
                          ([str(tmp_path / "gone.png"), "--in", str(d / "index" / "emb.npy")], "gone.png: no such file")):
        code, text = _run("imagebind", "search", *args)
        assert code == 2 and text.startswith("error: ") and message in text, (args, text)
