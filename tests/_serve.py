"""What the ``tatlas serve`` tests share: tiny random models saved in tatlas' own checkpoint format,
spoken audio, and a live server on a free loopback port (uvicorn in a thread)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile
import torch

import tatlas

SENTENCE = "The quick brown fox jumps over the lazy dog."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_models(folder: Path) -> dict[str, Path]:
    """Tiny random chat (byte-level ``llm``), vision-language (``llava``) and CLIP checkpoints."""
    torch.manual_seed(0)
    out = {}
    for name, system, preset in (("chat", "llm", "tiny"), ("vlm", "llava", "tiny"), ("clip", "clip", "tiny")):
        out[name] = tatlas.save(tatlas.create(system, preset).eval(), folder / f"{name}.safetensors")
    return out


def speech_wav(path: Path, text: str = SENTENCE, *, pad_seconds: float = 0.0) -> Path:
    from tatlas.data.speech import speech

    samples = speech(text, voice="en", words_per_minute=175).numpy()
    samples = np.concatenate([samples, np.zeros(int(pad_seconds * 16000), np.float32)])
    soundfile.write(path, samples, 16000, subtype="PCM_16")
    return path


def png_data_url(path: Path, seed: int = 0) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(path)
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


class LiveServer:
    """``create_app(config, models)`` served by uvicorn on a thread; ``url``; ``stop()``."""

    def __init__(self, config, models) -> None:
        import uvicorn

        from tatlas.serve import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(config, models), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code in (200, 401):
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the test server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
