"""``tatlas demo llm``: pre-train the tiny decoder on the embedded text corpus (CPython's pydoc
topics, byte-level) and show validation perplexity falling far below the unigram baseline — the
language-modelling result of GPT-style pre-training (Radford et al. 2018/2019) in miniature."""

from __future__ import annotations

import math

import torch

from ..data import ByteTokenizer, unigram_cross_entropy
from ..generate import GenerationConfig, generate
from ..train import TrainConfig
from ..train.run import train_system
from .spec import Demo, DemoOptions, DemoResult


def run(options: DemoOptions) -> DemoResult:
    steps = 60 if options.quick else 600
    cfg = TrainConfig(steps=steps, batch_size=16, lr=2e-3, warmup_steps=steps // 10, weight_decay=0.1,
                      eval_every=None, checkpoint_every=None, log_every=25, seed=options.seed,
                      out_dir=options.out_dir / "run", progress=options.progress)
    result = train_system("llm", cfg, preset="tiny")
    baseline = unigram_cross_entropy()
    ppl, base_ppl = result.eval["val_ppl"], math.exp(baseline)

    import tatlas

    model = tatlas.load(result.model_path).eval()
    tok = ByteTokenizer()
    prompt = "The import statement"
    out = generate(model, [tok.encode(prompt)], GenerationConfig(max_new_tokens=120, temperature=0.8, top_k=40,
                                                                 seed=options.seed))
    sample = prompt + tok.decode(out.as_lists()[0])
    (options.out_dir / "sample.txt").write_text(sample + "\n")
    return DemoResult(
        system="llm",
        claim="validation perplexity of a byte-level LM trained for a minute, vs the unigram baseline",
        metric="val perplexity",
        value=ppl,
        baseline="unigram perplexity",
        baseline_value=base_ppl,
        higher_is_better=False,
        artifacts={"plot": "run/metrics.png", "sample": "sample.txt"},
        details={"val_loss_nats": result.eval["val_loss"], "unigram_nats": baseline, "steps": float(result.steps),
                 "samples_per_s": result.samples_per_s, "torch_threads": float(torch.get_num_threads())},
    )


DEMO = Demo(system="llm", run=run, expected_seconds=43)
