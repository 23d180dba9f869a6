"""Where each built-in system lives and which checkpoint keys it owns, as plain data, so that
loading one checkpoint imports one system's package instead of all of them (start-up: a Whisper
transcription need not import the Evoformer, the world renderer or the offline-RL datasets).
``tests/test_registry.py`` checks this index against the systems' own records."""

from __future__ import annotations

# system name -> the module holding its SYSTEM record (the order of BUILTIN in _builtin.py)
MODULES: dict[str, str] = {
    name: f"tatlas.models.{name}.system"
    for name in ("llm", "imagegpt", "clip", "whisper", "decision_transformer", "evoformer", "llava", "internvl",
                 "flamingo", "imagebind")
}

# (System table, key) -> the system whose converter it is
OWNERS: dict[tuple[str, str], str] = {
    **{("hf_model_types", t): "llm" for t in ("deepseek_v3", "gemma3", "gemma3_text", "llama", "mistral", "mixtral",
                                               "qwen2", "qwen2_moe")},
    ("formats", "gguf"): "llm",
    ("hf_model_types", "imagegpt"): "imagegpt",
    ("hf_model_types", "clip"): "clip", ("formats", "open_clip"): "clip", ("formats", "openai-clip"): "clip",
    ("hf_model_types", "whisper"): "whisper", ("formats", "ctranslate2"): "whisper",
    ("formats", "openai-whisper"): "whisper", ("ct2_specs", "WhisperSpec"): "whisper",
    ("hf_model_types", "decision_transformer"): "decision_transformer",
    ("formats", "alphafold2"): "evoformer",
    ("hf_model_types", "llava"): "llava", ("hf_model_types", "llava_next"): "llava",
    ("hf_model_types", "internvl"): "internvl",
    ("hf_model_types", "idefics"): "flamingo", ("formats", "open_flamingo"): "flamingo",
    ("formats", "imagebind"): "imagebind",
}
