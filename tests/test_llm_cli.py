"""`tatlas generate` / `tatlas chat` on a locally saved Hugging Face Llama folder with its own
tokenizer.json and chat template, and on an image-text folder with a real image file."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tatlas
from parity import perturb_, save_hf
from tatlas.cli.main import app
from tatlas.generate import GenerationConfig, generate

runner = CliRunner()
WORDS = "the a cat dog sat on mat ran far away and then slept . hello how are you".split()


def _tokenizer(folder, vocab_extra=()):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *vocab_extra, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(str(folder / "tokenizer.json"))
    template = ("{% for m in messages %}<bos>{{ m['role'] }} {{ m['content'] }} <eos>{% endfor %}"
                "{% if add_generation_prompt %}<bos>assistant{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True, "chat_template": template}))
    return tok, len(vocab)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("llama")
    tok, n = _tokenizer(folder)
    torch.manual_seed(0)
    ref = LlamaForCausalLM(LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    save_hf(perturb_(ref, seed=5, std=0.3), folder)
    return folder, tok


def test_generate_streams_the_models_greedy_text(llama_folder):
    folder, tok = llama_folder
    res = runner.invoke(app, ["generate", "--model", str(folder), "--prompt", "the cat sat", "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    model = tatlas.load(folder).eval()
    ids = [1] + tok.encode("the cat sat", add_special_tokens=False).ids
    out = generate(model, [ids], GenerationConfig(max_new_tokens=8, stop_tokens=(2,))).as_lists(stop_tokens=(2,))[0]
    expected = tok.decode(out)
    assert res.output.strip().splitlines()[0].replace(" ", "") == expected.replace(" ", "")
    assert len(expected) > 0


def test_generate_sampling_options_and_int8(llama_folder):
    folder, _ = llama_folder
    args = ["generate", "--model", str(folder), "--prompt", "a dog", "--max-new-tokens", "6", "--temperature", "0.9",
            "--top-p", "0.9", "--top-k", "5", "--seed", "1"]
    a, b = runner.invoke(app, args), runner.invoke(app, args)
    assert a.exit_code == 0 and a.output == b.output
    q = runner.invoke(app, args + ["--int8"])
    assert q.exit_code == 0 and "int8" in q.output


def test_chat_uses_the_folder_template(llama_folder):
    folder, _ = llama_folder
    res = runner.invoke(app, ["chat", "--model", str(folder), "--max-new-tokens", "5"], input="hello how are you\n\n")
    assert res.exit_code == 0, res.output
    assert res.output.count("you>") == 2 and "model>" in res.output


def test_bad_generation_input_is_one_line(llama_folder):
    folder, _ = llama_folder
    for args, msg in ((["--top-p", "1.5"], "top_p"), (["--temperature", "-1"], "temperature"),
                      (["--max-new-tokens", "100"], "exceeds the model's 64 positions")):
        res = runner.invoke(app, ["generate", "--model", str(folder), "--prompt", "the cat", *args])
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["generate", "--model", str(folder), "--prompt", "x", "--image", str(folder / "config.json")])
    assert res.exit_code == 2 and "text-only" in res.output


def test_generate_with_an_image(tmp_path):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig

    _tokenizer(tmp_path, vocab_extra=("<start_of_image>", "<end_of_image>", "<image_soft_token>"))
    text = Gemma3TextConfig(vocab_size=4 + 3 + len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=8,
                            max_position_embeddings=64, query_pre_attn_scalar=16)
    cfg = Gemma3Config(text_config=text.to_dict(), vision_config=dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=4,
        vision_use_head=False), mm_tokens_per_image=4, image_token_id=6, boi_token_index=4, eoi_token_index=5)
    save_hf(perturb_(Gemma3ForConditionalGeneration(cfg), seed=2), tmp_path)
    img = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 30, 4)) * 255).astype("uint8"), "RGBA").save(img)
    res = runner.invoke(app, ["generate", "--model", str(tmp_path), "--prompt", "the cat", "--image", str(img),
                              "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "converted RGBA to RGB over white; resized 30x40 to 16x16" in res.output
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    res = runner.invoke(app, ["generate", "--model", str(tmp_path), "--prompt", "x", "--image", str(broken)])
    assert res.exit_code == 2 and "broken.png: not a readable image" in res.output
