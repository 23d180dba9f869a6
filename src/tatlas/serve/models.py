"""The models a server holds: each ``NAME=SPEC`` loaded once, by its system, with the engine that
batches its requests (chat: :class:`~.engine.ChatEngine`; transcription: :class:`~.workers.WhisperWorker`;
embedding: :class:`~.workers.EmbedWorker`). The system is read from the spec without loading the
weights twice: a named model's entry, a tatlas checkpoint's metadata, a folder's ``config.json``
``model_type`` or CTranslate2 spec, a GGUF file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Batching, Limits, ModelSpec

KINDS = {"whisper": "transcription", "clip": "embedding", "llm": "chat", "llava": "chat", "internvl": "chat"}
CONTEXT = 1024  # chat cache slots per row (the prompt plus its answer), at most the model's positions


@dataclass
class ServedModel:
    name: str
    spec: str
    system: str
    kind: str  # transcription | embedding | chat
    engine: Any
    model: Any = None  # the nn.Module (whisper / clip) or the TextModel (chat)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def multilingual(self) -> bool:
        return self.kind == "transcription" and bool(self.model.config.multilingual)

    def close(self, timeout: float | None = None) -> None:
        self.engine.close(timeout)

    def info(self) -> dict[str, Any]:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "tatlas",
                "kind": self.kind, "system": self.system, "spec": self.spec}


def detect_system(spec: str) -> str:
    """The registered system a spec holds, without loading its weights; a one-line error otherwise."""
    from ..jobs.named import NAMED

    if spec in NAMED:
        return NAMED[spec].system
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"--model {spec!r}: no such file or folder, and not a named model ({', '.join(sorted(NAMED))})")
    from ..io.gguf import is_gguf
    from ..models.registry import owner_of

    if is_gguf(path):
        return "llm"
    if path.suffix == ".pt":
        return "whisper"  # an openai-whisper checkpoint (CLIP .pt files need their format named: not served)
    if path.is_dir() and (path / "model.bin").is_file():
        return "whisper"  # a CTranslate2 Whisper folder
    if path.is_dir() and (path / "config.json").is_file():
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        owner = owner_of("hf_model_types", model_type)
        if owner is None:
            raise ValueError(f"--model {spec!r}: Hugging Face model_type {model_type!r} is not a system tatlas loads")
        return owner.name
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            system = (f.metadata() or {}).get("tatlas.system")
        if system is None:
            raise ValueError(f"--model {spec!r}: a safetensors file without tatlas metadata (not a tatlas checkpoint)")
        return system
    raise ValueError(f"--model {spec!r}: expected a named model, a tatlas .safetensors checkpoint, a Hugging Face "
                     "or CTranslate2 folder, a GGUF file or an openai-whisper .pt file")


def load_model(spec: ModelSpec, limits: Limits, batching: Batching) -> ServedModel:
    """Load one ``NAME=SPEC`` and start its engine."""
    system = detect_system(spec.spec)
    kind = KINDS.get(system)
    if kind is None:
        raise ValueError(f"--model {spec.name}={spec.spec}: a {system} model; tatlas serve serves "
                         f"{', '.join(sorted(KINDS))} models")
    wait_s = batching.wait_ms / 1000
    if kind == "transcription":
        from ..jobs.whisper import default_model
        from .workers import WhisperWorker

        model = default_model(spec.spec)
        engine = WhisperWorker(model, max_batch=batching.size("whisper_batch"), wait_s=wait_s,
                               max_queue=limits.max_queue)
        return ServedModel(spec.name, spec.spec, system, kind, engine, model)
    if kind == "embedding":
        from ..jobs.clip import load_clip
        from .workers import EmbedWorker

        model = load_clip(spec.spec)
        engine = EmbedWorker(model, max_batch=batching.size("embed_batch"), wait_s=wait_s, max_queue=limits.max_queue)
        return ServedModel(spec.name, spec.spec, system, kind, engine, model)
    from ..jobs.llm import load_text_model
    from .engine import ChatEngine

    tm = load_text_model(spec.spec)
    text_config = tm.model.config if tm.system == "llm" else tm.model.config.text
    context = min(CONTEXT, text_config.max_positions)
    engine = ChatEngine(tm.model, rows=batching.size("chat_rows"), context=context, max_queue=limits.max_queue,
                        name=spec.name)
    return ServedModel(spec.name, spec.spec, system, kind, engine, tm)


def load_models(specs: tuple[ModelSpec, ...], limits: Limits, batching: Batching) -> dict[str, ServedModel]:
    served: dict[str, ServedModel] = {}
    try:
        for spec in specs:
            served[spec.name] = load_model(spec, limits, batching)
    except BaseException:
        for m in served.values():
            m.close(timeout=5)
        raise
    return served
