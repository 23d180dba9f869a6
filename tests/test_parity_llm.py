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
