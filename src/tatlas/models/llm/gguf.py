"""llama.cpp's GGUF files -> the ``llm`` system: architecture ``llama`` (Llama, SmolLM2, Mistral),
``qwen2`` and ``gemma3``. The file's tensors are renamed to transformers' names, with what llama.cpp's
converter changed undone — the row permutation of Llama's query and key projections (it stores
the rotary pairs interleaved, ``2i, 2i+1``, where transformers keeps them half-split) and Gemma's
norms stored as ``1 + w`` — and its metadata becomes a transformers config, so one converter
(:func:`~.convert.convert_hf`) finishes both paths.

The tokenizer is rebuilt from the metadata with the ``tokenizers`` library (:func:`gguf_tokenizer`):
byte-level BPE (``tokenizer.ggml.model == "gpt2"``: SmolLM2, Qwen2) from the vocabulary and merges,
or Gemma's SentencePiece-style BPE (``"llama"`` in a ``gemma3`` file: spaces as ``▁``, byte
fallback, and merges recovered from the vocabulary, whose order is the merge order — the file lists
none); the tokens the file marks as control kept whole as special tokens, user-defined ones as added
tokens; the chat template, BOS/EOS from the metadata.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...data.text import bytes_to_unicode
from ...io import CheckpointError
from ...io.convert import interleaved_to_half
from ...io.gguf import GGUFFile, read_gguf
from .config import LLMConfig
from .tokenizer import TextTokenizer

ARCHITECTURES = ("llama", "qwen2", "gemma3")
_MODEL_TYPE = {"llama": "llama", "qwen2": "qwen2", "gemma3": "gemma3_text"}

_LAYER = {  # GGUF block tensor -> transformers' (under model.layers.i.)
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _hf_name(name: str, arch: str) -> str:
    parts = name.split(".")
    if parts[0] == "blk":
        kind = parts[2]
        if kind == "ffn_norm":  # before the MLP: Llama's post-attention norm, Gemma 3's pre-feedforward one
            target = "pre_feedforward_layernorm" if arch == "gemma3" else "post_attention_layernorm"
        elif kind in _LAYER:
            target = _LAYER[kind]
        else:
            raise CheckpointError(f"GGUF tensor {name!r} has no counterpart in a {arch} model")
        return f"model.layers.{parts[1]}.{target}.{'.'.join(parts[3:])}"
    if parts[0] in _TOP:
        return f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
    raise CheckpointError(f"GGUF tensor {name!r} has no counterpart in a {arch} model")


def hf_config(f: GGUFFile) -> dict[str, Any]:
    """The transformers config the metadata describes."""
    arch = f.architecture
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{f.path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    need = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")
    missing = [k for k in need if f.arch_value(k) is None]
    if missing:
        raise CheckpointError(f"{f.path}: GGUF metadata lacks {', '.join(f'{arch}.{k}' for k in missing)}")
    heads = int(f.arch_value("attention.head_count"))
    dim = int(f.arch_value("embedding_length"))
    vocab = f.arch_value("vocab_size") or len(f.metadata.get("tokenizer.ggml.tokens", ())) or \
        f.tensors["token_embd.weight"].shape[0]
    hf: dict[str, Any] = {
        "model_type": _MODEL_TYPE[arch], "vocab_size": int(vocab), "hidden_size": dim,
        "intermediate_size": int(f.arch_value("feed_forward_length")), "num_hidden_layers": int(f.arch_value("block_count")),
        "num_attention_heads": heads, "num_key_value_heads": int(f.arch_value("attention.head_count_kv", heads)),
        "head_dim": int(f.arch_value("attention.key_length", f.arch_value("rope.dimension_count", dim // heads))),
        "rms_norm_eps": float(f.arch_value("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(f.arch_value("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in f.tensors,
    }
    theta = f.arch_value("rope.freq_base")
    scaling = f.arch_value("rope.scaling.type")
    if scaling not in (None, "none"):
        factor = f.arch_value("rope.scaling.factor")
        if arch == "gemma3" and scaling == "linear" and factor is not None:
            raise CheckpointError(f"{f.path}: Gemma 3 with linear rotary scaling (factor {factor}) is not supported")
        raise CheckpointError(f"{f.path}: rotary scaling {scaling!r} in a GGUF file is not supported")
    if arch == "gemma3":
        hf.update(rope_theta=float(theta or 1_000_000.0), rope_local_base_freq=10_000.0,
                  sliding_window=int(f.arch_value("attention.sliding_window", 512)), sliding_window_pattern=6,
                  query_pre_attn_scalar=hf["head_dim"], hidden_activation="gelu_pytorch_tanh")
    else:
        hf["rope_theta"] = float(theta or 10_000.0)
        hf["attention_bias"] = "blk.0.attn_q.bias" in f.tensors
    return hf


# While set (by :func:`deferred_matrices`): the GGUF names of the matrices whose float32 values loading
# leaves unformed, and the placeholders it made for them, by name
_DEFERRED: contextvars.ContextVar[tuple[frozenset[str], dict[str, Tensor]] | None] = \
    contextvars.ContextVar("gguf_deferred", default=None)


@contextlib.contextmanager
def deferred_matrices(names: frozenset[str]) -> Iterator[dict[str, Tensor]]:
    """Within it, loading a GGUF file gives each tensor named in ``names`` an uninitialised
    placeholder instead of its de-quantised values: memory never written, so never resident, and no
    time spent. For a caller that then replaces those layers by modules over the file's own blocks
    (:func:`~tatlas.models.llm.gguf_quant.quantize_gguf_`) and fills in any it did not
    (:func:`~tatlas.models.llm.gguf_quant.fill_deferred_`). Yields the placeholders by name."""
    made: dict[str, Tensor] = {}
    token = _DEFERRED.set((frozenset(names), made))
    try:
        yield made
    finally:
        _DEFERRED.reset(token)


def gguf_to_hf(f: GGUFFile) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(transformers config, transformers-named float32 tensors)`` of a GGUF file (placeholders for
    some matrices inside :func:`deferred_matrices`)."""
    hf = hf_config(f)
    arch = f.architecture
    q_perm, k_perm = interleaved_to_half(hf["num_attention_heads"]), interleaved_to_half(hf["num_key_value_heads"])
    deferred = _DEFERRED.get()
    tensors: dict[str, Tensor] = {}
    for name, t in f.tensors.items():
        if name.startswith("rope_freqs") or name.endswith(".rope_freqs.weight"):
            continue  # llama.cpp's precomputed llama3 frequencies: recomputed from the config
        if deferred is not None and name in deferred[0]:
            value = deferred[1][name] = torch.empty(tuple(t.shape))  # never written: no pages, no time
            tensors[_hf_name(name, arch)] = value
            continue
        value = t.dequantize()
        perm = q_perm if name.endswith(("attn_q.weight", "attn_q.bias")) else \
            k_perm if name.endswith(("attn_k.weight", "attn_k.bias")) else None
        if arch == "llama" and perm is not None:
            try:
                value = perm.forward(value)
            except RuntimeError:  # rows that do not split into the heads the metadata states
                raise CheckpointError(f"{f.path}: tensor {name} of shape {list(value.shape)} does not fit "
                                      f"{perm.name} (a corrupt file)") from None
        elif arch == "gemma3" and name.endswith("norm.weight"):
            value = value - 1.0  # llama.cpp stores Gemma's RMSNorm weight as 1 + w
        tensors[_hf_name(name, arch)] = value
    return hf, tensors


