"""Fuzzing the foreign weight and tokenizer formats (issue #22): CTranslate2 ``model.bin`` (mutated
bytes, and headers stating huge ranks, dims, sizes and unknown dtypes), GGUF files (ggml's reader,
the dequantisers, the tokenizer rebuilt from the metadata), and the tokenizer files: Whisper's
``.tiktoken`` ranks and CTranslate2 vocabularies, CLIP's gzipped merges, a Hugging Face
``tokenizer.json`` with its ``tokenizer_config.json``, and any text through every tokenizer. The
property and the budgets: ``tests/_fuzz.py``."""

from __future__ import annotations

import gzip
import json
import shutil
import struct

import pytest
import torch
from _fuzz import EXPECTED, fuzz, mutated, refuses_cleanly, rss_budget
from hypothesis import given
from hypothesis import strategies as st

import tatlas
from tatlas.io import read_ct2, write_ct2
from tatlas.io.ctranslate2 import dequantize

pytestmark = pytest.mark.usefixtures("one_thread")
LOADING = (*EXPECTED, MemoryError)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from test_gguf import _write as write_gguf

    folder = tmp_path_factory.mktemp("fuzz-formats")
    g = torch.Generator().manual_seed(0)
    tensors = {"encoder/num_heads": torch.tensor(2, dtype=torch.int16), "encoder/layer_0/w": torch.randn(4, 3, generator=g),
               "encoder/layer_0/q": torch.randint(-127, 127, (4, 3), dtype=torch.int8, generator=g),
               "encoder/layer_0/q_scale": torch.rand(4, generator=g) + 1, "h": torch.randn(2, 2, generator=g).half(),
               "b": torch.randn(3, generator=g).bfloat16(), "flag": torch.tensor(1, dtype=torch.int8)}
    ct2 = write_ct2(folder / "ct2", "WhisperSpec", 3, tensors, aliases={"decoder/w": "encoder/layer_0/w"},
                    config={"suppress_ids": [1]}, vocabulary=["a", "b", "<|endoftext|>"])
    gguf_file = write_gguf(folder / "tiny.gguf", "llama", dim=32, layers=1, heads=2, kv_heads=1, hidden=64)
    return {"ct2": ct2, "gguf": gguf_file}


@given(data=st.data())
@fuzz(80)
def test_ctranslate2_model_bin_mutated_reads_or_refuses(files, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("case") / "ct2"
    shutil.copytree(files["ct2"], folder)
    raw = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data.draw(mutated(raw, hot=len(raw))))
    with rss_budget():
        model = refuses_cleanly(lambda: read_ct2(folder), names="model.bin")
        if model is not None:
            refuses_cleanly(lambda: dequantize(model.tensors))


@st.composite
def ct2_header(draw) -> bytes:
    """A ``model.bin`` of one variable whose rank, dims, dtype id and byte count are anything."""
    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    rank = draw(st.integers(0, 255))
    dims = draw(st.lists(st.one_of(st.integers(0, 4), st.sampled_from([2**31, 2**32 - 1])), min_size=rank, max_size=rank))
    nbytes = draw(st.one_of(st.integers(0, 64), st.sampled_from([2**31, 2**32 - 1])))
    head = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 1, draw(st.sampled_from([1, 2, 2**32 - 1])))
    var = string("w") + struct.pack(f"<B{rank}I", rank, *dims) + struct.pack("<BI", draw(st.integers(0, 255)), nbytes)
    return head + var + draw(st.binary(max_size=80)) + struct.pack("<I", draw(st.sampled_from([0, 1, 2**32 - 1])))


