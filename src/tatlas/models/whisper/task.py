"""Training Whisper (Radford et al. 2022, §2.3 "Multitask Format" and §3.1 "Training Details"):
teacher-forced next-token cross-entropy of the transcript given the audio, on spoken sentences of
a small vocabulary (:mod:`.speech_vocab`), evaluated by greedy decoding and word error rate.

One sample: the log-Mel spectrogram ``[mels, 2 * audio_ctx]`` of one utterance (zero-padded to the
model's window, the 80 dB floor set by its own peak: :func:`.audio.log_mel_spectrogram`) and its
token sequence ``<|startoftranscript|> [<|en|> <|transcribe|>] <|notimestamps|> text
<|endoftext|>``. The decoder reads the sequence without its last token and is scored on the next
token at every position from the first text token on: the prompt tokens, which decoding is given,
are not predicted, and padding after ``<|endoftext|>`` is ignored.

The tokenizer follows the model's vocabulary: a released size (51,864 English-only, 51,865+
multilingual) means Whisper's byte-level BPE (:mod:`.tokenizer`); any other size the closed word
list of :class:`.speech_vocab.WordTokenizer` (the ``"tiny-speech"`` preset's 38 ids).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..spec import TrainTask
from .audio import HOP_LENGTH, SAMPLE_RATE, log_mel_spectrogram
from .config import ENGLISH_VOCAB, WhisperConfig
from .metrics import word_error_rate
from .speech_vocab import SPLITS, WINDOW_S, Utterance, WordTokenizer, render_many, sentences, utterances

IGNORE = -100  # targets that are not scored


def transcript_tokenizer(config: WhisperConfig):
    """Whisper's BPE tokenizer for a released vocabulary size, else the closed-vocabulary
    :class:`WordTokenizer` (which needs ``vocab_size >= 38``)."""
    if config.vocab_size >= ENGLISH_VOCAB:
        from .tokenizer import get_tokenizer

        return get_tokenizer(config.multilingual, num_languages=config.num_languages or 99)
    tokenizer = WordTokenizer()
    if config.vocab_size < tokenizer.n_vocab:
        raise ValueError(f"the spoken sentences use {tokenizer.n_vocab} word and special tokens; the model's "
                         f"vocab_size is {config.vocab_size} (the preset 'tiny-speech' fits them)")
    return tokenizer


def transcript_tokens(tokenizer, text: str) -> tuple[list[int], int]:
    """``(tokens, prompt length)``: ``sot_sequence + <|notimestamps|> + text + <|endoftext|>``."""
    prompt = list(tokenizer.sot_sequence_including_notimestamps)
    return prompt + tokenizer.encode(" " + text.strip()) + [tokenizer.eot], len(prompt)


class SpokenSentences(Dataset):
    """Utterances as model inputs. Sample: ``{"mel": [mels, frames], "inputs": int64 [L],
    "targets": int64 [L]}`` where ``targets`` is ``inputs`` shifted by one, :data:`IGNORE` on the
    prompt and after the end; ``texts[i]`` and ``utterances[i]`` say what was spoken and how."""

    def __init__(self, mel: Tensor, inputs: Tensor, targets: Tensor, utterances: list[Utterance]) -> None:
        self.mel, self.inputs, self.targets, self.utterances = mel, inputs, targets, utterances
        self.texts = [u.text for u in utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"mel": self.mel[index], "inputs": self.inputs[index], "targets": self.targets[index]}


def encode_utterances(items: list[Utterance], config: WhisperConfig, tokenizer) -> SpokenSentences:
    """Speak ``items`` (:func:`.speech_vocab.render_many`) and make them model inputs for ``config``."""
    window = config.n_frames * HOP_LENGTH
    audio = render_many(items, SAMPLE_RATE, max_samples=window)
    longest = max(range(len(audio)), key=lambda i: len(audio[i]))
    if len(audio[longest]) > window:
        raise ValueError(f"{items[longest]} lasts {len(audio[longest]) / SAMPLE_RATE:.2f} s, longer than the model's "
                         f"{window / SAMPLE_RATE:.2f}-s window (audio_ctx={config.audio_ctx}); use audio_ctx >= "
                         f"{-(-len(audio[longest]) // (2 * HOP_LENGTH))}")
    batch = np.zeros((len(audio), window), np.float32)
    for i, a in enumerate(audio):
        batch[i, : len(a)] = a
    mel = torch.cat([log_mel_spectrogram(torch.from_numpy(batch[i : i + 256]), config.mels)
                     for i in range(0, len(batch), 256)])  # [N, mels, frames]
    encoded = [transcript_tokens(tokenizer, u.text) for u in items]
    length = max(len(t) for t, _ in encoded) - 1
    if length > config.text_ctx:
        raise ValueError(f"a transcript needs {length} decoder positions; the model has text_ctx={config.text_ctx}")
    inputs = torch.full((len(items), length), tokenizer.eot, dtype=torch.long)
    targets = torch.full((len(items), length), IGNORE, dtype=torch.long)
    for i, (tokens, prompt) in enumerate(encoded):
        row = torch.tensor(tokens)
        inputs[i, : len(row) - 1] = row[:-1]
        targets[i, prompt - 1 : len(row) - 1] = row[prompt:]
    return SpokenSentences(mel, inputs, targets, list(items))


def spoken_sentences(split: str, n: int, config: WhisperConfig, *, seed: int = 0,
                     tokenizer=None) -> SpokenSentences:
    """``n`` sentences of ``split`` (:func:`.speech_vocab.sentences`), each in a random voice,
    speed and offset drawn with ``(seed, split)``."""
    if config.n_frames * HOP_LENGTH < WINDOW_S * SAMPLE_RATE:
        raise ValueError(f"the spoken sentences need a {WINDOW_S:.0f}-s window: audio_ctx >= "
                         f"{round(WINDOW_S * SAMPLE_RATE / HOP_LENGTH / 2)}, got audio_ctx={config.audio_ctx} "
                         "(the preset 'tiny-speech' has 3-s windows)")
    items = utterances(sentences(split, n, seed=seed), seed=seed, stream=SPLITS.index(split))
    return encode_utterances(items, config, tokenizer or transcript_tokenizer(config))


def transcript_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean next-token cross-entropy (nats) over the scored targets of ``batch``."""
    logits = model(batch["inputs"], mel=batch["mel"])  # [B, L, V]
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=IGNORE)


