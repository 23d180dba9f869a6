"""`tatlas generate --image` and `tatlas chat --image` on LLaVA-1.5, LLaVA-NeXT and InternVL folders
saved by transformers (with their own tokenizer, chat template and image processor settings), on
real photographs: the CLI's text equals transformers' processor + ``generate`` on the same files;
bad input is one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from parity import perturb_, save_hf
from PIL import Image
from typer.testing import CliRunner

from tatlas.cli.main import app

runner = CliRunner()
WORDS = "the a cat dog sat on mat ran far away and then slept . what is this red blue".split()
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<image>", "<img>", "</img>", "<IMG_CONTEXT>"]
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS)}
LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " <eos> {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def _tokenizer(folder, *, specials=SPECIALS, template=LLAVA_TEMPLATE):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {w: i for w, i in VOCAB.items() if w in specials or w in WORDS}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials if s in vocab])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": False, "chat_template": template}))


def _hf_tokenizer(folder):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photographs (scikit-learn's) cropped to a wide and a tall aspect ratio, saved as files."""
    from sklearn.datasets import load_sample_image

    folder = tmp_path_factory.mktemp("photos")
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    wide, tall = folder / "wide.png", folder / "tall.jpg"
    Image.fromarray(china[100:220, 40:400]).save(wide)
    Image.fromarray(flower[0:400, 200:360]).save(tall)
    return wide, tall


def _text_config(text_cls="LlamaConfig"):
    import transformers

    return getattr(transformers, text_cls)(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                           max_position_embeddings=512, pad_token_id=0).to_dict()


CLIP16 = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16,
              patch_size=4)


def _llava_folder(folder, *, next_: bool):
    from transformers import (
        CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
        LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
    )

    torch.manual_seed(0)
    common = dict(text_config=_text_config(), vision_config=CLIP16, image_token_index=VOCAB["<image>"])
    if next_:
        pins = [[16, 32], [32, 16], [32, 32], [16, 48], [48, 16]]
        ref = LlavaNextForConditionalGeneration(LlavaNextConfig(**common, image_grid_pinpoints=pins))
        proc = LlavaNextImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                          image_grid_pinpoints=pins)
    else:
        ref = LlavaForConditionalGeneration(LlavaConfig(**common))
        proc = CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    save_hf(perturb_(ref, seed=3, std=0.3).eval(), folder)
    proc.save_pretrained(folder)
    _tokenizer(folder)
    return ref, proc


def _hf_reply(ref, inputs, n):
    out = ref.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _words(text: str) -> str:
    return "".join(text.split())


