"""Configuration of Flamingo (Alayrac et al. 2022, "Flamingo: a Visual Language Model for Few-Shot
Learning"): a vision tower, a Perceiver resampler per image, and tanh-gated cross-attention dense
layers inserted before some layers of a frozen decoder LM. Two published layouts are presets:
IDEFICS (Laurençon et al. 2023; transformers' ``IdeficsForVisionText2Text``: RMSNorm and a gated
SiLU MLP in the cross layers, the LM's own heads, a ReLU resampler feed-forward, every tower token)
and OpenFlamingo (Awadalla et al. 2023: LayerNorm and a GELU MLP, 8 heads of 64, the tower's patch
tokens after its final norm)."""

from __future__ import annotations

from dataclasses import dataclass

from ...nn import ACTIVATIONS
from ..clip.config import CLIPVisionConfig
from ..llm.config import LLMConfig, uniform_layers

VISION_TOKENS = ("all", "patches")
NORMS = ("rms", "layer")
MLPS = ("gated", "plain")


def _positive(name: str, **values: int | None) -> None:
    for field, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"{name}.{field} must be a positive int, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ResamplerConfig:
    """The Perceiver resampler (:class:`~tatlas.nn.PerceiverResampler`), in the tower's width:
    ``latents`` visual tokens per image; ``max_media``/``max_frames`` add learned time/frame
    embeddings (``None``: none, as both released models)."""

    depth: int = 6
    heads: int = 8
    head_dim: int = 64
    latents: int = 64
    mlp_mult: int = 4
    act: str = "gelu"
    max_media: int | None = None
    max_frames: int | None = None
    qk_norm: bool = False

    def __post_init__(self) -> None:
        _positive("ResamplerConfig", depth=self.depth, heads=self.heads, head_dim=self.head_dim, latents=self.latents,
                  mlp_mult=self.mlp_mult, max_media=self.max_media, max_frames=self.max_frames)
        if self.act not in ACTIVATIONS:
            raise ValueError(f"ResamplerConfig.act: expected one of {sorted(ACTIVATIONS)}, got {self.act!r}")