@torch.no_grad()
def greedy_decode(model: nn.Module, audio: Tensor, tokenizer, *, max_tokens: int | None = None) -> list[str]:
    """Greedy transcripts of encoder outputs ``audio [B, audio_ctx, C]``: from the prompt
    ``sot_sequence + <|notimestamps|>``, the likeliest text token or ``<|endoftext|>`` at every
    step (the other special tokens are never chosen), with the decoder's KV cache."""
    prompt = torch.tensor(tokenizer.sot_sequence_including_notimestamps, device=audio.device)
    steps = max_tokens or model.config.text_ctx - len(prompt)
    if len(prompt) + steps > model.config.text_ctx:
        raise ValueError(f"{len(prompt)} prompt + {steps} tokens exceed text_ctx={model.config.text_ctx}")
    b, eot = audio.shape[0], tokenizer.eot
    cache = model.new_cache(b, len(prompt) + steps, dtype=audio.dtype)
    logits = model.prefill(prompt.expand(b, -1), cache, audio=audio, last_only=True)[:, -1]  # [B, V]
    out = torch.full((b, steps), eot, dtype=torch.long, device=audio.device)
    done = torch.zeros(b, dtype=torch.bool, device=audio.device)
    for i in range(steps):
        logits[:, eot + 1 :] = float("-inf")  # no special token but <|endoftext|>
        token = logits.argmax(dim=-1).masked_fill(done, eot)
        out[:, i] = token
        done |= token == eot
        if bool(done.all()) or i + 1 == steps:
            break
        logits = model.decode_step(token[:, None], cache, torch.tensor([len(prompt) + i], device=audio.device))
    return [tokenizer.decode(row[: row.index(eot)] if eot in row else row).strip() for row in out.tolist()]


@torch.no_grad()
def greedy_transcribe(model: nn.Module, mel: Tensor, tokenizer, *, max_tokens: int | None = None,
                      batch_size: int = 64) -> list[str]:
    """:func:`greedy_decode` of ``mel [N, mels, frames]``, ``batch_size`` windows at a time."""
    device = next(model.parameters()).device
    texts: list[str] = []
    for start in range(0, len(mel), batch_size):
        audio = model.embed_audio(mel[start : start + batch_size].to(device))
        texts += greedy_decode(model, audio, tokenizer, max_tokens=max_tokens)
    return texts


@torch.no_grad()
def evaluate_wer(model: nn.Module, data: SpokenSentences, tokenizer, *, batch_size: int = 64) -> dict[str, float]:
    """``{"wer": greedy-decoding word error rate, "loss": teacher-forced cross-entropy per scored
    token}`` on ``data``."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        total, hyps = 0.0, []
        for start in range(0, len(data), batch_size):
            rows = slice(start, start + batch_size)
            audio = model.embed_audio(data.mel[rows].to(device))
            logits = model(data.inputs[rows].to(device), audio=audio)
            total += F.cross_entropy(logits.flatten(0, 1).float(), data.targets[rows].to(device).flatten(),
                                     ignore_index=IGNORE, reduction="sum").item()
            hyps += greedy_decode(model, audio, tokenizer)
    finally:
        model.train(was_training)
    return {"wer": word_error_rate(data.texts, hyps), "loss": total / int((data.targets != IGNORE).sum())}


def constant_baseline(train_texts: list[str], test_texts: list[str]) -> tuple[str, float]:
    """The stronger of two trivial transcribers that ignore the audio: always the most frequent
    training sentence, or always nothing (WER 1). Returns ``(transcript, WER on test_texts)``."""
    values, counts = np.unique(np.array(train_texts, dtype=object), return_counts=True)
    frequent = str(values[int(counts.argmax())])
    wer = word_error_rate(test_texts, [frequent] * len(test_texts))
    return (frequent, wer) if wer < 1.0 else ("", 1.0)


def make_task(config: WhisperConfig, seed: int = 0, *, n_train: int = 1024, n_eval: int = 64) -> tuple[TrainTask, SpokenSentences, SpokenSentences]:
    """The task (``eval_fn``: WER and loss on the ``"test"`` sentences) and its train and test data."""
    tokenizer = transcript_tokenizer(config)
    train = spoken_sentences("train", n_train, config, seed=seed, tokenizer=tokenizer)
    test = spoken_sentences("test", n_eval, config, seed=seed, tokenizer=tokenizer)
    task = TrainTask(train_data=train, loss_fn=transcript_loss,
                     eval_fn=lambda model: evaluate_wer(model, test, tokenizer))
    return task, train, test


def train_task(config: WhisperConfig, seed: int = 0) -> TrainTask:
    return make_task(config, seed)[0]