@given(raw=ct2_header())
@fuzz(80)
def test_ctranslate2_header_stating_absurd_sizes_is_refused(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("case") / "model.bin"
    path.write_bytes(raw)
    with rss_budget():
        refuses_cleanly(lambda: read_ct2(path), names="model.bin")


@given(data=st.data())
@fuzz(60)
def test_gguf_mutated_reads_dequantises_and_loads_or_refuses(files, tmp_path_factory, data):
    from tatlas.io.gguf import GGUFFile
    from tatlas.models.llm.gguf import gguf_tokenizer

    raw = files["gguf"].read_bytes()
    path = tmp_path_factory.mktemp("case") / "tiny.gguf"
    path.write_bytes(data.draw(mutated(raw, hot=raw.index(b"token_embd.weight") + 4096)))
    with rss_budget():
        f = refuses_cleanly(lambda: GGUFFile(path), names=path)
        if f is not None:
            refuses_cleanly(f.state)
            refuses_cleanly(lambda: gguf_tokenizer(f).encode("hello there"))
            refuses_cleanly(lambda: tatlas.load(path), expected=LOADING)


# --------------------------------------------------------------------------- tokenizer files


@given(data=st.data())
@fuzz(25)
def test_whisper_tiktoken_ranks_mutated_read_or_refuse(tmp_path_factory, data):
    from tatlas.models.whisper.tokenizer import _asset, read_tiktoken

    raw = _asset("gpt2.tiktoken").read_bytes()
    path = tmp_path_factory.mktemp("case") / "gpt2.tiktoken"
    path.write_bytes(data.draw(mutated(raw, hot=4096)))
    refuses_cleanly(lambda: read_tiktoken(str(path)), names=path)


@given(tokens=st.lists(st.one_of(st.text(max_size=6), st.sampled_from(["<|endoftext|>", "<|startoftranscript|>",
                                                                        "<|en|>", "<|notimestamps|>", "Ġ", "a"])),
                       max_size=40),
       as_json=st.booleans(), garbage=st.binary(max_size=40))
@fuzz(60)
def test_whisper_ctranslate2_vocabulary_of_any_tokens_reads_or_refuses(tmp_path_factory, tokens, as_json, garbage):
    from tatlas.models.whisper.tokenizer import WhisperTokenizer

    folder = tmp_path_factory.mktemp("case")
    if as_json:
        (folder / "vocabulary.json").write_bytes(json.dumps(tokens).encode() if not garbage else garbage)
    else:
        (folder / "vocabulary.txt").write_bytes("\n".join(tokens).encode() + garbage)
    refuses_cleanly(lambda: WhisperTokenizer.from_ctranslate2(folder), names="vocabulary")


@given(data=st.data())
@fuzz(15)
def test_clip_merges_mutated_read_or_refuse(tmp_path_factory, data):
    from tatlas.models.clip.tokenizer import VOCAB_FILE, CLIPTokenizer, _asset

    raw = _asset(VOCAB_FILE).read_bytes()
    if data.draw(st.booleans()):  # the gzip stream itself, or the text inside it
        bad = data.draw(mutated(raw, hot=256))
    else:
        bad = gzip.compress(data.draw(mutated(gzip.decompress(raw), hot=2048)))
    path = tmp_path_factory.mktemp("case") / "merges.txt.gz"
    path.write_bytes(bad)
    tok = refuses_cleanly(lambda: CLIPTokenizer(path), names=path)
    if tok is not None:
        refuses_cleanly(lambda: tok(["a photo of a cat"]))


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("hf-tok")
    tok = Tokenizer(models.BPE(vocab={"<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4}, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"},
                                                              "chat_template": "{{ messages[0]['content'] }}"}))
    return folder


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "generation_config.json"])
@given(data=st.data())
@fuzz(25)
def test_hf_tokenizer_files_mutated_load_or_refuse(hf_tokenizer, tmp_path_factory, name, data):
    from tatlas.models.llm.tokenizer import load_tokenizer

    folder = tmp_path_factory.mktemp("case")
    shutil.copytree(hf_tokenizer, folder, dirs_exist_ok=True)
    raw = (folder / name).read_bytes() if (folder / name).is_file() else b'{"eos_token_id": 1}'
    (folder / name).write_bytes(data.draw(mutated(raw)))
    tok = refuses_cleanly(lambda: load_tokenizer(folder, 5), names=name)
    if tok is not None:
        refuses_cleanly(lambda: tok.decode(tok.encode("abba")))
        refuses_cleanly(lambda: tok.render_chat([{"role": "user", "content": "ab"}]))


@given(text=st.text(max_size=200), ids=st.lists(st.integers(-(2**40), 2**40), max_size=8))
@fuzz(80)
def test_every_tokenizer_encodes_any_text_and_refuses_bad_ids(text, ids):
    from tatlas.data.text import ByteTokenizer
    from tatlas.models.clip.tokenizer import CLIPTokenizer
    from tatlas.models.whisper.tokenizer import get_tokenizer

    for tok in (ByteTokenizer(), CLIPTokenizer(), get_tokenizer(False), get_tokenizer(True)):
        encoded = refuses_cleanly(lambda tok=tok: tok.encode(text))
        if encoded is not None:
            refuses_cleanly(lambda tok=tok, encoded=encoded: tok.decode(encoded))
        refuses_cleanly(lambda tok=tok: tok.decode(ids))