def test_generate_llava_next_two_images_equals_transformers(tmp_path, photos):
    from transformers import LlavaNextProcessor

    ref, proc = _llava_folder(tmp_path, next_=True)
    wide, tall = photos
    prompt = "the cat <image> sat on <image> what is this"
    res = runner.invoke(app, ["generate", "--model", str(tmp_path), "--prompt", prompt, "--image", str(wide),
                              "--image", str(tall), "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    processor = LlavaNextProcessor(image_processor=proc, tokenizer=_hf_tokenizer(tmp_path), patch_size=4,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    inputs = processor(images=[Image.open(wide), Image.open(tall)], text=prompt, return_tensors="pt")
    assert int((inputs["input_ids"] == VOCAB["<image>"]).sum()) > 2 * 16  # tiles and newlines, not one tile each
    with torch.no_grad():
        expected = processor.tokenizer.decode(_hf_reply(ref, inputs, 8), skip_special_tokens=True)
    assert _words(res.output.strip().splitlines()[0]) == _words(expected)


def test_chat_llava15_template_equals_transformers(tmp_path, photos):
    from transformers import LlavaProcessor

    ref, proc = _llava_folder(tmp_path, next_=False)
    wide, _ = photos
    res = runner.invoke(app, ["chat", "--model", str(tmp_path), "--image", str(wide), "--max-new-tokens", "6"],
                        input="what is this\n\n")
    assert res.exit_code == 0, res.output
    processor = LlavaProcessor(image_processor=proc, tokenizer=_hf_tokenizer(tmp_path), patch_size=4,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is this"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[Image.open(wide)], text=text, return_tensors="pt")
    with torch.no_grad():
        expected = processor.tokenizer.decode(_hf_reply(ref, inputs, 6), skip_special_tokens=True)
    reply = res.output.split("model>")[1].split("you>")[0]
    assert _words(reply) == _words(expected)


def test_generate_internvl_tiles_equal_transformers(tmp_path, photos):
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration

    torch.manual_seed(0)
    cfg = InternVLConfig(text_config=_text_config("Qwen2Config"), vision_config=CLIP16, image_seq_length=4,
                         image_token_id=VOCAB["<IMG_CONTEXT>"])
    ref = perturb_(InternVLForConditionalGeneration(cfg), seed=4, std=0.3).eval()
    save_hf(ref, tmp_path)
    proc = GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}, crop_to_patches=True, max_patches=6,
                                    image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    proc.save_pretrained(tmp_path)
    _tokenizer(tmp_path)
    wide, _ = photos
    res = runner.invoke(app, ["generate", "--model", str(tmp_path), "--prompt", "<image> what is this", "--image",
                              str(wide), "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    # transformers' InternVLProcessor: <img> + <IMG_CONTEXT> x (tiles * image_seq_length) + </img>, tiles cropped
    processed = proc(images=[Image.open(wide)], crop_to_patches=True, return_tensors="pt")
    tiles = int(processed["num_patches"][0])
    assert tiles > 2  # a wide photo: several tiles and the thumbnail
    tok = _hf_tokenizer(tmp_path)
    ids = [VOCAB["<img>"]] + [VOCAB["<IMG_CONTEXT>"]] * (4 * tiles) + [VOCAB["</img>"]]
    ids += tok(" what is this", add_special_tokens=False)["input_ids"]
    inputs = {"input_ids": torch.tensor([ids]), "pixel_values": processed["pixel_values"],
              "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    with torch.no_grad():
        expected = tok.decode(_hf_reply(ref, inputs, 8), skip_special_tokens=True)
    assert _words(res.output.strip().splitlines()[0]) == _words(expected)


def test_bad_image_input_is_one_line(tmp_path, photos):
    _llava_folder(tmp_path, next_=True)
    wide, tall = photos
    base = ["generate", "--model", str(tmp_path), "--max-new-tokens", "2"]
    res = runner.invoke(app, base + ["--prompt", "<image> the cat", "--image", str(wide), "--image", str(tall)])
    assert res.exit_code == 2 and "the prompt marks 1 image place(s)" in res.output and "2 image(s)" in res.output
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    res = runner.invoke(app, base + ["--prompt", "the cat", "--image", str(broken)])
    assert res.exit_code == 2 and "broken.png" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, base + ["--prompt", "the cat", "--image", str(tmp_path / "missing.png")])
    assert res.exit_code == 2 and "missing.png" in res.output
    _tokenizer(tmp_path, specials=[s for s in SPECIALS if s != "<image>"])  # a text-only tokenizer beside the model
    res = runner.invoke(app, base + ["--prompt", "the cat", "--image", str(wide)])
    assert res.exit_code == 2 and "the tokenizer has no <image> token" in res.output
    _tokenizer(tmp_path)
    many = ["--image", str(wide)] * 12  # 12 wide photos' tiles: more tokens than the decoder's 512 positions
    res = runner.invoke(app, base + ["--prompt", "the cat"] + many)
    assert res.exit_code == 2 and "exceeds the model's 512 positions" in res.output


def test_generate_from_a_tatlas_checkpoint_with_the_byte_tokenizer(tmp_path, photos):
    """A model trained here (tatlas checkpoint, byte-level tokenizer): images go first, no folder settings."""
    import tatlas

    model = tatlas.create("internvl", "tiny", text=tatlas.create("llm", "tiny").config.vary(vocab_size=260),
                          image_token_id=259)
    path = tatlas.save(model, tmp_path / "ivl.safetensors")
    res = runner.invoke(app, ["generate", "--model", str(path), "--prompt", "what", "--image", str(photos[0]),
                              "--max-new-tokens", "3"])
    assert res.exit_code == 0, res.output
    assert len(res.output.strip()) > 0