def from_gguf(path: str | Path) -> tuple[LLMConfig, dict[str, Tensor]]:
    """A GGUF file (or its parts, or a folder holding it) -> (config, float32 state dict)."""
    from .convert import convert_hf

    return convert_hf(*gguf_to_hf(read_gguf(path)))


def recover_merges(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a vocabulary without a merge list (SentencePiece BPE models): every
    split of every token into two tokens of the vocabulary, best ``scores`` first (ties: the longer
    left piece, then the longer right one; within a token, by the pieces' ids) — the rule
    transformers applies when it rebuilds these tokenizers, so both tokenize alike."""
    found: list[tuple[float, int, int, int, str, str]] = []
    for order, (token, score) in enumerate(scores.items()):
        pairs = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        pairs.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        found += [(score, len(left), len(right), order, left, right) for left, right in pairs]
    # best score first, longer pieces first; equal keys keep their discovery order (a stable sort)
    found.sort(key=lambda m: (-m[0], -m[1], -m[2]))
    return [(left, right) for *_, left, right in found]


def _gemma_backend(tokens: list[str], meta: dict[str, Any]) -> Any:
    """Gemma's tokenizer: BPE with byte fallback over ``▁``-for-space text, split after each space;
    a token stored as plain spaces is looked up as ``▁``s; merges in vocabulary order."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = recover_merges(vocab, {t: -i for i, t in enumerate(tokens)})
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else "<unk>"
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=unk, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return backend


def gguf_tokenizer(path: str | Path | GGUFFile) -> TextTokenizer:
    """The tokenizer a GGUF file's metadata describes (byte-level BPE, ``tokenizer.ggml.model == "gpt2"``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    f = path if isinstance(path, GGUFFile) else read_gguf(path)
    meta = f.metadata
    kind = meta.get("tokenizer.ggml.model")
    tokens = list(meta.get("tokenizer.ggml.tokens") or ())
    if not tokens:
        raise CheckpointError(f"{f.path}: GGUF without a tokenizer (tokenizer.ggml.tokens)")
    types = list(meta.get("tokenizer.ggml.token_type") or ())
    if kind == "gpt2":
        alphabet = bytes_to_unicode()
        letters = set(alphabet.values())
        vocab = {(t if set(t) <= letters else "".join(alphabet[b] for b in t.encode("utf-8"))): i
                 for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or ()]
        try:
            backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        except Exception as e:  # the tokenizers library raises plain Exception (a merge of unknown tokens ...)
            raise CheckpointError(f"{f.path}: the GGUF tokenizer cannot be built ({' '.join(str(e).split())})") from None
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        spelled = letters
    elif kind == "llama" and f.architecture.startswith("gemma"):
        from ...io.parts import cache_dir

        # recovering 262k tokens' merges takes seconds: the built tokenizer is cached beside joined files
        stat = f.path.stat()
        cached = cache_dir() / f"{f.path.name}.{stat.st_size}.{int(stat.st_mtime)}.tokenizer.json"
        if cached.is_file():
            backend = Tokenizer.from_file(str(cached))
        else:
            backend = _gemma_backend(tokens, meta)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(cached.name + ".tmp")
            backend.save(str(tmp))
            tmp.replace(cached)
        spelled = None
    else:
        raise CheckpointError(f"{f.path}: GGUF tokenizer {kind!r} ({f.architecture}) is not supported (supported: gpt2 "
                              "byte-level BPE, Gemma's sentencepiece BPE)")
    special = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
               if k == 3 and (spelled is None or set(t) <= spelled)]
    if special:
        backend.add_special_tokens(special)
    # user-defined tokens (``<think>``-like) stay whole; ones the vocabulary spells otherwise (Gemma's runs
    # of spaces, stored as spaces but looked up as "▁"s) are left to the model's own pieces
    user = [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types)
            if k == 4 and backend.token_to_id(t) is not None]
    if user:
        backend.add_tokens(user)

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    names = {k: v for k, v in (("bos_token", token("bos")), ("eos_token", token("eos"))) if v is not None}
    eos = meta.get("tokenizer.ggml.eos_token_id")
    bos = meta.get("tokenizer.ggml.bos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    return TextTokenizer(backend, (int(eos),) if eos is not None else (), int(bos) if add_bos and bos is not None else None,
                         meta.get("tokenizer.chat_template"), names)
