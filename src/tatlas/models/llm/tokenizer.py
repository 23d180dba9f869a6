"""Tokenizers for the ``llm`` system: a Hugging Face folder's ``tokenizer.json`` through the
``tokenizers`` library (with the folder's special tokens and chat template), or the byte-level
tokenizer of tatlas' embedded text corpus for models trained on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data import ByteTokenizer


@dataclass
class TextTokenizer:
    """``encode``/``decode`` plus what generation needs: stop tokens, BOS, a chat template."""

    backend: Any
    stop_tokens: tuple[int, ...] = ()
    bos_id: int | None = None
    chat_template: str | None = None
    special: dict[str, str] = field(default_factory=dict)  # bos_token, eos_token strings for templates

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        if isinstance(self.backend, ByteTokenizer):
            ids = self.backend.encode(text)
        else:
            ids = self.backend.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + ids

    def decode(self, ids: list[int]) -> str:
        if isinstance(self.backend, ByteTokenizer):  # ids past its vocabulary (a model's own image token) are not text
            return self.backend.decode([i for i in ids if i < self.backend.vocab_size])
        return self.backend.decode(ids, skip_special_tokens=True)

    def token_id(self, token: str) -> int | None:
        return None if isinstance(self.backend, ByteTokenizer) else self.backend.token_to_id(token)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The conversation as the model was trained to see it (its chat template, else a plain one)."""
        if self.chat_template:
            import jinja2

            env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise ValueError(f"chat template: {message}")

            env.globals["raise_exception"] = raise_exception
            try:
                return env.from_string(self.chat_template).render(messages=messages, add_generation_prompt=True,
                                                                  **self.special)
            except (jinja2.TemplateError, TypeError, KeyError, AttributeError, IndexError) as e:  # a broken template
                raise ValueError(f"chat template: {type(e).__name__}: {' '.join(str(e).split())}") from None
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def _token_str(value: Any) -> str | None:
    value = value.get("content") if isinstance(value, dict) else value
    return value if isinstance(value, str) else None


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object (``{}`` when absent); anything else is a one-line error naming it."""
    from ...io import read_json

    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_tokenizer(path: str | Path | None, vocab_size: int) -> TextTokenizer:
    """The tokenizer of a model folder (``tokenizer.json``), else the byte-level one if the model's
    vocabulary fits it; a clear error otherwise."""
    folder = Path(path) if path is not None else None
    if folder is not None and folder.is_file():
        folder = folder.parent
    if folder is not None and (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # the tokenizers library raises plain Exception for a file it cannot parse
            raise ValueError(f"{folder / 'tokenizer.json'}: not a readable tokenizer ({' '.join(str(e).split())})") from None
        cfg = _json_object(folder / "tokenizer_config.json")
        gen = _json_object(folder / "generation_config.json")
        special = {k: _token_str(cfg.get(k)) for k in ("bos_token", "eos_token") if _token_str(cfg.get(k)) is not None}
        eos = gen.get("eos_token_id")
        stops = tuple(eos if isinstance(eos, list) else [eos]) if eos is not None else ()
        if not all(type(i) is int and i >= 0 for i in stops):
            raise ValueError(f"{folder / 'generation_config.json'}: eos_token_id: expected token ids, got {eos!r}")
        if not stops and "eos_token" in special and backend.token_to_id(special["eos_token"]) is not None:
            stops = (backend.token_to_id(special["eos_token"]),)
        bos = backend.token_to_id(special["bos_token"]) if "bos_token" in special else None
        add_bos = cfg.get("add_bos_token", bos is not None)
        template = cfg.get("chat_template")
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        if template is not None and not isinstance(template, str):  # a list of named templates is not read
            raise ValueError(f"{folder / 'tokenizer_config.json'}: chat_template: expected a string, "
                             f"got {type(template).__name__}")
        return TextTokenizer(backend, stops, bos if add_bos else None, template, special)
    byte = ByteTokenizer()
    if vocab_size >= byte.vocab_size:
        return TextTokenizer(byte, (byte.eos_id,), None)
    where = f"{folder}" if folder is not None else "the checkpoint"
    raise ValueError(f"{where}: no tokenizer.json, and the model's {vocab_size}-token vocabulary is not tatlas' byte-level one")