@dataclass(frozen=True, kw_only=True)
class CrossConfig:
    """The gated cross-attention dense layers (:class:`~tatlas.nn.GatedCrossAttentionBlock`): one
    before LM layer ``i`` for ``i = first, first + every, ...``; ``heads`` x ``head_dim`` attention
    from the text width to the visual width; ``norm`` (``"rms"`` with the LM's eps, or ``"layer"``)
    and ``mlp`` (``"gated"``: ``down(act(gate(x)) * up(x))``, or ``"plain"``: ``fc2(act(fc1(x)))``,
    no biases) of width ``mlp_hidden``; ``gate``: ``"float"`` (one scalar per gate) or
    ``"vector"`` (one per channel)."""

    every: int = 1
    first: int = 0
    heads: int = 8
    head_dim: int = 64
    norm: str = "layer"
    mlp: str = "plain"
    mlp_hidden: int = 2048
    act: str = "gelu"
    gate: str = "float"
    qk_norm: bool = False

    def __post_init__(self) -> None:
        _positive("CrossConfig", every=self.every, heads=self.heads, head_dim=self.head_dim, mlp_hidden=self.mlp_hidden)
        if not 0 <= self.first < self.every:
            raise ValueError(f"CrossConfig.first: expected 0..{self.every - 1} (every={self.every}), got {self.first}")
        for field, allowed in (("norm", NORMS), ("mlp", MLPS), ("gate", ("float", "vector"))):
            if getattr(self, field) not in allowed:
                raise ValueError(f"CrossConfig.{field}: expected one of {allowed}, got {getattr(self, field)!r}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"CrossConfig.act: expected one of {sorted(ACTIVATIONS)}, got {self.act!r}")

    def layers(self, n: int) -> tuple[int, ...]:
        """The LM layers (of ``n``) that get a gated cross-attention layer before them."""
        return tuple(range(self.first, n, self.every))


@dataclass(frozen=True, kw_only=True)
class FlamingoConfig:
    """``vision``: the CLIP tower; ``vision_tokens``: ``"all"`` (every token after the last block,
    before the final norm: IDEFICS) or ``"patches"`` (after the final norm, class token dropped:
    open_clip's ``output_tokens``). ``resampler``: ``None`` feeds the tower's tokens straight to the
    cross-attention (IDEFICS's ``use_resampler=False``). ``media_token_id``: the ``<image>`` token
    that marks where each image sits in the text (``None``: the caller passes the image attention
    mask); ``eoc_token_id``: ``<|endofchunk|>``, which ends each image's text. ``immediate``: a token
    attends only to the latest image before it (else to all earlier ones)."""

    text: LLMConfig
    vision: CLIPVisionConfig
    cross: CrossConfig
    resampler: ResamplerConfig | None = ResamplerConfig()
    vision_tokens: str = "patches"
    media_token_id: int | None = None
    eoc_token_id: int | None = None
    immediate: bool = True

    def __post_init__(self) -> None:
        if self.vision_tokens not in VISION_TOKENS:
            raise ValueError(f"FlamingoConfig.vision_tokens: expected one of {VISION_TOKENS}, got {self.vision_tokens!r}")
        if self.text.vision is not None:
            raise ValueError("FlamingoConfig.text: the decoder must be text-only (images come through cross-attention)")
        for name in ("media_token_id", "eoc_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.text.vocab_size:
                raise ValueError(f"FlamingoConfig.{name}: expected a token id below the vocabulary's "
                                 f"{self.text.vocab_size}, got {value}")

    @property
    def cross_layers(self) -> tuple[int, ...]:
        return self.cross.layers(self.text.layers)

    @property
    def tokens_per_image(self) -> int:
        """Visual tokens one image (one frame) gives the cross-attention."""
        if self.resampler is not None:
            return self.resampler.latents
        return self.vision.grid**2 + (self.vision_tokens == "all")


def _llama(vocab: int, dim: int, layers: int, heads: int, hidden: int, **kw) -> LLMConfig:
    return LLMConfig(vocab_size=vocab, dim=dim, layers=layers, heads=heads, kv_heads=heads, mlp_hidden=hidden,
                     head_dim=dim // heads, layer_types=uniform_layers(layers, None), **kw)


_TINY_VIT = CLIPVisionConfig(image_size=16, patch=4, dim=32, layers=2, heads=4, mlp_hidden=64, act="gelu")
_TINY_TEXT = _llama(262, 64, 4, 4, 172, max_positions=1024)

PRESETS: dict[str, FlamingoConfig] = {
    # OpenFlamingo's layout on tiny shapes: <|endofchunk|> 260, <image> 261 (the factory appends them)
    "tiny": FlamingoConfig(
        text=_TINY_TEXT, vision=_TINY_VIT, resampler=ResamplerConfig(depth=2, heads=2, head_dim=16, latents=8),
        cross=CrossConfig(every=2, first=1, heads=2, head_dim=16, mlp_hidden=256), vision_tokens="patches",
        media_token_id=261, eoc_token_id=260),
    # IDEFICS's layout on tiny shapes
    "tiny-idefics": FlamingoConfig(
        text=_TINY_TEXT, vision=_TINY_VIT,
        resampler=ResamplerConfig(depth=2, heads=2, head_dim=16, latents=8, act="relu"),
        cross=CrossConfig(every=2, first=0, heads=4, head_dim=16, norm="rms", mlp="gated", mlp_hidden=172, act="silu"),
        vision_tokens="all", media_token_id=261, eoc_token_id=260),
    # HuggingFaceM4/idefics-9b: OpenCLIP ViT-H/14, LLaMA-7B, a cross layer before every 4th LM layer;
    # <fake_token_around_image> 32000, <image> 32001 (its two additional embeddings)
    "idefics-9b": FlamingoConfig(
        text=_llama(32002, 4096, 32, 32, 11008, max_positions=2048, norm_eps=1e-6),
        vision=CLIPVisionConfig(image_size=224, patch=14, dim=1280, layers=32, heads=16, mlp_hidden=5120, act="gelu"),
        resampler=ResamplerConfig(depth=6, heads=16, head_dim=96, latents=64, act="relu"),
        cross=CrossConfig(every=4, first=0, heads=32, head_dim=128, norm="rms", mlp="gated", mlp_hidden=11008,
                          act="silu"),
        vision_tokens="all", media_token_id=32001, eoc_token_id=None),
}
# for the demo and `tatlas train flamingo` (models/flamingo/task.py): byte tokens (ids 0-258, as
# tatlas.data.ByteTokenizer), <|endofchunk|> 260, <image> 261; the CLIP "tiny" preset's image tower
# (its weights are copied in after CLIP trains on the world); a 3-layer LM with a gated cross layer
# before each of its layers, so the image reaches the LM's first (copying) attention
PRESETS["tiny-world"] = FlamingoConfig(
    text=_llama(262, 64, 3, 4, 172, max_positions=512),
    vision=CLIPVisionConfig(image_size=32, patch=8, dim=64, layers=2, heads=4, mlp_hidden=256),
    resampler=ResamplerConfig(depth=1, heads=2, head_dim=32, latents=4),
    cross=CrossConfig(every=1, first=0, heads=2, head_dim=32, mlp_hidden=128), vision_tokens="patches",
    media_token_id=261, eoc_token_id=260)
