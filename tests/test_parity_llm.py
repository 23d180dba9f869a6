"""Parity of the ``llm`` row with transformers' Llama / Mistral / Qwen2 (tiny random, every
parameter re-randomised), loaded through tatlas' own converter from a ``save_pretrained`` folder."""

import pytest
import torch
from transformers import (
    LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
)

import tatlas
from parity import assert_close, hf_greedy, perturb_, save_hf
from tatlas.generate import GenerationConfig, generate
from tatlas.models.llm.convert import to_hf

COMMON = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)

CASES = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**COMMON, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "llama3-scaled-tied": lambda: LlamaForCausalLM(LlamaConfig(**{**COMMON, "tie_word_embeddings": True}, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "mistral-sliding": lambda: MistralForCausalLM(MistralConfig(**COMMON, sliding_window=6)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**COMMON)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_greedy_tokens_equal_reference(case, tmp_path, gen):
    torch.manual_seed(0)
    ref = perturb_(CASES[case](), seed=1).eval()
    ours = tatlas.load(save_hf(ref, tmp_path / case), system="llm").eval()
    tokens = torch.randint(0, 99, (2, 20), generator=gen)
    with torch.no_grad():
        diff = assert_close(ours(tokens), ref(tokens).logits, atol=1e-4, what=f"{case} logits")
    prompt = tokens[:, :5]
    mine = generate(ours, prompt, GenerationConfig(max_new_tokens=32, static_cache=True)).tokens
    assert mine.tolist() == hf_greedy(ref, prompt, 32).tolist(), f"{case}: greedy tokens differ"
    print(f"{case}: max abs logit diff {diff:.2e}")


def test_export_to_hf_llama_round_trip(tmp_path, gen):
    ours = perturb_(tatlas.create("llm", "tiny", vocab_size=50, dim=32, heads=4, kv_heads=2, mlp_hidden=40), seed=2).eval()
    ref = LlamaForCausalLM.from_pretrained(to_hf(ours, tmp_path / "out")).eval()
    tokens = torch.randint(0, 50, (2, 9), generator=gen)
    with torch.no_grad():
        assert_close(ours(tokens), ref(tokens).logits, atol=1e-4, what="exported Llama logits")


def _gemma3_text_config(**kw):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=6,
                            max_position_embeddings=128, query_pre_attn_scalar=16,
                            layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                            **kw)


def test_gemma3_text_logits_and_greedy(tmp_path, gen):
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(0)
    ref = perturb_(Gemma3ForCausalLM(_gemma3_text_config(final_logit_softcapping=5.0)), seed=3).eval()
    ours = tatlas.load(save_hf(ref, tmp_path / "g3"), system="llm").eval()
    assert ours.config.final_softcap == 5.0 and ours.config.layer_types == ("sliding", "sliding", "full", "sliding")
    tokens = torch.randint(0, 99, (2, 20), generator=gen)
    with torch.no_grad():
        assert_close(ours(tokens), ref(tokens).logits, atol=1e-4, what="gemma3 text logits")
    prompt = tokens[:, :5]
    mine = generate(ours, prompt, GenerationConfig(max_new_tokens=32)).tokens
    assert mine.tolist() == hf_greedy(ref, prompt, 32).tolist()


def test_gemma3_image_text_logits_and_greedy(tmp_path, gen):
    """Interleaved images: bidirectional inside each image block, causal elsewhere (incl. sliding layers)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16,
                  patch_size=4, vision_use_head=False)
    cfg = Gemma3Config(text_config=_gemma3_text_config().to_dict(), vision_config=vision, mm_tokens_per_image=4,
                       image_token_id=98, boi_token_index=96, eoi_token_index=97)
    ref = perturb_(Gemma3ForConditionalGeneration(cfg), seed=4).eval()
    ours = tatlas.load(save_hf(ref, tmp_path / "g3mm"), system="llm").eval()
    img = [98] * 4
    rows = [[5, 6, 96, *img, 97, 7, 8, 9, 96, *img, 97, 10], [11, 96, *img, 97, 12, 13, 14, 15, 16, 96, *img, 97]]
    tokens = torch.tensor(rows)
    pixels = torch.randn(4, 3, 16, 16, generator=gen)
    with torch.no_grad():
        theirs = ref(input_ids=tokens, pixel_values=pixels, token_type_ids=(tokens == 98).long()).logits
        mine = ours(tokens, pixels=pixels)
        assert_close(mine, theirs, atol=1e-4, what="gemma3 image-text logits")
        # the image block really is bidirectional: its first token's output depends on its last patch
        causal_only = ref(input_ids=tokens, pixel_values=pixels).logits
        assert (causal_only - theirs).abs().max() > 1e-3
    hf = ref.generate(input_ids=tokens, pixel_values=pixels, token_type_ids=(tokens == 98).long(),
                      attention_mask=torch.ones_like(tokens), max_new_tokens=16, min_new_tokens=16,
                      do_sample=False, eos_token_id=None, pad_token_id=0)[:, tokens.shape[1]:]
    out = generate(ours, tokens, GenerationConfig(max_new_tokens=16), pixels=pixels).tokens
    assert out.tolist() == hf.tolist()


def test_images_with_text_only_model_is_clear_error():
    model = tatlas.create("llm", "tiny")
    with pytest.raises(ValueError, match="text-only"):
        model(torch.zeros(1, 4, dtype=torch.long), pixels=torch.zeros(1, 3, 32, 32))
    vmodel = tatlas.create("llm", "tiny-gemma3-vision")
    with pytest.raises(ValueError, match=r"1 image\(s\) need 16 image tokens \(id 258\) in the sequence, got 3"):
        vmodel(torch.tensor([[1, 258, 258, 258]]), pixels=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="image tokens but no pixels"):
        vmodel(torch.tensor([[1, 258]]))


def _moe_cases():
    from transformers import (
        DeepseekV3Config, DeepseekV3ForCausalLM, MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM,
    )

    base = dict(vocab_size=99, hidden_size=32, num_attention_heads=4, max_position_embeddings=128,
                experts_implementation="eager")
    return {
        "mixtral": lambda: MixtralForCausalLM(MixtralConfig(**base, intermediate_size=48, num_hidden_layers=2,
                                                            num_key_value_heads=2, num_local_experts=4,
                                                            num_experts_per_tok=2)),
        "qwen2_moe": lambda: Qwen2MoeForCausalLM(Qwen2MoeConfig(
            **base, intermediate_size=48, moe_intermediate_size=16, shared_expert_intermediate_size=24,
            num_hidden_layers=3, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, mlp_only_layers=[1])),
        "deepseek_v3": lambda: DeepseekV3ForCausalLM(DeepseekV3Config(
            **base, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2, num_key_value_heads=4,
            n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1,
            first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=8, qk_rope_head_dim=4,
            v_head_dim=8)),
    }


@pytest.mark.parametrize("case", ["mixtral", "qwen2_moe", "deepseek_v3"])
def test_moe_causal_lms_equal_reference(case, tmp_path, gen):
    torch.manual_seed(0)
    ref = perturb_(_moe_cases()[case](), seed=6, std=0.2)
    with torch.no_grad():  # DeepSeek's bias buffer starts at zero: make it choose differently
        for name, buf in ref.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.normal_(std=0.3, generator=torch.Generator().manual_seed(1))
    ref.eval()
    ours = tatlas.load(save_hf(ref, tmp_path / case), system="llm").eval()
    assert ours.config.moe is not None
    tokens = torch.randint(0, 99, (2, 16), generator=gen)
    with torch.no_grad():
        diff = assert_close(ours(tokens), ref(tokens).logits, atol=1e-4, what=f"{case} logits")
    prompt = tokens[:, :5]
    mine = generate(ours, prompt, GenerationConfig(max_new_tokens=32)).tokens
    assert mine.tolist() == hf_greedy(ref, prompt, 32).tolist(), f"{case}: greedy tokens differ"
    print(f"{case}: max abs logit diff {diff:.2e}")


def test_export_with_qkv_bias_is_qwen2(tmp_path, gen):
    from transformers import AutoModelForCausalLM

    ours = perturb_(tatlas.create("llm", "tiny", vocab_size=50, dim=32, heads=4, kv_heads=2, mlp_hidden=40,
                                  qkv_bias=True, tie_embeddings=True), seed=3).eval()
    ref = AutoModelForCausalLM.from_pretrained(to_hf(ours, tmp_path / "q")).eval()
    assert type(ref).__name__ == "Qwen2ForCausalLM"
    tokens = torch.randint(0, 50, (2, 9), generator=gen)
    with torch.no_grad():
        assert_close(ours(tokens), ref(tokens).logits, atol=1e-4, what="exported Qwen2 logits")
    assert tatlas.load(tmp_path / "q").config == ours.config
