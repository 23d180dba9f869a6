"""Configuration of Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", §2.2 "Model" and Table 1): an encoder over a 30-s log-Mel window and a text decoder.

The fields follow the released checkpoints' dimensions: ``mels`` input bins (80; 128 for large-v3),
``audio_ctx`` encoder positions (1500 = 3000 Mel frames after the stride-2 convolution), the text
decoder's ``vocab_size`` and ``text_ctx`` (448) positions. ``alignment_heads`` are the
cross-attention heads (decoder layer, head) whose weights follow the time alignment of the words
(used by word-level timestamps); the released values are in the presets.
"""

from __future__ import annotations

from dataclasses import dataclass

# The vocabulary sizes of the released checkpoints: English-only GPT-2 BPE (51864) and the
# multilingual BPE with 99 languages (51865) or 100 (51866, large-v3 adds Cantonese).
ENGLISH_VOCAB = 51864
MULTILINGUAL_VOCAB = 51865


@dataclass(frozen=True, kw_only=True)
class WhisperConfig:
    mels: int = 80
    audio_ctx: int = 1500
    audio_dim: int
    audio_heads: int
    audio_layers: int
    vocab_size: int
    text_ctx: int = 448
    text_dim: int
    text_heads: int
    text_layers: int
    alignment_heads: tuple[tuple[int, int], ...] | None = None  # None: the last half of the decoder's heads
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("mels", "audio_ctx", "audio_dim", "audio_heads", "audio_layers", "vocab_size", "text_ctx",
                     "text_dim", "text_heads", "text_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"WhisperConfig.{name} must be positive, got {getattr(self, name)}")
        for side in ("audio", "text"):
            dim, heads = getattr(self, f"{side}_dim"), getattr(self, f"{side}_heads")
            if dim % heads:
                raise ValueError(f"WhisperConfig: {side}_dim ({dim}) must be divisible by {side}_heads ({heads})")
        if self.audio_dim % 2:
            raise ValueError(f"WhisperConfig.audio_dim must be even (sinusoidal positions), got {self.audio_dim}")
        if self.audio_dim != self.text_dim:
            raise ValueError(f"WhisperConfig: the decoder attends the encoder output: audio_dim ({self.audio_dim}) "
                             f"must equal text_dim ({self.text_dim})")
        for layer, head in self.alignment_heads or ():
            if not (0 <= layer < self.text_layers and 0 <= head < self.text_heads):
                raise ValueError(f"WhisperConfig.alignment_heads: ({layer}, {head}) is outside "
                                 f"{self.text_layers} layers x {self.text_heads} heads")

    @property
    def n_frames(self) -> int:
        """Mel frames of one window: the encoder's stride-2 convolution halves them to ``audio_ctx``."""
        return 2 * self.audio_ctx

    @property
    def multilingual(self) -> bool:
        return self.vocab_size >= MULTILINGUAL_VOCAB

    @property
    def num_languages(self) -> int:
        """Language tokens in the vocabulary (openai-whisper: ``n_vocab - 51765 - multilingual``)."""
        return self.vocab_size - 51765 - 1 if self.multilingual else 0

    @property
    def heads_for_alignment(self) -> tuple[tuple[int, int], ...]:
        """The alignment heads; without released ones, every head of the last half of the layers
        (openai-whisper's default)."""
        if self.alignment_heads is not None:
            return self.alignment_heads
        return tuple((layer, head) for layer in range(self.text_layers // 2, self.text_layers)
                     for head in range(self.text_heads))


def _sizes(dim: int, heads: int, layers: int, *, text_layers: int | None = None, mels: int = 80,
           vocab: int, heads_at: tuple[tuple[int, int], ...]) -> WhisperConfig:
    return WhisperConfig(mels=mels, audio_dim=dim, audio_heads=heads, audio_layers=layers, vocab_size=vocab,
                         text_dim=dim, text_heads=heads, text_layers=text_layers or layers, alignment_heads=heads_at)


# Table 1 of the paper (and the released large-v3 / large-v3-turbo), with openai-whisper's alignment heads.
PRESETS: dict[str, WhisperConfig] = {
    "tiny-random": WhisperConfig(audio_ctx=64, audio_dim=32, audio_heads=4, audio_layers=2, vocab_size=ENGLISH_VOCAB,
                                 text_ctx=64, text_dim=32, text_heads=4, text_layers=2),
    "tiny-speech": WhisperConfig(audio_ctx=150, audio_dim=96, audio_heads=4, audio_layers=2, vocab_size=38,
                                 text_ctx=16, text_dim=96, text_heads=4, text_layers=2),  # speech_vocab.py, 3-s windows
    "tiny.en": _sizes(384, 6, 4, vocab=ENGLISH_VOCAB, heads_at=((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3),
                                                                  (3, 4))),
    "tiny": _sizes(384, 6, 4, vocab=MULTILINGUAL_VOCAB, heads_at=((2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5))),
    "base.en": _sizes(512, 8, 6, vocab=ENGLISH_VOCAB, heads_at=((3, 3), (4, 7), (5, 1), (5, 5), (5, 7))),
    "base": _sizes(512, 8, 6, vocab=MULTILINGUAL_VOCAB, heads_at=((3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2),
                                                                    (5, 4), (5, 6))),
    "small.en": _sizes(768, 12, 12, vocab=ENGLISH_VOCAB, heads_at=(
        (6, 6), (7, 0), (7, 3), (7, 8), (8, 2), (8, 5), (8, 7), (9, 0), (9, 4), (9, 8), (9, 10), (10, 0), (10, 1),
        (10, 2), (10, 3), (10, 6), (10, 11), (11, 2), (11, 4))),
    "small": _sizes(768, 12, 12, vocab=MULTILINGUAL_VOCAB, heads_at=(
        (5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9), (10, 5))),
    "medium.en": _sizes(1024, 16, 24, vocab=ENGLISH_VOCAB, heads_at=(
        (11, 4), (14, 1), (14, 12), (14, 14), (15, 4), (16, 0), (16, 4), (16, 9), (17, 12), (17, 14), (18, 7),
        (18, 10), (18, 15), (20, 0), (20, 3), (20, 9), (20, 14), (21, 12))),
    "medium": _sizes(1024, 16, 24, vocab=MULTILINGUAL_VOCAB, heads_at=(
        (13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4))),
    "large-v3": _sizes(1280, 20, 32, mels=128, vocab=MULTILINGUAL_VOCAB + 1, heads_at=(
        (7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4), (24, 1), (25, 6))),
    "large-v3-turbo": _sizes(1280, 20, 32, text_layers=4, mels=128, vocab=MULTILINGUAL_VOCAB + 1, heads_at=(
        (2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14))),
}
