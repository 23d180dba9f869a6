"""Multi-head latent attention against transformers' DeepseekV3Attention (weights copied), and
cached decoding of the compressed latent == uncached."""

import pytest
import torch

from parity import perturb_
from tatlas.nn import DecoderCache, LatentAttention, RotaryEmbedding


def _pair(q_rank):
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention, DeepseekV3RotaryEmbedding

    cfg = DeepseekV3Config(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=q_rank,
                           kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
                           rope_interleave=True, attn_implementation="eager")
    ref = perturb_(DeepseekV3Attention(cfg, layer_idx=0), seed=1, std=0.2).eval()
    ours = LatentAttention(dim=32, heads=4, kv_rank=16, nope_dim=8, rope_dim=4, v_dim=6, q_rank=q_rank).eval()
    names = {"kv_a_proj_with_mqa": "kv_a", "kv_a_layernorm": "kv_norm", "kv_b_proj": "kv_b", "o_proj": "out",
             "q_proj": "q", "q_a_proj": "q_a", "q_a_layernorm": "q_norm", "q_b_proj": "q_b"}
    state = {}
    for k, v in ref.state_dict().items():
        mod, rest = k.split(".", 1)
        state[f"{names[mod]}.{rest}"] = v
    ours.load_state_dict(state)
    return ref, ours, DeepseekV3RotaryEmbedding(cfg)


@pytest.mark.parametrize("q_rank", [None, 12])
def test_latent_attention_matches_deepseek_v3(q_rank, gen):
    ref, ours, hf_rot = _pair(q_rank)
    x = torch.randn(2, 7, 32, generator=gen)
    pos = torch.arange(7)[None].expand(2, -1)
    mask = torch.full((7, 7), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        theirs, _ = ref(x, position_embeddings=hf_rot(x, pos), attention_mask=mask)
        mine = ours(x, causal=True, rope=RotaryEmbedding(dim=4, interleaved=True)(torch.arange(7)))
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_latent_cache_equals_uncached(gen):
    _, ours, _ = _pair(12)
    rot = RotaryEmbedding(dim=4, interleaved=True)
    x = torch.randn(1, 9, 32, generator=gen)
    with torch.no_grad():
        full = ours(x, causal=True, rope=rot(torch.arange(9)))
        cache = DecoderCache(batch=1, max_len=12, layers=1, kv_heads=1, head_dim=16, v_dim=4)
        outs = []
        for i in range(9):
            ip = torch.tensor([i])
            outs.append(ours(x[:, i:i + 1], mask=cache.mask(ip), rope=rot(cache.positions(ip)), cache=cache.layers[0],
                             input_pos=ip))
    assert cache.layers[0].k.shape == (1, 1, 12, 16), "only the latent is cached"
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
