"""The pre-norm transformer block (Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture"; GPT-2, ViT, Whisper, Llama): ``x + attn(norm(x))``, optionally
``x + cross_attn(norm(x), context)`` (the decoder of Vaswani et al. 2017, §3.1), then
``x + mlp(norm(x))``. The block is assembled from modules the model builds, so one class serves
CLIP, Whisper's encoder and decoder, GPT-2-style and Llama-style decoders. ``layer_scale``
multiplies each sublayer's output by a learned per-channel vector before the residual sum
(Touvron et al. 2021, "Going deeper with Image Transformers", CaiT §2.1; InternViT). ``drop_path``
drops each sample's sublayer outputs with that probability while training and scales the kept ones
by ``1 / (1 - p)`` (stochastic depth, Huang et al. 2016; ViT-style per-sample form, ImageBind)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import Attention
from .mlp import MLP
from .positions import Rope


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: each sample of ``x [B, ...]`` zeroed with probability ``p`` while
    ``training``, the rest scaled by ``1 / (1 - p)``; ``x`` unchanged otherwise."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class TransformerBlock(nn.Module):
    """``x [*, T, C] -> [*, T, C]``; ``context [*, S, C_kv]`` feeds the cross-attention, if any."""

    def __init__(
        self,
        *,
        dim: int,
        attn: Attention,
        mlp: nn.Module,
        norm: Callable[[int], nn.Module],
        cross_attn: Attention | None = None,
        layer_scale: float | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path: expected a probability in [0, 1), got {drop_path}")
        self.drop_path = drop_path
        self.attn_norm = norm(dim)
        self.attn = attn
        self.cross_norm = norm(dim) if cross_attn is not None else None
        self.cross_attn = cross_attn
        self.mlp_norm = norm(dim)
        self.mlp = mlp
        if layer_scale is not None:  # CaiT / InternViT: x + gamma * sublayer(norm(x))
            self.attn_scale = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.mlp_scale = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:
            self.attn_scale = self.mlp_scale = None

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        rope: Rope | None = None,
        cache=None,
        input_pos: Tensor | None = None,
        context_mask: Tensor | None = None,
        cross_cache=None,
        cross_weights: list[Tensor] | None = None,
        routings: list | None = None,
    ) -> Tensor:
        """``cross_weights``: a list that receives the cross-attention weights ``[*, H, T, S]`` (the
        explicit-softmax path; Whisper's word alignment reads them). ``routings``: a list that receives
        the MLP's routing record if the MLP routes (a mixture of experts, :func:`_mlp_forward`)."""
        h = self.attn(self.attn_norm(x), mask=mask, causal=causal, rope=rope, cache=cache, input_pos=input_pos)
        x = x + drop_path(h if self.attn_scale is None else self.attn_scale * h, self.drop_path, self.training)
        if self.cross_attn is not None:
            h = self.cross_attn(self.cross_norm(x), context, mask=context_mask, cache=cross_cache,
                                return_weights=cross_weights is not None)
            if cross_weights is not None:
                h, weights = h
                cross_weights.append(weights)
            x = x + h
        h = _mlp_forward(self.mlp, self.mlp_norm(x), routings)
        return x + drop_path(h if self.mlp_scale is None else self.mlp_scale * h, self.drop_path, self.training)

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path}" if self.drop_path else ""


class SandwichBlock(nn.Module):
    """Pre- and post-norm around each sublayer (Gemma 2/3): ``x + post(attn(pre(x)))``, then
    ``x + post(mlp(pre(x)))``. ``x [*, T, C] -> [*, T, C]``."""

    def __init__(self, *, dim: int, attn: Attention, mlp: nn.Module, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.attn_norm, self.attn, self.attn_post_norm = norm(dim), attn, norm(dim)
        self.mlp_norm, self.mlp, self.mlp_post_norm = norm(dim), mlp, norm(dim)

    def forward(
        self, x: Tensor, *, mask: Tensor | None = None, causal: bool = False, rope: Rope | None = None,
        cache=None, input_pos: Tensor | None = None, routings: list | None = None,
    ) -> Tensor:
        """``routings``: as :meth:`TransformerBlock.forward`'s."""
        h = self.attn(self.attn_norm(x), mask=mask, causal=causal, rope=rope, cache=cache, input_pos=input_pos)
        x = x + self.attn_post_norm(h)
        return x + self.mlp_post_norm(_mlp_forward(self.mlp, self.mlp_norm(x), routings))


def _mlp_forward(mlp: nn.Module, x: Tensor, routings: list | None) -> Tensor:
    """``mlp(x)``; an MLP whose class sets ``routed = True`` (:class:`~tatlas.nn.moe.MoE`) is given the
    ``routings`` list, to which it appends its routing record. ``x [*, T, C] -> [*, T, C]``."""
    if routings is not None and getattr(mlp, "routed", False):
        return mlp(x, routings=routings)
    return mlp(x)


def classic_block(
    *, dim: int, heads: int, mlp_hidden: int, norm: Callable[[int], nn.Module], act: str = "gelu",
    fused_qkv: bool = False, cross: bool = False, qkv_bias: bool = True,
    qk_norm: Callable[[int], nn.Module] | None = None, layer_scale: float | None = None,
    kv_bias_token: bool = False, drop_path: float = 0.0,
) -> TransformerBlock:
    """The block of GPT-2, ViT, CLIP, ImageGPT, the Decision Transformer and Whisper: biased q/k/v
    and output projections (fused into one ``qkv`` matrix, or separate ``q``, ``k``, ``v``), a
    two-layer biased MLP, and with ``cross`` a cross-attention whose keys have no bias (Whisper).
    InternViT's variant: ``qkv_bias=False``, ``qk_norm`` over the whole width of queries and keys,
    and ``layer_scale``. ImageBind's: ``kv_bias_token`` (a learned extra key/value) and ``drop_path``."""
    return TransformerBlock(
        dim=dim,
        attn=Attention(dim=dim, heads=heads, fused_qkv=fused_qkv, qkv_bias=qkv_bias, out_bias=True, qk_norm=qk_norm,
                       qk_norm_per_head=False, kv_bias_token=kv_bias_token),
        cross_attn=Attention(dim=dim, heads=heads, qkv_bias=True, k_bias=False, out_bias=True) if cross else None,
        mlp=MLP(dim=dim, hidden=mlp_hidden, act=act),
        norm=norm,
        layer_scale=layer_scale,
        drop_path=drop_path,
    )
